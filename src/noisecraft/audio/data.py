"""Dataset "bach-audio": two-second clips of the Bach chorales, rendered by `noisecraft.audio.synth` and turned
into log-mel images by `noisecraft.audio.mel` (the Riffusion / AudioLDM representation: a spectrogram is an image).

Clips. Each chorale of `noisecraft.audio.chorales` (all four voices, transposed to C major / C minor, 0.5 s a
quarter note) is cut into windows that start every STRIDE_QUARTERS quarter notes (one 4/4 bar, 2.0 s) from its
first beat and last one clip (`MelSpec.clip_seconds`, 2.048 s at 64 frames); only windows that end before the
chorale's last note does are kept. A clip holds the notes sounding in its window, cut to it (a note held into the
window starts again at the clip's start; one held past its end is cut by `synth.render`), so every clip is
rendered from its own note events and can be re-rendered, e.g. with its notes shuffled (`shuffle_notes`, the
baseline of `noisecraft.audio.metrics`).

Items. images (N, 1, n_mels, 64) in [-1, 1]; labels = the chorale's mode (class_names ("major", "minor"));
captions "a chorale phrase in C major"; attributes "chorale" (N,) the chorale's index in file order, "start" (N,)
the window's start in seconds, "pitch_classes" (N, 12) the share of the clip's summed note durations on each pitch
class (C = 0), the clip's ground truth. Split by chorale: every TEST_EVERY-th chorale (file order) is "test", so
held-out clips come from chorales the model never heard. `count` = how many chorales (default: all 405).

The images are computed once per (MelSpec, count) and cached in $NOISECRAFT_CACHE/audio/ as 16-bit codes
(q = round((x + 1) * 32767.5), exact to 1.6e-5); deterministic.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import astuple, dataclass

import numpy as np
import torch

from noisecraft.audio.chorales import MODES, SECONDS_PER_QUARTER, chorales
from noisecraft.audio.mel import MelSpec, spec_for_resolution, wave_to_image
from noisecraft.audio.synth import ADSR, HARMONICS, VOICES, render
from noisecraft.data.base import SPLITS, ImageDataset
from noisecraft.errors import DataError

DATASET = "bach-audio"
STRIDE_QUARTERS = 4
TEST_EVERY = 10
CACHE_VERSION = "1"
DEFAULT_SPEC = MelSpec()  # 128 mel bands x 64 frames


@dataclass(frozen=True)
class Clip:
    """One clip's note events (n, 4) = (midi, onset s, duration s, voice), relative to its start."""

    events: np.ndarray
    mode: int      # index into MODES
    chorale: int   # index of the chorale in file order
    start: float   # seconds into the chorale


def window_events(events: np.ndarray, start: float, seconds: float) -> np.ndarray:
    """The notes of `events` sounding in [start, start + seconds), shifted to the window and cut at its start."""
    ev = np.asarray(events, dtype=np.float64).reshape(-1, 4)
    end = ev[:, 1] + ev[:, 2]
    keep = (ev[:, 1] < start + seconds) & (end > start)
    out = ev[keep].copy()
    onset = np.maximum(out[:, 1], start)
    out[:, 2] = end[keep] - onset
    out[:, 1] = onset - start
    return out


def chorale_clips(events: np.ndarray, seconds: float) -> list[tuple[float, np.ndarray]]:
    """(start, window events) of every window of a chorale (module docstring)."""
    stride = STRIDE_QUARTERS * SECONDS_PER_QUARTER
    last = float((events[:, 1] + events[:, 2]).max()) if len(events) else 0.0
    out, k = [], 0
    while k * stride + seconds <= last:
        out.append((k * stride, window_events(events, k * stride, seconds)))
        k += 1
    return out


def clips(count: int | None = None, spec: MelSpec = DEFAULT_SPEC) -> list[Clip]:
    """Every clip of the first `count` chorales (None: all), in file order then time."""
    out = []
    for index, (_name, events, mode) in enumerate(chorales(count)):
        for start, ev in chorale_clips(events, spec.clip_seconds):
            out.append(Clip(ev, mode, index, start))
    return out


def render_clip(events: np.ndarray, spec: MelSpec) -> np.ndarray:
    """A clip's waveform: `synth.render` over spec.clip_seconds, partials up to the mel range's top (spec.fmax)."""
    return render(events, spec.clip_seconds, spec.sample_rate, max_freq=spec.fmax)


def pitch_class_shares(events: np.ndarray, seconds: float) -> np.ndarray:
    """(12,) each pitch class's share of the summed note durations (cut at `seconds`); zeros for no notes."""
    ev = np.asarray(events, dtype=np.float64).reshape(-1, 4)
    dur = np.clip(np.minimum(ev[:, 1] + ev[:, 2], seconds) - ev[:, 1], 0.0, None)
    h = np.bincount(np.round(ev[:, 0]).astype(np.int64) % 12, weights=dur, minlength=12)
    total = h.sum()
    return h / total if total > 0 else h


def shuffle_notes(events: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The shuffled-notes baseline of a clip: within each voice, its pitches and its durations are permuted
    independently and the notes are laid end to end from the voice's first onset (rests dropped). Each voice
    keeps its pitch multiset, range and durations; harmony and rhythm are destroyed."""
    ev = np.asarray(events, dtype=np.float64).reshape(-1, 4)
    out = []
    for voice in np.unique(ev[:, 3]):
        notes = ev[ev[:, 3] == voice]
        notes = notes[np.argsort(notes[:, 1], kind="stable")]
        pitches, durations = rng.permutation(notes[:, 0]), rng.permutation(notes[:, 2])
        onsets = notes[0, 1] + np.concatenate([[0.0], np.cumsum(durations)[:-1]])
        out.append(np.stack([pitches, onsets, durations, np.full(len(notes), voice)], axis=1))
    return np.concatenate(out) if out else ev.copy()


def _cache_key(spec: MelSpec, count: int | None) -> str:
    from noisecraft.audio.chorales import _music21

    text = repr((CACHE_VERSION, astuple(spec), count, STRIDE_QUARTERS, HARMONICS, VOICES, astuple(ADSR()),
                 _music21().__version__))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def clip_images(count: int | None = None, spec: MelSpec = DEFAULT_SPEC) -> tuple[np.ndarray, list[Clip]]:
    """(N, n_mels, frames) float32 mel images of `clips(count, spec)` and the clips (cached, module docstring)."""
    from noisecraft.files import atomic_write_bytes
    from noisecraft.paths import cache_dir

    items = clips(count, spec)
    path = cache_dir() / "audio" / f"{DATASET}-{_cache_key(spec, count)}.npz"
    codes = None
    if path.is_file():
        with np.load(path, allow_pickle=False) as f:
            codes = f["codes"]
        if codes.shape != (len(items), spec.n_mels, spec.frames):
            codes = None
    if codes is None:
        images = np.stack([wave_to_image(render_clip(c.events, spec), spec) for c in items]) if items else \
            np.zeros((0, spec.n_mels, spec.frames), np.float32)
        codes = np.round((images.astype(np.float64) + 1.0) * 32767.5).astype(np.uint16)
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez_compressed(buf, codes=codes)
        atomic_write_bytes(path, buf.getvalue())
    return (codes.astype(np.float32) / np.float32(32767.5) - 1.0).astype(np.float32), items


def split_mask(items: list[Clip], split: str) -> np.ndarray:
    """Which clips are in `split`: every TEST_EVERY-th chorale's clips are "test"."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    test = np.array([c.chorale % TEST_EVERY == TEST_EVERY - 1 for c in items], dtype=bool)
    return np.ones(len(items), bool) if split == "all" else test if split == "test" else ~test


def caption(mode: int) -> str:
    return f"a chorale phrase in C {MODES[mode]}"


def load_bach_audio(*, root=None, resolution=None, channels=None, split="all", limit=None, seed=0,
                    count=None) -> ImageDataset:
    """Dataset "bach-audio" (module docstring); resolution = mel bands (default 128), channels 1 only."""
    if root is not None:
        raise DataError(f"dataset {DATASET!r} is rendered from music21's chorales and takes no root")
    if channels not in (None, 1):
        raise DataError(f"dataset {DATASET!r} has 1 channel (a mel spectrogram), got channels={channels}")
    spec = spec_for_resolution(resolution)
    images, items = clip_images(count, spec)
    idx = np.flatnonzero(split_mask(items, split))[:limit]
    chosen = [items[i] for i in idx]
    return ImageDataset(
        DATASET, torch.from_numpy(images[idx][:, None].copy()),
        torch.tensor([c.mode for c in chosen], dtype=torch.int64), MODES, tuple(caption(c.mode) for c in chosen),
        {"chorale": torch.tensor([c.chorale for c in chosen], dtype=torch.int64),
         "start": torch.tensor([c.start for c in chosen], dtype=torch.float64),
         "pitch_classes": torch.from_numpy(np.array([pitch_class_shares(c.events, spec.clip_seconds)
                                                     for c in chosen]).reshape(-1, 12)).float()})


__all__ = ["Clip", "DATASET", "caption", "chorale_clips", "clip_images", "clips", "load_bach_audio",
           "pitch_class_shares", "render_clip", "shuffle_notes", "split_mask", "window_events"]
