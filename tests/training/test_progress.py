"""The shared training-progress pieces: the bar's text, the smoothed loss, the time limit."""

import io
import math
import time

from noisecraft.training.progress import advance, out_of_time, progress_bar, smoothed


def _text(minutes, step=190, loss=0.1234):
    bar = progress_bar(480, minutes, enabled=True)
    bar.fp = io.StringIO()
    advance(bar, step, time.monotonic() - 190, minutes, loss)
    text = str(bar)
    bar.close()
    return text


def test_the_bars_show_step_and_loss_in_brackets_without_a_leading_comma():
    minutes = _text(8.0)
    assert minutes.startswith("training:  40%|") and minutes.endswith("| 190/480s [step 190, loss 0.1234]")
    steps = _text(None)
    assert steps.startswith("training:  40%|") and steps.endswith("step/s] [step 190, loss 0.1234]")
    assert "[," not in minutes + steps and ", ]" not in minutes + steps
    assert _text(8.0, loss=None).endswith("190/480s [step 190]")
    assert _text(8.0, step=191).endswith("190/480s")  # the status is refreshed every 10 steps


def test_smoothed_loss_and_time_limit():
    assert smoothed(None, 2.0) == 2.0 and smoothed(2.0, 1.0) == 0.98 * 2.0 + 0.02 * 1.0
    assert smoothed(2.0, math.nan) == 2.0 and smoothed(None, math.inf) is None
    assert not out_of_time(time.monotonic(), None) and not out_of_time(time.monotonic(), 1.0)
    assert out_of_time(time.monotonic() - 61, 1.0)
