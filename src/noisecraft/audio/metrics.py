"""Metrics of generated music audio in the field's terms: note statistics estimated from the audio, and a Frechet
distance on the features of a small audio network.

Note statistics (after Yang & Lerch 2020, "On the evaluation of generative models in music", whose pitch-class
histogram and note-length / inter-onset-interval histograms are computed from symbolic notes; here they are
estimated from the waveform, with the same estimator on real and generated audio, so that generated mel images,
which have no symbolic notes, can be scored). For each clip (`describe`):

    chroma      C[p, t] >= 0, the constant-Q chromagram (librosa.feature.chroma_cqt, unnormalised, hop 512):
                the energy of pitch class p in frame t, summed over octaves
    pch         the pitch-class histogram: sum_t C[:, t], normalised to sum 1 (energy-weighted, so a long or
                loud note counts more)
    cooc        the pitch-class co-occurrence: sum_t w_t c_t c_t^T, c_t = C[:, t] / sum_p C[p, t],
                w_t = sum_p C[p, t]: which pitch classes sound together
    intervals   the vertical interval-class histogram (the harmony): the co-occurrence of distinct pitch
                classes p != q summed by interval class min((q - p) mod 12, (p - q) mod 12) = 1 (minor second /
                major seventh) .. 6 (tritone), normalised; key-independent, and the statistic that separates
                the chorales from their shuffled notes most clearly (the pooled 12 x 12 co-occurrence is
                dominated by its diagonal)
    durations   the lengths (s) of the runs of frames in which a pitch class is active (C[p, t] >= ACTIVE *
                max_p C[p, t], in frames at least SILENCE times the clip's loudest): the notes' durations, as
                far as chroma sees them (repeated notes of one pitch class merge)
    ioi         the inter-onset intervals (s) between the onsets librosa.onset.onset_detect finds (peaks of the
                spectral flux of 32-ms log-mel frames, librosa.onset.onset_strength, at least 2 frames apart):
                the rhythm of the texture

A set of clips is summarised by the pooled histograms (`statistics`: pch, and intervals of the co-occurrence
summed over clips; durations and ioi histogrammed on DURATION_EDGES, seconds, centred on the chorales' note values at
0.5 s a quarter), and two sets are compared by the total variation distance of each histogram,
TV(p, q) = 1/2 sum |p - q| in [0, 1] (`distances`; "mean" is their average). The distances are 0 for the same
clips and grow as the pitch content, the harmony, the note lengths or the rhythm move apart; the reference
points are real held-out clips (sampling noise) and the shuffled-notes baseline (`noisecraft.audio.data.
shuffle_notes`: every voice's pitches and durations permuted, harmony and rhythm destroyed).

Frechet distance (FAD-style, Kilgour et al. 2019, "Frechet Audio Distance"; Heusel et al. 2017 for the distance
itself): the Frechet distance between Gaussians fitted to `AudioNet` features of two sets of mel images.
AudioNet is a small CNN that noisecraft trains on the real mel spectrograms of bach-audio's training split (heads:
the chorale's mode, and the clip's pitch-class duration shares `data.pitch_class_shares` as a soft target), so
its features know pitch content and mode. Its numbers are comparable only between runs scored with the same
network (`AudioNetSpec.key`); they are NOT comparable to published FAD, which uses VGGish features of 16 kHz
audio. The network is trained once (deterministic, seeded) and cached as safetensors in
$NOISECRAFT_CACHE/audio/ (`audio_net`; `scripts/train_audio_net.py` trains it and prints its test accuracy).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from noisecraft.audio.synth import SAMPLE_RATE
from noisecraft.errors import NoisecraftError

HOP = 512
ACTIVE = 0.5    # a pitch class is active in a frame at half the frame's strongest pitch class or more
SILENCE = 1e-2  # frames below this fraction of the clip's loudest (summed chroma) are silent
ONSET_FFT = 512  # the onset envelope's window (32 ms): longer ones see the next note early and peak twice
DURATION_EDGES = (0.0, 0.088, 0.177, 0.354, 0.707, 1.414, np.inf)  # s: <1/8 q, 1/4 q, 1/2 q, 1 q, 2 q, longer
STATISTICS = ("pch", "intervals", "durations", "ioi")
# interval class 0..6 of each pitch-class pair (p, q)
INTERVAL_CLASS = np.minimum((np.arange(12)[None] - np.arange(12)[:, None]) % 12,
                            (np.arange(12)[:, None] - np.arange(12)[None]) % 12)
AUDIO_NET_VERSION = "1"


class AudioMetricError(NoisecraftError):
    """Waveforms or mel images of the wrong shape, with NaN / inf, or sets too small to compare."""


@dataclass(frozen=True)
class ClipDescription:
    """What `describe` estimates from one clip (module docstring)."""

    pch: np.ndarray        # (12,) energy per pitch class (not normalised)
    cooc: np.ndarray       # (12, 12) energy-weighted co-occurrence (not normalised)
    durations: np.ndarray  # (k,) seconds
    ioi: np.ndarray        # (m,) seconds


def _check_wave(y, what: str) -> np.ndarray:
    y = np.asarray(y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else y, dtype=np.float32)
    if y.ndim != 1 or y.size < 4 * HOP:
        raise AudioMetricError(f"{what}: expected a mono waveform of at least {4 * HOP} samples, got shape {y.shape}")
    if not np.isfinite(y).all():
        raise AudioMetricError(f"{what}: the waveform contains NaN or inf")
    return y


def run_lengths(active: np.ndarray) -> np.ndarray:
    """Lengths of the runs of True in a 1-D boolean array."""
    a = np.concatenate([[False], np.asarray(active, bool), [False]])
    change = np.flatnonzero(a[1:] != a[:-1])
    return change[1::2] - change[0::2]


def describe(y, sample_rate: int = SAMPLE_RATE) -> ClipDescription:
    """The statistics of one mono clip (module docstring)."""
    import librosa

    y = _check_wave(y, "clip")
    chroma = librosa.feature.chroma_cqt(y=y, sr=sample_rate, hop_length=HOP, norm=None).astype(np.float64)
    chroma = np.maximum(chroma, 0.0)  # (12, T)
    energy = chroma.sum(0)
    loud = energy >= SILENCE * energy.max() if energy.max() > 0 else np.zeros_like(energy, bool)
    c = chroma[:, loud] / energy[loud]
    cooc = (c * energy[loud]) @ c.T
    active = loud[None] & (chroma >= ACTIVE * chroma.max(0, keepdims=True))
    frames = np.concatenate([run_lengths(row) for row in active])
    flux = librosa.onset.onset_strength(y=y, sr=sample_rate, hop_length=HOP, n_fft=ONSET_FFT)
    onsets = librosa.onset.onset_detect(onset_envelope=flux, sr=sample_rate, hop_length=HOP, units="time", wait=2)
    return ClipDescription(chroma[:, loud].sum(1), cooc, frames * HOP / sample_rate, np.diff(onsets))


@dataclass(frozen=True)
class AudioStatistics:
    """The pooled histograms of a set of clips, each summing to 1 (all zero when the set had nothing to count)."""

    pch: np.ndarray        # (12,)
    intervals: np.ndarray  # (6,) interval classes 1..6
    durations: np.ndarray  # (len(DURATION_EDGES) - 1,)
    ioi: np.ndarray        # (len(DURATION_EDGES) - 1,)
    clips: int
    onsets_per_clip: float

    def as_dict(self) -> dict:
        return {"pch": self.pch.tolist(), "intervals": self.intervals.tolist(), "durations": self.durations.tolist(),
                "ioi": self.ioi.tolist(), "clips": self.clips, "onsets_per_clip": self.onsets_per_clip}


def _normalised(h: np.ndarray) -> np.ndarray:
    total = h.sum()
    return h / total if total > 0 else np.zeros_like(h, dtype=np.float64)


def interval_classes(cooc: np.ndarray) -> np.ndarray:
    """(6,) a 12 x 12 co-occurrence summed by interval class 1..6 (the diagonal, class 0, is left out)."""
    return np.bincount(INTERVAL_CLASS.ravel(), weights=np.asarray(cooc, np.float64).ravel(), minlength=7)[1:]


def statistics(waves, sample_rate: int = SAMPLE_RATE) -> AudioStatistics:
    """The pooled statistics of a list of mono clips (module docstring)."""
    if len(waves) == 0:
        raise AudioMetricError("statistics of an empty set of clips")
    ds = [describe(y, sample_rate) for y in waves]
    edges = np.asarray(DURATION_EDGES)
    hist = lambda v: np.histogram(v, bins=edges)[0].astype(np.float64)  # noqa: E731
    return AudioStatistics(
        _normalised(sum(d.pch for d in ds)), _normalised(interval_classes(sum(d.cooc for d in ds))),
        _normalised(hist(np.concatenate([d.durations for d in ds]))),
        _normalised(hist(np.concatenate([d.ioi for d in ds]))), len(ds),
        float(np.mean([len(d.ioi) + 1 if len(d.ioi) else 0 for d in ds])))


def total_variation(p, q) -> float:
    """TV(p, q) = 1/2 sum |p - q| of two histograms of the same shape."""
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    if p.shape != q.shape:
        raise AudioMetricError(f"histograms of shapes {p.shape} and {q.shape} cannot be compared")
    return 0.5 * float(np.abs(p - q).sum())


def distances(a: AudioStatistics, b: AudioStatistics) -> dict[str, float]:
    """Total variation distance of each statistic (STATISTICS), and their mean."""
    out = {name: total_variation(getattr(a, name), getattr(b, name)) for name in STATISTICS}
    out["mean"] = float(np.mean([out[n] for n in STATISTICS]))
    return out


# ------------------------------------------------------------------------------------------- the audio network
class AudioNet(nn.Module):
    """A small CNN on mel images (N, 1, n_mels, frames): four (conv 3x3, GroupNorm, SiLU, 2x2 average pooling)
    stages of 16/32/64/64 channels, global average pooling -> FEATURE_DIM features (the Frechet distance's),
    then a linear head per target: "mode" (2 logits) and "pitch_classes" (12 logits, a softmax over pitch
    classes)."""

    FEATURE_DIM = 64

    def __init__(self):
        super().__init__()
        layers, c = [], 1
        for w in (16, 32, 64, 64):
            layers += [nn.Conv2d(c, w, 3, padding=1), nn.GroupNorm(4, w), nn.SiLU(), nn.AvgPool2d(2)]
            c = w
        self.body = nn.Sequential(*layers)
        self.heads = nn.ModuleDict({"mode": nn.Linear(c, 2), "pitch_classes": nn.Linear(c, 12)})

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(x)
        return {k: head(f) for k, head in self.heads.items()}


@dataclass(frozen=True)
class AudioNetSpec:
    """What an AudioNet is trained on (its cache key): bach-audio's train split at `resolution` mel bands."""

    resolution: int = 128
    count: int | None = None  # chorales (None: all)
    steps: int = 800
    batch_size: int = 32
    seed: int = 0

    @property
    def key(self) -> str:
        return (f"audionet-v{AUDIO_NET_VERSION}-bach-audio-{self.resolution}mel-{self.count or 'all'}-"
                f"{self.steps}-{self.batch_size}-{self.seed}")


def _loss(out: dict, mode: torch.Tensor, shares: torch.Tensor) -> torch.Tensor:
    soft = -(shares * F.log_softmax(out["pitch_classes"], dim=1)).sum(1).mean()
    return F.cross_entropy(out["mode"], mode) + soft


def train_audio_net(spec: AudioNetSpec = AudioNetSpec(), *, progress: bool = False) -> tuple[AudioNet, dict]:
    """Train an AudioNet (Adam, lr 2e-3, seeded batches) and score it on the test split: (net, metadata with the
    mode accuracy and the mean TV between predicted and true pitch-class shares)."""
    from noisecraft.data import load_dataset

    train = load_dataset("bach-audio", split="train", resolution=spec.resolution, count=spec.count)
    test = load_dataset("bach-audio", split="test", resolution=spec.resolution, count=spec.count)
    gen = torch.Generator().manual_seed(spec.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        net = AudioNet()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    shares = train.attributes["pitch_classes"]
    for step in range(spec.steps):
        idx = torch.randint(len(train), (spec.batch_size,), generator=gen)
        loss = _loss(net(train.images[idx]), train.labels[idx], shares[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if progress and (step + 1) % 100 == 0:
            print(f"audio net step {step + 1}: loss {loss.item():.3f}", flush=True)
    net = net.eval().requires_grad_(False)
    with torch.no_grad():
        out = _batched(net, test.images)
    acc = float((out["mode"].argmax(1) == test.labels).float().mean())
    tv = float(0.5 * (out["pitch_classes"].softmax(1) - test.attributes["pitch_classes"]).abs().sum(1).mean())
    return net, {"test_mode_accuracy": f"{acc:.4f}", "test_pitch_class_tv": f"{tv:.4f}",
                 "test_clips": str(len(test)), "train_clips": str(len(train)), "key": spec.key}


def _batched(net: AudioNet, x: torch.Tensor, batch: int = 128) -> dict[str, torch.Tensor]:
    parts = [net(x[i:i + batch]) for i in range(0, len(x), batch)]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def audio_net_path(spec: AudioNetSpec = AudioNetSpec(), cache_dir=None) -> Path:
    from noisecraft.paths import cache_dir as default_cache

    return Path(cache_dir or default_cache() / "audio") / f"{spec.key}.safetensors"


def audio_net(spec: AudioNetSpec = AudioNetSpec(), *, cache_dir=None, progress: bool = False) -> AudioNet:
    """The AudioNet of `spec`: read from the cache, else trained once (`train_audio_net`) and cached."""
    from safetensors.torch import load_file, save

    from noisecraft.files import atomic_write_bytes

    path = audio_net_path(spec, cache_dir)
    net = AudioNet()
    if path.is_file():
        net.load_state_dict(load_file(str(path)))
        return net.eval().requires_grad_(False)
    net, metadata = train_audio_net(spec, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save({k: v.contiguous() for k, v in net.state_dict().items()}, metadata=metadata))
    return net


def audio_net_metadata(spec: AudioNetSpec = AudioNetSpec(), cache_dir=None) -> dict:
    """The metadata (test accuracy, ...) of a cached AudioNet."""
    from safetensors import safe_open

    with safe_open(str(audio_net_path(spec, cache_dir)), framework="pt") as f:
        return dict(f.metadata() or {})


def _check_images(x, what: str) -> torch.Tensor:
    x = torch.as_tensor(x).float()
    if x.ndim != 4 or x.shape[1] != 1:
        raise AudioMetricError(f"{what}: expected mel images (N, 1, n_mels, frames), got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise AudioMetricError(f"{what}: the mel images contain NaN or inf")
    return x.clamp(-1, 1)


@torch.no_grad()
def audio_features(net: AudioNet, images) -> np.ndarray:
    """(N, FEATURE_DIM) float64 AudioNet features of mel images (clipped to [-1, 1] first, as when heard)."""
    x = _check_images(images, "mel images")
    return torch.cat([net.features(x[i:i + 128]) for i in range(0, len(x), 128)]).double().numpy()


def frechet_audio_distance_nc(generated, reference, net: AudioNet) -> float:
    """Frechet distance of AudioNet features of two sets of mel images (module docstring: noisecraft's own
    network, not comparable to published FAD)."""
    from noisecraft.eval.metrics import fd

    generated, reference = _check_images(generated, "generated"), _check_images(reference, "reference")
    if generated.shape[1:] != reference.shape[1:]:
        raise AudioMetricError(f"generated mel images {tuple(generated.shape[1:])} and reference "
                               f"{tuple(reference.shape[1:])} differ in shape")
    if min(len(generated), len(reference)) < 2:
        raise AudioMetricError("the Frechet distance needs at least 2 clips in each set")
    return fd(audio_features(net, generated), audio_features(net, reference))


__all__ = ["AudioMetricError", "AudioNet", "AudioNetSpec", "AudioStatistics", "ClipDescription", "DURATION_EDGES",
           "STATISTICS", "audio_features", "audio_net", "audio_net_metadata", "audio_net_path", "describe",
           "distances", "frechet_audio_distance_nc", "interval_classes", "run_lengths", "statistics", "total_variation",
           "train_audio_net"]
