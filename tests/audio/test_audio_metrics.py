"""Audio metrics: the note statistics find a rendered note's pitch class and a rhythm's inter-onset intervals,
their distances are 0 for the same clips and positive for shuffled notes; run lengths against a brute-force
count; the Frechet distance on AudioNet features, and the AudioNet cache."""

import numpy as np
import pytest
import torch

pytest.importorskip("librosa")
pytest.importorskip("music21")

from noisecraft.audio.data import clips, render_clip, shuffle_notes  # noqa: E402
from noisecraft.audio.mel import MelSpec  # noqa: E402
from noisecraft.audio.metrics import (  # noqa: E402
    HOP,
    STATISTICS,
    AudioMetricError,
    AudioNet,
    AudioNetSpec,
    audio_net,
    audio_net_path,
    describe,
    distances,
    frechet_audio_distance_nc,
    interval_classes,
    run_lengths,
    statistics,
)
from noisecraft.audio.synth import SAMPLE_RATE, render  # noqa: E402

SPEC = MelSpec()


def test_interval_classes_match_a_brute_force_sum():
    cooc = np.random.default_rng(1).random((12, 12))
    expected = np.zeros(7)
    for p in range(12):
        for q in range(12):
            k = abs(p - q)
            expected[min(k, 12 - k)] += cooc[p, q]
    np.testing.assert_allclose(interval_classes(cooc), expected[1:])


def test_run_lengths_match_a_brute_force_count():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.random(30) < 0.5
        runs, n = [], 0
        for v in list(a) + [False]:
            if v:
                n += 1
            elif n:
                runs.append(n)
                n = 0
        assert run_lengths(a).tolist() == runs


def test_a_rendered_rhythm_gives_its_pitch_class_and_intervals():
    frame = HOP / SAMPLE_RATE
    notes = np.array([[57, 0.25, 1.5, 0]])  # A3
    assert int(np.argmax(describe(render(notes, 2.048) * 4).pch)) == 9
    notes = np.array([[m, 0.25 + 0.5 * k, 0.45, 0] for k, m in enumerate((57, 60, 64, 67))])  # A C E G, 0.5 s apart
    d = describe(render(notes, 2.048) * 4)
    assert set(np.argsort(-d.pch)[:4].tolist()) == {9, 0, 4, 7}
    assert len(d.ioi) == 3 and np.abs(d.ioi - 0.5).max() <= frame + 1e-9
    long = d.durations[d.durations > 0.2]
    # one run per note; the constant-Q filters (longest at low notes) smear its ends by a few frames
    assert len(long) == 4 and abs(long.mean() - 0.45) <= 2 * frame and np.abs(long - 0.45).max() <= 5 * frame


@pytest.fixture(scope="module")
def real_and_shuffled():
    items = clips(3, SPEC)[::3][:8]
    rng = np.random.default_rng(0)
    real = [render_clip(c.events, SPEC) for c in items]
    shuffled = [render_clip(shuffle_notes(c.events, rng), SPEC) for c in items]
    return real, shuffled


def test_distances_are_zero_for_identical_clips_and_positive_for_shuffled_notes(real_and_shuffled):
    real, shuffled = real_and_shuffled
    a = statistics(real)
    same = distances(a, statistics([y.copy() for y in real]))
    assert all(v == 0.0 for v in same.values())
    d = distances(a, statistics(shuffled))
    assert set(d) == {*STATISTICS, "mean"} and all(d[k] > 0 for k in STATISTICS)
    assert all(0 <= v <= 1 for v in d.values())
    np.testing.assert_allclose([a.pch.sum(), a.intervals.sum(), a.durations.sum(), a.ioi.sum()], 1.0)
    with pytest.raises(AudioMetricError, match="NaN or inf"):
        describe(np.full(4096, np.nan, np.float32))


def test_frechet_distance_on_audio_net_features():
    torch.manual_seed(0)
    net = AudioNet().eval()
    x = torch.rand(80, 1, 16, 64) * 2 - 1  # more clips than the 64 features
    assert abs(frechet_audio_distance_nc(x, x.clone(), net)) < 1e-6
    assert frechet_audio_distance_nc(x, x.flip(2), net) > 0
    with pytest.raises(AudioMetricError, match=r"expected mel images \(N, 1, n_mels, frames\)"):
        frechet_audio_distance_nc(x[:, 0], x, net)
    with pytest.raises(AudioMetricError, match="differ in shape"):
        frechet_audio_distance_nc(x, x[:, :, :8], net)


def test_audio_net_is_trained_once_and_cached(tmp_path):
    spec = AudioNetSpec(resolution=16, count=10, steps=2, batch_size=4)
    net = audio_net(spec, cache_dir=tmp_path)
    assert audio_net_path(spec, tmp_path).is_file()
    again = audio_net(spec, cache_dir=tmp_path)
    for (k, v), (_, w) in zip(net.state_dict().items(), again.state_dict().items()):
        assert torch.equal(v, w), k
