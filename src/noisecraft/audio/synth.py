"""A small additive synthesiser: note events -> a mono waveform at a fixed sample rate.

Each note of MIDI pitch m sounds at the equal-tempered frequency f0 = 440 * 2^((m - 69) / 12) Hz (A4 = MIDI 69)
as a sum of harmonics k * f0, k = 1..HARMONICS, with amplitudes 1 / k (a sawtooth-like spectrum), all phases 0,
keeping only harmonics below `max_freq` (the top of the mel range, so that what is rendered is what the mel
spectrogram sees and nothing aliases). Its loudness follows a linear ADSR envelope (attack, decay to the sustain
level, release) that lies wholly inside the note's duration, so repeated notes of one pitch stay separate
events. The voices are summed and divided by VOICES * sum_k 1/k (a note's largest possible amplitude), so the
waveform of up to VOICES simultaneous notes lies in [-1, 1].

Note events are a float64 array (n, 4) of (midi pitch, onset seconds, duration seconds, voice index).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16_000  # Hz, of every waveform in noisecraft.audio
HARMONICS = 6
VOICES = 4  # soprano, alto, tenor, bass


@dataclass(frozen=True)
class ADSR:
    """A linear attack-decay-sustain-release envelope (seconds, and the sustain level in (0, 1])."""

    attack: float = 0.01
    decay: float = 0.08
    sustain: float = 0.6
    release: float = 0.05


def midi_to_hz(m) -> np.ndarray:
    """Equal temperament with A4 = 440 Hz: f = 440 * 2^((m - 69) / 12)."""
    return 440.0 * 2.0 ** ((np.asarray(m, dtype=np.float64) - 69.0) / 12.0)


def envelope(n: int, sample_rate: int, adsr: ADSR = ADSR()) -> np.ndarray:
    """The ADSR envelope of an n-sample note: rise to 1 in `attack`, fall to `sustain` in `decay`, hold, then fall
    to 0 over the last `release` seconds. Segments are shortened proportionally when the note is shorter than
    attack + decay + release."""
    a, d, r = (round(s * sample_rate) for s in (adsr.attack, adsr.decay, adsr.release))
    if a + d + r > n:
        scale = n / max(a + d + r, 1)
        a, d, r = int(a * scale), int(d * scale), int(r * scale)
    hold = n - a - d - r
    last = adsr.sustain
    parts = [np.linspace(0.0, 1.0, a, endpoint=False), np.linspace(1.0, last, d, endpoint=False),
             np.full(hold, last), np.linspace(last, 0.0, r, endpoint=True)]
    return np.concatenate(parts)[:n]


def render_note(midi: float, n: int, sample_rate: int = SAMPLE_RATE, *, max_freq: float = 4000.0,
                adsr: ADSR = ADSR()) -> np.ndarray:
    """One note, n samples: sum_k (1/k) sin(2 pi k f0 t) over harmonics k f0 < max_freq, times the envelope."""
    f0 = float(midi_to_hz(midi))
    k = np.arange(1, HARMONICS + 1)
    k = k[k * f0 < min(max_freq, sample_rate / 2)]
    t = np.arange(n) / sample_rate
    tone = (np.sin(2 * np.pi * f0 * np.outer(k, t)) / k[:, None]).sum(axis=0)  # (n,)
    return tone * envelope(n, sample_rate, adsr)


def render(notes: np.ndarray, seconds: float, sample_rate: int = SAMPLE_RATE, *, max_freq: float = 4000.0,
           adsr: ADSR = ADSR()) -> np.ndarray:
    """Note events (n, 4) = (midi, onset s, duration s, voice) -> float32 waveform of round(seconds * rate)
    samples, the notes summed and divided by VOICES * peak (peak = sum_k 1/k, a note's largest amplitude), so
    the result lies in [-1, 1]. Notes past the end are cut."""
    total = round(seconds * sample_rate)
    out = np.zeros(total, dtype=np.float64)
    for midi, onset, duration, _voice in np.asarray(notes, dtype=np.float64).reshape(-1, 4):
        start, n = round(onset * sample_rate), round(duration * sample_rate)
        n = min(n, total - start)
        if n > 0 and start >= 0:
            out[start:start + n] += render_note(midi, n, sample_rate, max_freq=max_freq, adsr=adsr)
    peak = float((1.0 / np.arange(1, HARMONICS + 1)).sum())
    return (out / (VOICES * peak)).astype(np.float32)
