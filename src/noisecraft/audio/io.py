"""WAV files (soundfile / libsndfile) and spectrogram pictures of audio generations.

Waveforms in noisecraft.audio are mono at SAMPLE_RATE (16 kHz). `save_wav` writes one as a RIFF WAV, 16-bit PCM
(subtype "PCM_16": an int16 array is stored as is, a float one in [-1, 1] scaled by 32767 and rounded by
libsndfile) or 32-bit float (subtype "FLOAT", exact for float32). `read_wav` reads one back and is strict: another
sample rate, another channel count, a NaN / inf sample or a file soundfile cannot read raise WavError naming what
was expected; it never resamples or mixes down. Writes are atomic (encoded in memory, then one rename): bad input
raises before anything is written.

The registered writers of the "audio" modality (`noisecraft.pipelines.outputs`) turn a generation's mel images
(N, 1, n_mels, frames) back into sound with Griffin-Lim (`noisecraft.audio.mel.image_to_wave`; Griffin & Lim
1984):

    .wav        every clip, one after the other with GAP_SECONDS of silence between them, in one 16-bit WAV
    directory   one WAV per clip, named by its seed (000003.wav)
    .png        the mel spectrograms in a grid (low frequencies at the bottom), titled by class and seed: the
                preview `noisecraft train` writes as samples.png
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from noisecraft.audio.chorales import MODES
from noisecraft.audio.synth import SAMPLE_RATE
from noisecraft.errors import NoisecraftError
from noisecraft.files import atomic_write_bytes

SUBTYPES = ("PCM_16", "FLOAT")
GAP_SECONDS = 0.25


class WavError(NoisecraftError):
    """A WAV of another sample rate or channel count, NaN / inf samples, out-of-range values or an unreadable
    file."""


def _soundfile():
    try:
        import soundfile
    except ImportError as e:  # pragma: no cover - soundfile comes with librosa
        raise WavError("WAV files need soundfile: pip install 'noisecraft[audio]'") from e
    return soundfile


def check_wave(y, what: str = "waveform") -> np.ndarray:
    """A mono waveform as a 1-D array (int16 kept, floats as float32); WavError for another shape, NaN / inf or
    float samples outside [-1, 1] (they would clip)."""
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    y = np.asarray(y)
    if y.ndim != 1 or y.size == 0:
        raise WavError(f"{what}: expected a mono waveform of shape (samples,), got shape {y.shape}")
    if y.dtype == np.int16:
        return y
    if not np.issubdtype(y.dtype, np.floating):
        raise WavError(f"{what}: samples must be int16 or float, got {y.dtype}")
    bad = int((~np.isfinite(y)).sum())
    if bad:
        raise WavError(f"{what}: {bad} sample(s) are NaN or inf")
    peak = float(np.abs(y).max())
    if peak > 1.0:
        raise WavError(f"{what}: float samples must lie in [-1, 1], got a peak of {peak:.4g}")
    return y.astype(np.float32, copy=False)


def wav_bytes(y, sample_rate: int = SAMPLE_RATE, subtype: str = "PCM_16") -> bytes:
    """The bytes of a mono WAV of `y` (module docstring), after `check_wave`."""
    if subtype not in SUBTYPES:
        raise WavError(f"unknown WAV subtype {subtype!r}; allowed: {', '.join(SUBTYPES)}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer) or sample_rate <= 0:
        raise WavError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    y = check_wave(y)
    buf = io.BytesIO()
    _soundfile().write(buf, y, int(sample_rate), subtype=subtype, format="WAV")
    return buf.getvalue()


def save_wav(y, out: str | Path, sample_rate: int = SAMPLE_RATE, subtype: str = "PCM_16") -> Path:
    """Write `y` as a mono WAV, atomically (nothing is written for bad input)."""
    data = wav_bytes(y, sample_rate, subtype)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, data)
    return out


def read_wav(path: str | Path, sample_rate: int = SAMPLE_RATE, channels: int = 1,
             dtype: str = "float32") -> np.ndarray:
    """The samples of a WAV file: (samples,) for channels=1, else (samples, channels); dtype "float32" (in
    [-1, 1]) or "int16". WavError unless the file has exactly `sample_rate` and `channels` and finite samples."""
    if dtype not in ("float32", "int16"):
        raise WavError(f"unknown dtype {dtype!r}; allowed: float32, int16")
    sf = _soundfile()
    path = Path(path)
    if not path.is_file():
        raise WavError(f"{path}: no such WAV file")
    try:
        info = sf.info(str(path))
    except RuntimeError as e:
        raise WavError(f"{path}: not a readable sound file ({e})") from None
    if info.samplerate != sample_rate:
        raise WavError(f"{path}: sample rate {info.samplerate} Hz, expected {sample_rate} Hz (noisecraft does not "
                       f"resample; convert it first, e.g. with librosa.resample)")
    if info.channels != channels:
        raise WavError(f"{path}: {info.channels} channel(s), expected {channels} "
                       f"({'mono' if channels == 1 else f'{channels} channels'})")
    y, _ = sf.read(str(path), dtype=dtype, always_2d=False)
    if dtype == "float32":
        bad = int((~np.isfinite(y)).sum())
        if bad:
            raise WavError(f"{path}: {bad} sample(s) are NaN or inf")
    return y


# ------------------------------------------------------------------------------------ generation writers
def _spec(run, images: torch.Tensor):
    from noisecraft.audio.mel import spec_for_shape

    shape = tuple(getattr(run, "data_shape", None) or images.shape[1:])
    if tuple(images.shape[1:]) != shape:
        raise WavError(f"generated mel images of shape {tuple(images.shape[1:])}, but the model's are {shape}")
    return spec_for_shape(shape)


def generation_waves(result, run) -> list[np.ndarray]:
    """Each generated mel image through Griffin-Lim (`mel.image_to_wave`, seeded by the clip's seed)."""
    from noisecraft.audio.mel import image_to_wave

    images = result.images.detach().float().cpu()
    spec = _spec(run, images)
    if not torch.isfinite(images).all():
        raise WavError("the generated mel images contain NaN or inf")
    return [image_to_wave(x[0].numpy(), spec, seed=seed) for x, seed in zip(images, result.seeds, strict=True)]


def write_wav(result, out: Path, run) -> Path:
    """The registered .wav writer: all clips in one 16-bit WAV, GAP_SECONDS of silence between them."""
    waves = generation_waves(result, run)
    gap = np.zeros(round(GAP_SECONDS * SAMPLE_RATE), np.float32)
    joined = np.concatenate([part for w in waves for part in (w, gap)][:-1])
    return save_wav(joined, out)


def write_wav_directory(result, out: Path, run) -> Path:
    """The registered directory writer: one 16-bit WAV per clip, named by its seed."""
    waves = generation_waves(result, run)
    for w in waves:
        check_wave(w)
    for w, seed in zip(waves, result.seeds, strict=True):
        save_wav(w, Path(out) / f"{seed:06d}.wav")
    return Path(out)


def titles(result, class_names=MODES) -> list[str]:
    """One title per clip: its class (the chorale's mode, or a prompt) and seed."""
    from noisecraft.pipelines.outputs import sample_titles

    return sample_titles(result, class_names)


def spectrogram_png(images, titles_: list[str] | None = None, columns: int = 4, max_images: int = 16,
                    spec=None) -> bytes:
    """A PNG of up to `max_images` mel images (N, 1, n_mels, frames) in a grid: time left to right, mel bands
    bottom to top, the fixed [-1, 1] scale (magma), axes in seconds and Hz when `spec` is given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = images.detach().float().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images, float)
    if x.ndim != 4 or x.shape[1] != 1:
        raise WavError(f"mel images must have shape (N, 1, n_mels, frames), got {x.shape}")
    x = x[:max_images]
    cols = min(columns, len(x))
    rows = -(-len(x) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.8 * cols, 2.6 * rows), squeeze=False)
    extent = None
    if spec is not None:
        extent = (0.0, spec.clip_seconds, 0, spec.n_mels)
    for k, ax in enumerate(axes.flat):
        if k >= len(x):
            ax.axis("off")
            continue
        ax.imshow(np.clip(x[k, 0], -1, 1), origin="lower", aspect="auto", cmap="magma", vmin=-1, vmax=1,
                  extent=extent, interpolation="nearest")
        if spec is not None:
            import librosa

            hz = librosa.mel_frequencies(spec.n_mels, fmin=spec.fmin, fmax=spec.fmax)
            ticks = [0, spec.n_mels // 2, spec.n_mels - 1]
            ax.set_yticks(ticks, [f"{hz[t]:.0f}" for t in ticks], fontsize=6)
            ax.tick_params(axis="x", labelsize=6)
        else:
            ax.set_xticks([]), ax.set_yticks([])
        if titles_ is not None:
            ax.set_title(titles_[k], fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def write_png(result, out: Path, run) -> Path:
    """The registered .png writer (and train's samples.png preview): the spectrograms in a grid."""
    images = result.images.detach().float().cpu()
    spec = _spec(run, images)
    if not torch.isfinite(images).all():
        raise WavError("the generated mel images contain NaN or inf")
    data = spectrogram_png(images, titles(result), spec=spec)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, data)
    return out


__all__ = ["GAP_SECONDS", "SUBTYPES", "WavError", "check_wave", "generation_waves", "read_wav", "save_wav",
           "spectrogram_png", "titles", "wav_bytes", "write_png", "write_wav", "write_wav_directory"]
