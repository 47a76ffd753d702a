"""Dataset bach-audio: deterministic (a fresh computation equals the cached one), mel images of the documented
shape and range, split by chorale; the clip windows, the pitch-class shares and the shuffled-notes baseline."""

import numpy as np
import pytest
import torch

pytest.importorskip("music21")
pytest.importorskip("librosa")

from noisecraft.audio.data import (  # noqa: E402
    clips,
    pitch_class_shares,
    render_clip,
    shuffle_notes,
    window_events,
)
from noisecraft.audio.mel import MelSpec, image_to_power, power_to_image, wave_to_image  # noqa: E402
from noisecraft.data import load_dataset  # noqa: E402
from noisecraft.errors import DataError  # noqa: E402

COUNT = 2  # chorales: a few dozen clips


def test_dataset_is_deterministic_and_shaped(tmp_path, monkeypatch):
    monkeypatch.setenv("NOISECRAFT_CACHE", str(tmp_path))
    fresh = load_dataset("bach-audio", count=COUNT, resolution=32)
    assert list((tmp_path / "audio").glob("bach-audio-*.npz"))  # cached
    again = load_dataset("bach-audio", count=COUNT, resolution=32)  # read back from the cache
    assert torch.equal(fresh.images, again.images) and torch.equal(fresh.labels, again.labels)
    assert fresh.data_shape == (1, 32, 64) and fresh.class_names == ("major", "minor")
    x = fresh.images
    assert x.min() >= -1 and x.max() <= 1 and x.std() > 0.1
    assert fresh.captions[0] in ("a chorale phrase in C major", "a chorale phrase in C minor")
    np.testing.assert_allclose(fresh.attributes["pitch_classes"].sum(1), 1.0, atol=1e-6)
    # the cached 16-bit codes hold the computed images to half a code step
    spec = MelSpec(n_mels=32)
    first = clips(COUNT, spec)[0]
    direct = wave_to_image(render_clip(first.events, spec), spec)
    assert np.abs(direct - fresh.images[0, 0].numpy()).max() <= 1 / 32767.5 + 1e-7


def test_split_is_by_chorale_and_options_are_checked():
    all_ = load_dataset("bach-audio", count=10, resolution=16)
    test = load_dataset("bach-audio", split="test", count=10, resolution=16)
    train = load_dataset("bach-audio", split="train", count=10, resolution=16)
    assert len(train) + len(test) == len(all_) and len(test) > 0
    assert set(test.attributes["chorale"].tolist()) == {9}
    assert 9 not in set(train.attributes["chorale"].tolist())
    with pytest.raises(DataError, match="takes no root"):
        load_dataset("bach-audio", root="x", count=1)
    with pytest.raises(DataError, match="has 1 channel"):
        load_dataset("bach-audio", channels=3, count=1)
    with pytest.raises(DataError, match="multiple of 8 in 16..128, got 20"):
        load_dataset("bach-audio", resolution=20, count=1)


def test_mel_image_scale_round_trip_and_clipping():
    rng = np.random.default_rng(0)
    S = 10 ** rng.uniform(-4, 1.5, size=(16, 8))  # inside the image's dB range
    np.testing.assert_allclose(image_to_power(power_to_image(S)), S, rtol=1e-4)
    assert power_to_image(np.array([[1e-12, 1e9]])).tolist() == [[-1.0, 1.0]]


def test_window_events_cut_and_shift():
    ev = np.array([[60, 0.0, 1.0, 0], [62, 1.5, 1.0, 1], [64, 3.0, 0.5, 2], [65, 2.5, 0.2, 3]])
    w = window_events(ev, 1.0, 2.0)  # [1, 3): note 0 ended, note 1 inside, note 2 starts at 3 (out), note 3 in
    np.testing.assert_allclose(w, [[62, 0.5, 1.0, 1], [65, 1.5, 0.2, 3]])
    w = window_events(ev, 0.5, 1.0)  # note 0 held into the window: starts again at 0, lasts its remaining 0.5 s
    np.testing.assert_allclose(w, [[60, 0.0, 0.5, 0]])


def test_pitch_class_shares_and_shuffle_keep_each_voices_notes():
    ev = np.array([[60, 0.0, 1.0, 0], [72, 1.0, 0.5, 0], [67, 0.0, 0.5, 1], [64, 0.5, 1.5, 1]])
    np.testing.assert_allclose(pitch_class_shares(ev, 2.0)[[0, 4, 7]], [1.5 / 3.5, 1.5 / 3.5, 0.5 / 3.5])
    np.testing.assert_allclose(pitch_class_shares(ev, 1.0)[[0, 4, 7]], [1.0 / 2.0, 0.5 / 2.0, 0.5 / 2.0])
    shuffled = shuffle_notes(ev, np.random.default_rng(3))
    for v in (0, 1):
        a, b = ev[ev[:, 3] == v], shuffled[shuffled[:, 3] == v]
        assert sorted(a[:, 0]) == sorted(b[:, 0]) and sorted(a[:, 2]) == sorted(b[:, 2])
        b = b[np.argsort(b[:, 1])]
        np.testing.assert_allclose(b[1:, 1], b[:-1, 1] + b[:-1, 2])  # laid end to end: one voice, one note
        assert b[0, 1] == a[:, 1].min()
