"""A loaded run: everything generation needs around a trained network, and the reader of our own run
directories (`load_checkpoint_run`): the denoiser in the VE view (`D(x, sigma, cond) -> x0`, EMA weights by
default, eval mode), its config, the sample shape, the autoencoder of a latent run and its conditions, loaded
for sampling. `noisecraft.pipelines.loading.load` picks the reader of a path's format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from noisecraft.conditions import ConditionSet, conditions_for
from noisecraft.core.denoiser import Denoiser
from noisecraft.errors import CheckpointError, ConfigError, NoisecraftError


@dataclass
class Run:
    denoiser: Denoiser                        # D(x, sigma, cond) -> x0 (VE view)
    config: object                            # the run's RunConfig
    data_shape: tuple[int, ...]               # the shape of one sample (latents for a latent run)
    conditions: ConditionSet                  # what the run is conditioned on, loaded for sampling
    step: int = 0                             # the training step of the weights
    path: Path | None = None                  # the checkpoint file
    autoencoder: object | None = None         # a latent run's autoencoder (noisecraft.autoencoder)
    ema: bool = True                          # EMA weights (else the raw ones)
    extra: dict = field(default_factory=dict)  # anything a foreign loader keeps

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.net.parameters()).device

    def to_images(self, x: torch.Tensor, *, batch_size: int = 64) -> torch.Tensor:
        """Samples -> images: a latent run's samples are decoded through its autoencoder (batch_size latents at a
        time); others unchanged."""
        if self.autoencoder is None:
            return x
        from noisecraft.autoencoder.latents import decode_latents

        return decode_latents(self.autoencoder, x, batch_size=batch_size)


def load_checkpoint_run(path, *, use_ema: bool = True, device: str = "cpu") -> Run:
    """One of our run directories (or checkpoint files), written by this release or an earlier one."""
    from noisecraft.build import build_denoiser
    from noisecraft.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    config = run_config(ckpt)
    check_config_copy(ckpt)
    denoiser = build_denoiser(config)
    weights = ckpt.ema if use_ema and ckpt.ema else ckpt.model
    try:
        denoiser.net.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{ckpt.path}: weights do not fit the model in its config: {e}") from None
    denoiser = denoiser.to(device).eval().requires_grad_(False)
    shape, autoencoder = sample_shape(config, ckpt)
    conditions = conditions_for(config)
    conditions.load(ckpt.path.parent, denoiser.net, device, shape, image_shape(shape, autoencoder))
    return Run(denoiser, config, shape, conditions, int(ckpt.state.get("step", 0)), ckpt.path, autoencoder, use_ema)


def check_config_copy(ckpt) -> None:
    """Warn (NoisecraftWarning) when the run folder's config.json is not the checkpoint's own config: corrupt,
    not an object, or edited. The checkpoint's copy is the one used; config.json is written for people and
    tools, and editing it changes nothing (settings change with command options or `train ... --resume
    section.field=value`)."""
    import json
    import warnings

    from noisecraft.errors import NoisecraftWarning

    copy = ckpt.path.parent / "config.json"
    if not copy.is_file():
        return
    used = f"using the config stored in {ckpt.path.name}"
    try:
        data = json.loads(copy.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        warnings.warn(f"{copy} is not valid JSON ({type(e).__name__}: {e}); {used}", NoisecraftWarning,
                      stacklevel=3)
        return
    if not isinstance(data, dict):
        warnings.warn(f"{copy} is not a JSON object; {used}", NoisecraftWarning, stacklevel=3)
        return
    from noisecraft.compat import migrate_config

    try:
        data = migrate_config(data, str(copy))  # an earlier release's copy, in today's fields as the checkpoint's
    except NoisecraftError:
        pass
    differs = sorted(_differing_fields(data, ckpt.config))
    if differs:
        shown = ", ".join(differs[:5]) + (f" and {len(differs) - 5} more" if len(differs) > 5 else "")
        warnings.warn(f"{copy} differs from the checkpoint's config in {shown}; {used} (config.json is only a "
                      f"copy for reading: editing it changes nothing)", NoisecraftWarning, stacklevel=3)


def _differing_fields(a, b, prefix: str = "") -> list[str]:
    """Dotted names of the fields where two JSON objects differ (a key on one side only counts)."""
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return [] if a == b else [prefix.rstrip(".") or "the whole config"]
    out = []
    for k in sorted(set(a) | set(b), key=str):
        if k not in a or k not in b:
            out.append(f"{prefix}{k}")
        else:
            out += _differing_fields(a[k], b[k], f"{prefix}{k}.")
    return out


def run_config(ckpt):
    """The RunConfig of a checkpoint (migrated to today's fields when it was read), a CheckpointError if invalid."""
    from noisecraft.config import from_dict
    from noisecraft.runconfig import RunConfig

    try:
        return from_dict(RunConfig, ckpt.config)
    except ConfigError as e:
        raise CheckpointError(f"{ckpt.path}: its config is invalid: {e}") from None


def sample_shape(config, ckpt) -> tuple[tuple[int, ...], object | None]:
    """(the shape of one sample, the autoencoder of a latent run or None). Checkpoints store the shape; for
    those written before they did, it is worked out from the config (and the dataset's image size)."""
    stored = ckpt.state.get("data_shape")
    if stored is not None:
        return tuple(int(s) for s in stored), run_autoencoder(config, ckpt.path)
    shape, autoencoder = _legacy_shape(config), None
    if config.data.autoencoder:
        from noisecraft.autoencoder.latents import load_run_autoencoder

        autoencoder, shape = load_run_autoencoder(config, ckpt.path, shape)
    return tuple(shape), autoencoder


def image_shape(data_shape, autoencoder=None) -> tuple[int, ...]:
    """One image's shape in pixel space: a latent run's decoded image (C, H f, W f), else data_shape."""
    if autoencoder is None:
        return tuple(data_shape)
    f = autoencoder.factor
    return (int(autoencoder.config.in_channels), *(int(s) * f for s in data_shape[1:]))


def run_autoencoder(config, run_path, device="cpu"):
    """The autoencoder of a latent run (data.autoencoder, found as given or beside run_path), in eval mode on
    device; None for a pixel-space run."""
    if not config.data.autoencoder:
        return None
    from noisecraft.autoencoder import load_autoencoder
    from noisecraft.autoencoder.latents import resolve_autoencoder_path

    ae = load_autoencoder(resolve_autoencoder_path(config.data.autoencoder, run_path))
    return ae.to(device).eval().requires_grad_(False)


def _legacy_shape(config) -> tuple[int, ...]:
    def side() -> int:  # the dataset's own size (what checkpoints before the stored shape make us read)
        d = config.data
        if d.resolution:
            return d.resolution
        from noisecraft.data import load_dataset

        return load_dataset(d.dataset, root=d.root, split=d.split, limit=1).data_shape[-1]

    return tuple(config.network.data_shape(side))
