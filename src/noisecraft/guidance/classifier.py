"""Classifier guidance (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs on Image Synthesis", sec. 4).

In the VE view x = x0 + sigma n, Tweedie's formula gives D(x, sigma) = x + sigma^2 grad_x log p_sigma(x), and
Bayes' rule grad log p(x | y) = grad log p(x) + grad log p(y | x). The conditional denoiser is therefore

    D(x, sigma | y) = D(x, sigma) + sigma^2 grad_x log p(y | x, sigma),

and classifier guidance with scale s uses D + s sigma^2 grad_x log p_phi(y | x, sigma) with a classifier
p_phi trained on noisy inputs (Dhariwal & Nichol 2021, Alg. 1 and sec. 4.1, where the same gradient shifts
the mean of each ancestral step by s Sigma grad log p_phi; Song et al. 2021, sec. 5 / eq. 14 for the
score form). At s = 1 with the exact class posterior it is exactly the conditional denoiser (tested on
the Gaussian mixture in tests/guidance).

`NoisyClassifier` is the encoder half of the U-Net (residual blocks with the noise-level embedding,
attention at low resolution, as ADM's classifier) with global average pooling and a linear head. It works
in sigma space for any training schedule: its input is x / sqrt(sigma^2 + sigma_data^2) and its noise
condition ln(sigma) / 4 (the c_in and c_noise of Karras et al. 2022, Table 1). `train_noisy_classifier`
trains it with cross-entropy on x0 + sigma n at sigmas drawn from a schedule's training distribution;
the weights go into one safetensors file whose metadata holds the JSON config, written atomically, with
the same config as readable JSON beside it.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from noisecraft.config import from_dict
from noisecraft.core.denoiser import expand_sigma
from noisecraft.errors import CheckpointError, ConfigError, DataError, NoisecraftError
from noisecraft.guidance.cfg import check_scale
from noisecraft.models.unet import (
    CONV,
    AttentionBlock,
    Downsample,
    EmbedSequential,
    ResBlock,
    UNetConfig,
    group_norm_silu,
    timestep_embedding,
)
from noisecraft.training.progress import advance, out_of_time, progress_bar

CLASSIFIER_FILE = "classifier.safetensors"
CLASSIFIER_JSON = "classifier.json"
FORMAT = "noisecraft.noisy_classifier"


@dataclass(frozen=True)
class ClassifierConfig:
    """Hyper-parameters of `NoisyClassifier` (the U-Net fields mean what they mean in UNetConfig)."""

    in_channels: int = 1  # channels of x
    num_classes: int = 10  # number of classes K; the output is (B, K) logits
    dims: int = 2  # spatial dimensions of x: 1, 2 or 3
    base_channels: int = 32  # width of level 0
    channel_mult: tuple[int, ...] = (1, 2, 2)  # width multiplier per level
    num_res_blocks: int = 1  # residual blocks per level
    attention_levels: tuple[int, ...] = (2,)  # levels with self-attention
    head_channels: int = 32  # channels per attention head
    norm_groups: int = 8  # GroupNorm groups
    dropout: float = 0.0  # dropout inside residual blocks
    sigma_data: float = 0.5  # data standard deviation in c_in = 1 / sqrt(sigma^2 + sigma_data^2)

    def __post_init__(self) -> None:
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 2:
            raise ConfigError(f"ClassifierConfig.num_classes: must be an integer >= 2, got {self.num_classes!r}")
        if isinstance(self.sigma_data, bool) or not isinstance(self.sigma_data, int | float) or self.sigma_data <= 0:
            raise ConfigError(f"ClassifierConfig.sigma_data: must be a number > 0, got {self.sigma_data!r}")
        self.unet_config()  # validates the U-Net fields (names them as UNetConfig.<field>)

    def unet_config(self) -> UNetConfig:
        return UNetConfig(in_channels=self.in_channels, dims=self.dims, base_channels=self.base_channels,
                          channel_mult=self.channel_mult, num_res_blocks=self.num_res_blocks,
                          attention_levels=self.attention_levels, head_channels=self.head_channels,
                          norm_groups=self.norm_groups, dropout=self.dropout, mid_attention=False,
                          channels_last=False)


class NoisyClassifier(nn.Module):
    """Noise-aware classifier: forward(x, sigma) -> logits (B, K) for a VE-view input x = x0 + sigma n."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        if not isinstance(config, ClassifierConfig):
            raise ConfigError(f"NoisyClassifier expects a ClassifierConfig, got {type(config).__name__}")
        self.config = config
        cfg = config.unet_config()
        emb_ch = cfg.time_embed_mult * cfg.base_channels
        self.time_mlp = nn.Sequential(nn.Linear(cfg.base_channels, emb_ch), nn.SiLU(), nn.Linear(emb_ch, emb_ch))
        self.conv_in = CONV[cfg.dims](cfg.in_channels, cfg.base_channels, 3, padding=1)
        blocks, ch = [], cfg.base_channels
        for level, width in enumerate(cfg.widths):
            for _ in range(cfg.num_res_blocks):
                attn = [AttentionBlock(width, cfg)] if level in cfg.attention_levels else []
                blocks.append(EmbedSequential(ResBlock(ch, width, emb_ch, cfg), *attn))
                ch = width
            if level < len(cfg.widths) - 1:
                blocks.append(EmbedSequential(Downsample(ch, cfg.dims)))
        self.blocks = nn.ModuleList(blocks)
        self.norm_out = nn.GroupNorm(cfg.norm_groups, ch)
        self.head = nn.Linear(ch, config.num_classes)
        self._factor = 2 ** (len(cfg.widths) - 1)

    def forward(self, x: Tensor, sigma) -> Tensor:
        cfg = self.config
        if x.ndim != cfg.dims + 2 or x.shape[1] != cfg.in_channels or any(s % self._factor for s in x.shape[2:]):
            raise NoisecraftError(f"NoisyClassifier input x: expected shape (B, {cfg.in_channels}, "
                                  f"{', '.join(['S'] * cfg.dims)}) with S divisible by {self._factor}, "
                                  f"got {tuple(x.shape)}")
        sigma = expand_sigma(sigma, x)
        c_in = torch.rsqrt(sigma**2 + cfg.sigma_data**2).reshape(-1, *([1] * (x.ndim - 1)))
        dtype = self.conv_in.weight.dtype
        emb_act = F.silu(self.time_mlp(timestep_embedding(0.25 * sigma.log(), cfg.base_channels).to(dtype)))
        h = self.conv_in((c_in * x).to(dtype))
        for block in self.blocks:
            h = block(h, emb_act)
        return self.head(group_norm_silu(h, self.norm_out).flatten(2).mean(-1))  # (B, K)


class ClassifierGuidance:
    """Classifier guidance as a denoiser: guided(x, sigma, cond) = D + s sigma^2 grad_x log p(y | x, sigma).

    denoiser:   the base denoiser (typically unconditional)
    classifier: classifier(x, sigma) -> (B, K) logits (or log-probabilities) for the VE-view x, e.g. a
                NoisyClassifier; log_softmax is applied, so unnormalised logits are fine
    scale:      s (1 = the Bayes-exact conditional for an exact classifier)
    conditional_denoiser: True to pass the class labels on to the base denoiser as well (guidance on top of
                a class-conditional model); False (default) calls it with cond minus "class_labels"
    The labels y are cond["class_labels"] (B,). The gradient is taken with autograd in float32 (float64 when
    x is float64), with gradients enabled even inside torch.no_grad().
    """

    def __init__(self, denoiser, classifier, scale: float, *, conditional_denoiser: bool = False) -> None:
        self.denoiser, self.classifier = denoiser, classifier
        self.scale = check_scale(scale, "classifier guidance scale")
        self.conditional_denoiser = conditional_denoiser

    def __call__(self, x: Tensor, sigma, cond: dict | None = None) -> Tensor:
        labels = (cond or {}).get("class_labels")
        if labels is None:
            raise NoisecraftError("classifier guidance needs cond['class_labels'] (the classes to guide towards)")
        sigma = expand_sigma(sigma, x)
        if labels.shape != (x.shape[0],):
            raise NoisecraftError(f"cond['class_labels']: expected shape ({x.shape[0]},), got {tuple(labels.shape)}")
        base_cond = cond if self.conditional_denoiser else {k: v for k, v in cond.items() if k != "class_labels"}
        d = self.denoiser(x, sigma, base_cond or None)
        if self.scale == 0:
            return d
        grad = self.log_prob_grad(x, sigma, labels)
        s2 = (sigma**2).reshape(-1, *([1] * (x.ndim - 1)))
        return (d.to(grad.dtype) + self.scale * s2.to(grad.dtype) * grad).to(d.dtype)

    def log_prob_grad(self, x: Tensor, sigma: Tensor, labels: Tensor) -> Tensor:
        """grad_x log p(y | x, sigma), by autograd in float32 (float64 for float64 x)."""
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        with torch.enable_grad():
            xg = x.detach().to(dtype).requires_grad_(True)
            logits = self.classifier(xg, sigma)
            n_classes = logits.shape[1]
            if int(labels.min()) < 0 or int(labels.max()) >= n_classes:
                raise NoisecraftError(f"cond['class_labels']: the classifier knows classes 0..{n_classes - 1}; "
                                      f"got {labels.tolist()}")
            log_p = torch.log_softmax(logits.to(dtype), dim=1).gather(1, labels.long()[:, None]).sum()
            (grad,) = torch.autograd.grad(log_p, xg)
        return grad


# ---------------------------------------------------------------------------------------- training
def _as_arrays(dataset) -> tuple[Tensor, Tensor]:
    images = getattr(dataset, "images", None)
    labels = getattr(dataset, "labels", None)
    if images is None and isinstance(dataset, tuple | list) and len(dataset) == 2:
        images, labels = dataset
    if not isinstance(images, Tensor) or not isinstance(labels, Tensor):
        raise DataError("train_noisy_classifier needs a labelled dataset (an ImageDataset with labels, or a pair "
                        "(images, labels))")
    if labels.shape != (len(images),):
        raise DataError(f"labels must have shape ({len(images)},), got {tuple(labels.shape)}")
    return images.float(), labels.long()


def train_noisy_classifier(dataset, schedule, *, config: ClassifierConfig | None = None, steps: int = 2000,
                           batch_size: int = 64, lr: float = 1e-3, weight_decay: float = 0.05, seed: int = 0,
                           minutes: float | None = None, out_dir: str | Path | None = None, device: str = "cpu",
                           progress: bool = True) -> NoisyClassifier:
    """Train a NoisyClassifier on x = x0 + sigma n with sigma ~ the schedule's training distribution
    (`schedule.sample_sigma`), cross-entropy on the labels, AdamW (Dhariwal & Nichol 2021, sec. 4: a
    classifier trained on noisy images at every noise level). Stops after `steps` or `minutes`. With
    out_dir, writes out_dir/classifier.safetensors (+ classifier.json). Returns the model in eval mode."""
    images, labels = _as_arrays(dataset)
    num_classes = int(labels.max()) + 1
    config = config or ClassifierConfig(in_channels=images.shape[1], num_classes=max(num_classes, 2),
                                        dims=images.ndim - 2)
    if num_classes > config.num_classes:
        raise DataError(f"the data has labels up to {num_classes - 1} but ClassifierConfig.num_classes is "
                        f"{config.num_classes}")
    if len(images) < batch_size:
        raise DataError(f"{len(images)} items, fewer than batch_size={batch_size}")
    torch.manual_seed(seed)
    model = NoisyClassifier(config).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    start, losses = time.monotonic(), []
    bar = progress_bar(steps, minutes, enabled=progress, desc="noisy classifier")
    try:
        for step in range(steps):
            losses.append(_classifier_step(model, opt, images, labels, schedule, batch_size, gen, device))
            advance(bar, step + 1, start, minutes, sum(losses[-25:]) / len(losses[-25:]))
            if out_of_time(start, minutes):
                break
    finally:
        bar.close()
    model.eval()
    if out_dir is not None:
        info = {"steps": len(losses), "final_loss": sum(losses[-50:]) / len(losses[-50:]), "seed": seed,
                "batch_size": batch_size, "lr": lr, "schedule": getattr(schedule, "name", type(schedule).__name__)}
        save_noisy_classifier(model, out_dir, info)
    return model


def _classifier_step(model, opt, images, labels, schedule, batch_size: int, gen, device) -> float:
    """One AdamW step of cross-entropy on a batch drawn from `gen` (items, sigma, noise, in that order)."""
    idx = torch.randint(0, len(images), (batch_size,), generator=gen)
    sigma = schedule.sample_sigma(batch_size, gen)  # (B,) float64
    x0 = images[idx]
    x = x0 + sigma.float().reshape(-1, *([1] * (x0.ndim - 1))) * torch.randn(x0.shape, generator=gen)
    loss = F.cross_entropy(model(x.to(device), sigma.to(device)), labels[idx].to(device))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def save_noisy_classifier(model: NoisyClassifier, out_dir: str | Path, info: dict | None = None) -> Path:
    """Write out_dir/classifier.safetensors (metadata: format, config, info) and classifier.json, atomically."""
    from safetensors.torch import save

    from noisecraft.files import atomic_write_bytes, atomic_write_json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = asdict(model.config)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "config": json.dumps(config), "info": json.dumps(info or {})}
    path = out_dir / CLASSIFIER_FILE
    atomic_write_bytes(path, save(tensors, metadata=meta))
    atomic_write_json(out_dir / CLASSIFIER_JSON, {"format": FORMAT, "config": config, "info": info or {}})
    return path


def load_noisy_classifier(path: str | Path, device: str = "cpu") -> NoisyClassifier:
    """Read a classifier written by `save_noisy_classifier` (its directory or the .safetensors file)."""
    from safetensors import safe_open

    path = Path(path)
    if path.is_dir():
        path = path / CLASSIFIER_FILE
    if path.suffix != ".safetensors" or not path.is_file():
        raise CheckpointError(f"no noisy classifier at {path}: expected a directory with {CLASSIFIER_FILE} or a "
                              f".safetensors file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # a corrupt file
        raise CheckpointError(f"{path} is corrupt or unreadable: {type(e).__name__}: {e}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a noisecraft noisy classifier (format {meta.get('format')!r})")
    model = NoisyClassifier(from_dict(ClassifierConfig, json.loads(meta["config"])))
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit its config: {e}") from None
    return model.to(device).eval()


@torch.no_grad()
def classifier_accuracy(classifier, images: Tensor, labels: Tensor, sigma: float, *, seed: int = 0,
                        batch_size: int = 256) -> float:
    """Accuracy of classifier(x0 + sigma n, sigma) on (images, labels) at one noise level."""
    gen = torch.Generator().manual_seed(seed)
    correct = 0
    for i in range(0, len(images), batch_size):
        x0 = images[i:i + batch_size].float()
        x = x0 + sigma * torch.randn(x0.shape, generator=gen)
        correct += int((classifier(x, sigma).argmax(1) == labels[i:i + batch_size]).sum())
    return correct / len(images)


__all__ = ["CLASSIFIER_FILE", "ClassifierConfig", "ClassifierGuidance", "NoisyClassifier", "classifier_accuracy",
           "load_noisy_classifier", "save_noisy_classifier", "train_noisy_classifier"]
