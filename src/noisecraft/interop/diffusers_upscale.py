"""The Stable Diffusion x4 upscaler (`StableDiffusionUpscalePipeline` folders) as a noisecraft super-resolution run,
so `noisecraft.editing.upscale` and `noisecraft upscale` use it.

Its U-Net reads the low-resolution image itself, in pixels, concatenated to latents of the same size (the
autoencoder then decodes them f times larger), with noise conditioning augmentation (Ho et al. 2022, "Cascaded
diffusion models", Sec. 4.2) by the pipeline's own DDPM `low_res_scheduler`: for a noise level t (an integer in
[0, max_noise_level], the pipeline's `noise_level`, default 20)

    z_t = sqrt(abar_t) z + sqrt(1 - abar_t) eps        (low_res_scheduler.add_noise; abar in float32 as diffusers)
    input = [x_t, z_t],  class_labels = t              (the U-Net embeds the level as a class)

Classifier-free guidance keeps z_t and t in both branches (the pipeline repeats them), so the condition is not
guidable. eps of image i is drawn from a generator seeded seed + i, as the pipeline draws it from its generator
for one image (the parity test compares one image at a time).
"""

from __future__ import annotations

import math

import torch

from noisecraft.conditions.base import Condition
from noisecraft.conditions.low_res import LowResCondition
from noisecraft.errors import CheckpointError, NoisecraftError

DEFAULT_NOISE_LEVEL = 20  # the pipeline's default noise_level
LOW_RES_SCHEDULER = "low_res_scheduler"


class DiffusersLowResCondition(LowResCondition):
    """request.conditions["low-res"] = {"image": (1 or num, 3, h, w) in [-1, 1], "level": noise level} or the image
    alone (level `aug_sample`); the attributes `upscale` reads are LowResCondition's (which also checks requests and
    gives guidance the same image in both branches)."""

    def __init__(self, alphas_cumprod: torch.Tensor, max_noise_level: int, channels: int, low_size: tuple[int, int],
                 factor: int, device) -> None:
        Condition.__init__(self, None)
        self.alphas_cumprod = alphas_cumprod.float()  # (T,) float32, as the scheduler holds it
        self.max_noise_level, self.channels, self.factor = int(max_noise_level), int(channels), int(factor)
        self._low = tuple(low_size)
        self.size = (self._low[0] * factor, self._low[1] * factor)  # the output's (H, W)
        self.aug_sample = DEFAULT_NOISE_LEVEL
        self.device = torch.device(device)

    def low_size(self) -> tuple[int, int]:
        return self._low

    def checked_level(self, level) -> int:
        """The noise level as an int in [0, max_noise_level] (NoisecraftError otherwise)."""
        ok = isinstance(level, int | float) and not isinstance(level, bool) and math.isfinite(level) and \
            float(level) == int(level) and 0 <= int(level) <= self.max_noise_level
        if not ok:
            raise NoisecraftError(f"noise level must be an integer in [0, {self.max_noise_level}] (the x4 upscaler's "
                                  f"noise_level, default {DEFAULT_NOISE_LEVEL}), got {level!r}")
        return int(level)

    def load(self, run_dir, net, device, data_shape: tuple) -> None:
        """Nothing to read: the loader sets the condition up."""

    def parse(self, value) -> tuple[torch.Tensor, int]:
        level = self.aug_sample
        if isinstance(value, dict):
            if set(value) - {"image", "level"} or "image" not in value:
                raise NoisecraftError(f"low-res: the request value is {{'image': tensor, 'level': noise level}}; got "
                                      f"keys {sorted(value)}")
            level = self.checked_level(value.get("level", level))
            value = value["image"]
        h, w = self._low
        if not isinstance(value, torch.Tensor) or value.ndim != 4 or tuple(value.shape[1:]) != (self.channels, h, w):
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise NoisecraftError(f"low-res: expected a (1 or num, {self.channels}, {h}, {w}) low-resolution image "
                                  f"(x{self.factor} to {self.size[0]}x{self.size[1]}), got {got}")
        return value, level

    def add_noise(self, z: torch.Tensor, eps: torch.Tensor, level: int) -> torch.Tensor:
        """low_res_scheduler.add_noise: sqrt(abar_t) z + sqrt(1 - abar_t) eps, in z's dtype."""
        abar = self.alphas_cumprod.to(device=z.device, dtype=z.dtype)[level]
        return abar ** 0.5 * z + (1 - abar) ** 0.5 * eps

    def from_request(self, request, num: int, seed: int | None) -> dict:
        image, level = self.parse(request.conditions[self.name])
        image = image.float().to(self.device).expand(num, *image.shape[1:])
        base = request.seed if seed is None else seed
        eps = torch.cat([torch.randn(image.shape[1:], generator=torch.Generator().manual_seed(base + i))[None]
                         for i in range(num)]).to(self.device)
        labels = torch.full((1,), level, dtype=torch.long, device=self.device)
        return {"concat": self.add_noise(image, eps, level), "class_labels": labels}

    def null(self, n: int) -> dict:
        """A zero image at level 0 (a request without a low-resolution image; use noisecraft upscale)."""
        return {"concat": torch.zeros(1, self.channels, *self._low, device=self.device),
                "class_labels": torch.zeros(1, dtype=torch.long, device=self.device)}

    def describe(self) -> str:
        h, w = self._low
        return f"the Stable Diffusion upscaler (x{self.factor} from {h}x{w}); use noisecraft upscale with --prompt"


def low_res_condition(root, index: dict, net, autoencoder, device) -> DiffusersLowResCondition:
    """The upscaler's condition from its pipeline folder: low_res_scheduler's alphas_cumprod, max_noise_level."""
    from noisecraft.interop.diffusers_files import SCHEDULER_CONFIG, diffusers_alphas_cumprod, read_json

    where = root / LOW_RES_SCHEDULER / SCHEDULER_CONFIG
    if autoencoder is None or not where.is_file():
        raise CheckpointError(f"{root}: an upscaler U-Net (a low-resolution image and a noise level beside x) needs "
                              f"its pipeline folder, with vae and {LOW_RES_SCHEDULER}/{SCHEDULER_CONFIG}")
    abar = diffusers_alphas_cumprod(read_json(where), where)
    level = index.get("max_noise_level", 350)
    if not isinstance(level, int) or not 0 <= level < len(abar):
        raise CheckpointError(f"{root}: max_noise_level must be an integer in [0, {len(abar)}), got {level!r}")
    size = net.module.config.sample_size
    low = (size, size) if isinstance(size, int) else tuple(size)
    return DiffusersLowResCondition(abar, level, net.concat_channels, low, autoencoder.factor, device)


__all__ = ["DEFAULT_NOISE_LEVEL", "DiffusersLowResCondition", "low_res_condition"]
