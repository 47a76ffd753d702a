"""Waveform <-> log-mel image, the representation the diffusion model works on (Riffusion / AudioLDM style: a
spectrogram is an image; here one channel, rows = mel bands from low to high, columns = frames).

    S      = |STFT(y)|^2 projected on a mel filter bank       (librosa.feature.melspectrogram; Slaney mel scale
                                                              and area normalisation, Hann window, centred frames)
    dB     = 10 log10(max(S, AMIN))
    image  = clip(2 (dB - (DB_MAX - DB_RANGE)) / DB_RANGE - 1, -1, 1)      a fixed scale, the same for every clip

and back: dB = (image + 1) / 2 * DB_RANGE + DB_MAX - DB_RANGE (exact inverse of the unclipped map), S = 10^(dB/10),
the least-squares inverse of the filter bank (clipped at 0), then Griffin-Lim
phase recovery (Griffin & Lim 1984, eq. 6, with the fast momentum of Perraudin et al. 2013; `librosa.griffinlim`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from noisecraft.audio.synth import SAMPLE_RATE
from noisecraft.errors import DataError

AMIN = 1e-10
DB_MAX = 24.0    # dB just above the loudest mel bins of the rendered chorales (about 22 dB at 128 bands)
DB_RANGE = 80.0  # the image spans [DB_MAX - DB_RANGE, DB_MAX]; quieter bins are clipped to -1


@dataclass(frozen=True)
class MelSpec:
    """How a waveform becomes an (n_mels, frames) image."""

    sample_rate: int = SAMPLE_RATE  # Hz
    n_fft: int = 1024               # STFT window (64 ms at 16 kHz; 15.6 Hz bins)
    hop: int = 512                  # samples between frames (32 ms)
    n_mels: int = 128               # image rows (64 bands blur semitones below 1 kHz: Griffin-Lim then loses pitch)
    frames: int = 64                # image columns: a clip is frames * hop samples (2.048 s at 64)
    fmin: float = 30.0              # lowest mel band edge (Hz)
    fmax: float = 4000.0            # highest mel band edge (Hz); the synthesiser renders nothing above it

    @property
    def clip_samples(self) -> int:
        return self.frames * self.hop

    @property
    def clip_seconds(self) -> float:
        return self.clip_samples / self.sample_rate


def spec_for_shape(shape) -> MelSpec:
    """The MelSpec of a mel image shape (1, n_mels, frames) (a run's data_shape)."""
    if len(shape) != 3 or shape[0] != 1:
        raise DataError(f"an audio model's samples are (1, n_mels, frames) mel images, got shape {tuple(shape)}")
    return MelSpec(n_mels=int(shape[1]), frames=int(shape[2]))


def spec_for_resolution(resolution: int | None) -> MelSpec:
    """data.resolution R of an audio dataset: R mel bands (None: 128) x 64 frames (2.048 s); R in 16..128, a
    multiple of 8 (the U-Net halves it up to three times)."""
    if resolution is None:
        return MelSpec()
    if isinstance(resolution, bool) or not isinstance(resolution, int) or not (16 <= resolution <= 128
                                                                                and resolution % 8 == 0):
        raise DataError(f"an audio dataset's resolution is its number of mel bands: a multiple of 8 in 16..128, "
                        f"got {resolution!r}")
    return MelSpec(n_mels=resolution)


@functools.lru_cache(maxsize=8)
def mel_bank(spec: MelSpec) -> np.ndarray:
    """(n_mels, 1 + n_fft/2) the mel filter bank (librosa.filters.mel: Slaney mel scale, area-normalised)."""
    import librosa

    return librosa.filters.mel(sr=spec.sample_rate, n_fft=spec.n_fft, n_mels=spec.n_mels, fmin=spec.fmin,
                               fmax=spec.fmax)


def mel_power(y: np.ndarray, spec: MelSpec) -> np.ndarray:
    """(samples,) waveform -> (n_mels, 1 + samples // hop) mel power spectrogram S: what
    librosa.feature.melspectrogram computes (|STFT|^2 of centred Hann frames, then the filter bank), with the
    bank built once per MelSpec rather than per call."""
    import librosa

    stft = librosa.stft(np.asarray(y, dtype=np.float32), n_fft=spec.n_fft, hop_length=spec.hop, center=True)
    return mel_bank(spec) @ (np.abs(stft) ** 2)


def power_to_image(S: np.ndarray) -> np.ndarray:
    """Mel power -> image in [-1, 1] on the fixed dB scale (module docstring)."""
    db = 10.0 * np.log10(np.maximum(S, AMIN))
    return np.clip(2.0 * (db - (DB_MAX - DB_RANGE)) / DB_RANGE - 1.0, -1.0, 1.0).astype(np.float32)


def image_to_power(x: np.ndarray) -> np.ndarray:
    """Image in [-1, 1] -> mel power; the inverse of power_to_image where it did not clip. Values outside
    [-1, 1] (a sample's overshoot) are clipped first."""
    db = (np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0) + 1.0) / 2.0 * DB_RANGE + DB_MAX - DB_RANGE
    return 10.0 ** (db / 10.0)


def wave_to_image(y: np.ndarray, spec: MelSpec) -> np.ndarray:
    """A clip of spec.clip_samples samples -> its (n_mels, frames) image (the frame centred on the end dropped)."""
    return power_to_image(mel_power(y, spec))[:, :spec.frames]


@functools.lru_cache(maxsize=8)
def mel_pinv(spec: MelSpec) -> np.ndarray:
    """(1 + n_fft/2, n_mels) Moore-Penrose pseudo-inverse of the mel filter bank (librosa.filters.mel)."""
    return np.linalg.pinv(mel_bank(spec))


def mel_to_magnitude(S: np.ndarray, spec: MelSpec) -> np.ndarray:
    """Mel power (n_mels, T) -> STFT magnitude (1 + n_fft/2, T): the least-squares inverse of the filter bank,
    clipped at 0, square-rooted. (librosa's NNLS inverse, `mel_to_stft`, is as close on the loud bins and ten times
    slower.)"""
    return np.sqrt(np.maximum(mel_pinv(spec) @ S, 0.0))


def image_to_wave(x: np.ndarray, spec: MelSpec, *, n_iter: int = 32, seed: int = 0) -> np.ndarray:
    """An (n_mels, frames) image -> a float32 waveform of spec.clip_samples samples: mel_to_magnitude, then
    Griffin-Lim with `n_iter` iterations from random phases drawn from `seed`. The frame centred on the clip's end
    (dropped by wave_to_image) repeats the last one. The result is scaled down only if it would exceed [-1, 1]."""
    import librosa

    magnitude = mel_to_magnitude(image_to_power(x), spec)  # (1 + n_fft/2, frames)
    magnitude = np.concatenate([magnitude, magnitude[:, -1:]], axis=1)
    y = librosa.griffinlim(magnitude, n_iter=n_iter, hop_length=spec.hop, n_fft=spec.n_fft, center=True,
                           length=spec.clip_samples, random_state=seed)
    peak = float(np.abs(y).max()) if y.size else 0.0
    return (y / peak if peak > 1.0 else y).astype(np.float32)
