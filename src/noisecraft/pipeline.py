"""Load a trained run and generate from it (the thin layer the CLI and users call)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from noisecraft.build import build_denoiser
from noisecraft.config import from_dict
from noisecraft.core.denoiser import Denoiser
from noisecraft.core.random import make_generators, randn_like
from noisecraft.errors import CheckpointError, ConfigError, NoisecraftError
from noisecraft.training.checkpoint import load_checkpoint
from noisecraft.training.config import RunConfig

MAX_NUM = 4096  # the largest batch one `generate` call accepts


@dataclass
class Loaded:
    denoiser: Denoiser
    config: RunConfig
    data_shape: tuple[int, ...]
    step: int
    autoencoder: object | None = None  # latent diffusion: decodes the samples (noisecraft.autoencoder)
    layout: object | None = None  # conditioning.layout: the prompt -> boxes planner (noisecraft.text.layout.Layout)

    def to_images(self, x: torch.Tensor) -> torch.Tensor:
        """Samples -> images: a latent model's samples are decoded through its autoencoder; others unchanged."""
        if self.autoencoder is None:
            return x
        from noisecraft.autoencoder.latents import decode_latents

        return decode_latents(self.autoencoder, x)


def load_denoiser(path, *, use_ema: bool = True, device: str = "cpu") -> Loaded:
    """A run directory (or checkpoint file) -> its denoiser (EMA weights by default), in eval mode."""
    ckpt = load_checkpoint(path)
    try:
        config = from_dict(RunConfig, ckpt.config)
    except ConfigError as e:
        raise CheckpointError(f"{ckpt.path}: its config is invalid: {e}") from None
    denoiser = build_denoiser(config)
    weights = ckpt.ema if use_ema and ckpt.ema else ckpt.model
    try:
        denoiser.net.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{ckpt.path}: weights do not fit the model in its config: {e}") from None
    denoiser = denoiser.to(device).eval().requires_grad_(False)
    if config.model == "unet":
        u = config.unet
        side = _data_side(config)
        shape = (u.in_channels, *([side] * u.dims))
    elif config.model == "dit":
        shape = (config.dit.in_channels, config.dit.input_size, config.dit.input_size)
    else:
        shape = (config.mlp.data_dim,)
    autoencoder = None
    if config.data.autoencoder:  # latent diffusion: the samples are latents (decoded by Loaded.to_images)
        from noisecraft.autoencoder.latents import load_run_autoencoder

        autoencoder, shape = load_run_autoencoder(config, ckpt.path, shape)
    layout = None
    if config.conditioning.layout:
        from noisecraft.text.layout import Layout, base_text_encoder, load_planner

        planner, _, bank = load_planner(ckpt.path.parent)
        layout = Layout(base_text_encoder(config.text), planner, config.text.phrase_separators, bank)
    return Loaded(denoiser, config, shape, int(ckpt.state.get("step", 0)), autoencoder, layout)


def _data_side(config: RunConfig) -> int:
    from noisecraft.data import load_dataset

    if config.data.resolution:
        return config.data.resolution
    ds = load_dataset(config.data.dataset, root=config.data.root, split=config.data.split, limit=1)
    return ds.data_shape[-1]


def batch_cond(cond: dict | None, start: int, n: int, num: int) -> dict | None:
    """The condition of images start .. start + n - 1 of `num`: per-image entries (first dimension num) are
    sliced, batch-1 entries broadcast (one prompt or class for every image)."""
    if cond is None:
        return None
    out = {}
    for key, v in cond.items():
        if v.shape[0] not in (1, num):
            raise NoisecraftError(f"cond[{key!r}] has batch size {v.shape[0]}; give 1 or one per image ({num})")
        out[key] = v[start:start + n] if v.shape[0] == num else v.expand(n, *v.shape[1:])
    return out


def generate(denoiser, sigmas: torch.Tensor, data_shape, *, num: int, seed: int, sampler: str = "heun",
             batch_size: int = 64, cond=None, callback=None, device: str = "cpu", **sampler_options) -> torch.Tensor:
    """`num` samples, drawn in batches; sample i uses its own generator seeded seed + i, so it is the
    same whatever the batch size. Returns float32 (num, *data_shape) on the CPU."""
    from noisecraft import samplers

    if isinstance(num, bool) or not isinstance(num, int) or not 1 <= num <= MAX_NUM:
        raise NoisecraftError(f"num must be an integer in [1, {MAX_NUM}], got {num!r}")
    fn = samplers.get(sampler)
    out = []
    for start in range(0, num, batch_size):
        n = min(batch_size, num - start)
        gens = make_generators(seed + start, n)
        x = randn_like(torch.empty(n, *data_shape, device=device), gens) * float(sigmas[0])
        try:
            out.append(fn(denoiser, x, sigmas, cond=batch_cond(cond, start, n, num), generator=gens, callback=callback,
                          **sampler_options).cpu())
        except torch.OutOfMemoryError:
            x = out = None  # let go of the batch, then report outside the except block (its frames hold tensors)
            break
    if out is None:
        _free_device_memory(device)
        raise NoisecraftError(f"out of memory sampling a batch of {n} on {device}; use a smaller batch size "
                              f"(batch_size={max(1, n // 2)}, or --batch-size {max(1, n // 2)} on the command line)")
    return torch.cat(out).float()


def _free_device_memory(device) -> None:
    import gc

    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
