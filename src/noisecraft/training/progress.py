"""Progress of a training loop: the progress bar, the time limit, the smoothed loss and Ctrl-C.

Shared by every trainer (diffusion, autoencoder, noisy classifier):

    bar, start = progress_bar(t.steps, t.minutes, step=step, enabled=progress), time.monotonic()
    with deferred_interrupt() as interrupt:
        while step < t.steps and not out_of_time(start, t.minutes) and not interrupt["hit"]:
            ...                                          # one step
            smooth = smoothed(smooth, loss)
            advance(bar, step, start, t.minutes, smooth)  # training:  40%|####  | 190/480s [step 190, loss 0.1234]
    bar.close()
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time

from tqdm.auto import tqdm

# With a time limit the bar counts seconds; otherwise steps. {status} is " [step 190, loss 0.1234]" or "".
MINUTES_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f}s{status}"
STEPS_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]{status}"


class ProgressBar(tqdm):
    """A tqdm bar with a `status` text shown in brackets at its end (tqdm's own postfix starts with a comma)."""

    status = ""

    @property
    def format_dict(self):
        return {**super().format_dict, "status": f" [{self.status}]" if self.status else ""}


def progress_bar(steps: int, minutes: float | None, *, step: int = 0, enabled: bool = True,
                 desc: str = "training") -> ProgressBar:
    """A bar over the seconds of `minutes` when a time limit is set, else over `steps` (starting at `step`)."""
    if minutes is not None:
        return ProgressBar(total=round(minutes * 60), unit="s", desc=desc, disable=not enabled,
                           bar_format=MINUTES_FORMAT)
    return ProgressBar(total=steps, initial=step, unit="step", desc=desc, disable=not enabled,
                       bar_format=STEPS_FORMAT)


def advance(bar: ProgressBar, step: int, start: float, minutes: float | None, loss: float | None) -> None:
    """Move `bar` to `step` (or to the seconds since `start`); every 10 steps show the step and the loss."""
    if bar.disable:
        return
    bar.n = min(bar.total, time.monotonic() - start) if minutes is not None else step
    if step % 10 == 0:
        bar.status = f"step {step}, loss {loss:.4f}" if loss is not None else f"step {step}"
    bar.refresh()


def out_of_time(start: float, minutes: float | None) -> bool:
    """True once `minutes` of wall time have passed since `start` (never when minutes is None)."""
    return minutes is not None and time.monotonic() - start >= minutes * 60


def smoothed(previous: float | None, loss: float) -> float | None:
    """The loss's exponential moving average (weight 0.98 on the past) after one more step; a non-finite loss
    leaves it unchanged."""
    if not math.isfinite(loss):
        return previous
    return loss if previous is None else 0.98 * previous + 0.02 * loss


@contextlib.contextmanager
def deferred_interrupt():
    """Yields {"hit": bool}: Ctrl-C during a step sets it and lets the step finish, so the checkpoint written
    after it is consistent; a second Ctrl-C interrupts at once. (Only in the main thread, where Python
    delivers signals; elsewhere the flag stays False.)"""
    flag = {"hit": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        flag["hit"] = True
        signal.signal(signal.SIGINT, previous)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)
