"""Super-resolution conditioning: the low-resolution image, upsampled, concatenated to x (SR3), with noise
conditioning augmentation (cascaded diffusion).

- SR3 (Saharia et al. 2022, "Image super-resolution via iterative refinement", Sec. 2 and Fig. 3): the denoiser
  of the high-resolution image y reads the low-resolution image x upsampled to y's size by bicubic
  interpolation, concatenated to the noisy y along the channels: f_theta(x, y_tilde, gamma). Here the channels
  enter through the networks' generic `cond["concat"]` input.
- Noise conditioning augmentation (Ho et al. 2022, "Cascaded diffusion models for high fidelity image
  generation", Sec. 4.2 / Algorithm 1 ("Gaussian conditioning augmentation")): during training the low-resolution
  conditioning image z is corrupted as in the forward process, z_s = sqrt(abar(s)) z + sqrt(1 - abar(s)) eps,
  at a level s drawn uniformly from [0, s_max] per image, and the network is told s; at sampling a fixed s is
  chosen (their Sec. 4.2: a small non-zero level helps a stage that reads a previous stage's samples, whose
  artefacts differ from those of a downsampled real image). abar(s) = cos(pi s / 2)^2 is the cosine schedule of
  Nichol & Dhariwal 2021 (Eq. 17, offset 0), so s = 0 is the clean image and s = 1 pure noise. The level enters
  `cond["vector"]` as a sinusoidal embedding (Vaswani et al. 2017, Sec. 3.5) of 1000 s, as the timestep does.

The low-resolution image is made from the batch's images inside `from_images` (area downsampling by
`conditioning.low_res_factor`, i.e. the mean of each factor x factor block, then bicubic upsampling back), so the
dataset is just the high-resolution images, and the augmentation noise and levels come from the step's generator (a
resumed run draws the same). In a latent run (`pixel_space`) the low-resolution image is still made from, and given
as, pixels; its channels are resized to the latents' size (bicubic up or area down by a whole factor), as the Stable
Diffusion x4 upscaler reads its low-resolution image next to the latents. Not guidable: classifier-free guidance
keeps the low-resolution image in both branches (it guides another condition, a class or a prompt) and condition
dropout never drops it. """

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from noisecraft.conditions.base import Condition, register
from noisecraft.errors import ConfigError, NoisecraftError

EMBED_DIM = 32  # width of the level's sinusoidal embedding (cond["vector"])


def downsample(x: Tensor, factor: int) -> Tensor:
    """Area downsampling (B, C, H, W) -> (B, C, H / factor, W / factor): the mean of each factor x factor block."""
    return F.avg_pool2d(x, factor) if factor > 1 else x


def upsample(x: Tensor, factor: int) -> Tensor:
    """Bicubic upsampling by `factor` (SR3's conditioning input; align_corners=False as PIL / diffusers), not
    clamped (the network reads the exact interpolant)."""
    return F.interpolate(x, scale_factor=factor, mode="bicubic", align_corners=False) if factor > 1 else x


def resize_to(x: Tensor, size: tuple[int, int]) -> Tensor:
    """x (B, C, h, w) at `size` (H, W): bicubic upsampling when H >= h (`upsample` for whole factors), area
    downsampling (`downsample`) when smaller by a whole factor. A latent run's concat channels are at the latents'
    size, which may be above or below the low-resolution image's (the SD x4 upscaler reads it at the latents' size)."""
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x
    if size[0] >= h and size[0] % h == 0 and size[0] // h == size[1] // w and size[1] % w == 0:
        return upsample(x, size[0] // h)
    if h % size[0] == 0 and h // size[0] == w // size[1] and w % size[1] == 0:
        return downsample(x, h // size[0])
    raise NoisecraftError(f"low-res: cannot resize {h}x{w} to {size[0]}x{size[1]} by a whole factor")


def alpha_bar(level: Tensor) -> Tensor:
    """abar(s) = cos(pi s / 2)^2 (the cosine schedule, Nichol & Dhariwal 2021, Eq. 17 with offset 0)."""
    return torch.cos(level * (math.pi / 2)) ** 2


def augment(z: Tensor, level: Tensor, noise: Tensor) -> Tensor:
    """Gaussian conditioning augmentation (Ho et al. 2022, Sec. 4.2): sqrt(abar(s)) z + sqrt(1 - abar(s)) eps,
    level s (B,) in [0, 1]."""
    a = alpha_bar(level.to(z.dtype)).reshape(-1, *[1] * (z.ndim - 1))
    return a.sqrt() * z + (1 - a).clamp_min(0).sqrt() * noise


def level_embedding(level: Tensor, dim: int = EMBED_DIM) -> Tensor:
    """Sinusoidal embedding (B, dim) of 1000 s (Vaswani et al. 2017, Sec. 3.5; the DDPM timestep embedding):
    [cos(1000 s w_k), sin(1000 s w_k)] with w_k = 10000^(-k / (dim / 2))."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=level.device) / half)
    arg = 1000.0 * level.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(arg), torch.sin(arg)], dim=1)


def check_level(level, what: str = "aug_level") -> float:
    if isinstance(level, bool) or not isinstance(level, int | float) or not 0.0 <= float(level) <= 1.0:
        raise NoisecraftError(f"{what} must be a number in [0, 1] (0 = the clean low-resolution image, 1 = pure "
                              f"noise), got {level!r}")
    return float(level)


@register("low-res")
class LowResCondition(Condition):
    """SR3 conditioning with noise conditioning augmentation (module docstring). Request value:
    request.conditions["low-res"] = {"image": (1 or num, C, H / f, W / f) in [-1, 1], "level": s in [0, 1]
    (default conditioning.low_res_aug_sample)}, or just the image tensor."""

    guidable = False
    pixel_space = True  # the low-resolution copy of the pixel images, also in a latent run
    required = True  # sampling needs the low-resolution image (noisecraft upscale)

    def __init__(self, config) -> None:
        super().__init__(config)
        c = config.conditioning
        self.factor = int(c.low_res_factor)
        self.aug_max = float(c.low_res_aug_max)
        self.aug_sample = float(c.low_res_aug_sample)
        self.latent = bool(config.data.autoencoder)
        self.channels = self._pixel_channels(config)
        self.size: tuple[int, int] | None = None  # the high-resolution image's (H, W)
        self.input_size: tuple[int, int] | None = None  # the network input's (latents' in a latent run)

    @staticmethod
    def _pixel_channels(config) -> int:
        """The images' channels: the network's in pixel space; in a latent run, data.channels (required there)."""
        if not config.data.autoencoder:
            return int(config.network.in_channels)
        if config.data.channels is None:
            raise ConfigError("conditioning.conditions: a latent super-resolution run ('low-res' with data."
                              "autoencoder) reads the low-resolution image in pixel space; set data.channels (1 or 3)")
        return int(config.data.channels)

    def network_fields(self) -> dict[str, int]:
        return {"concat_channels": self.channels, "vector_dim": EMBED_DIM}

    def values(self, low: Tensor, level: Tensor, noise: Tensor | None = None) -> dict:
        """The cond entries of low-resolution images (B, C, h, w) at levels (B,) or (1,): concat = the bicubic
        upsampling of the augmented image to the network input's size (a latent run: the latents'), vector = the
        level's embedding."""
        z = low if noise is None else augment(low, level, noise)
        concat = upsample(z, self.factor) if self.input_size == self.size else resize_to(z, self.input_size)
        return {"concat": concat, "vector": level_embedding(level)}

    # ----------------------------------------------------------------------------------- training
    def setup(self, dataset, net, device, progress: bool = False) -> None:
        super().setup(dataset, net, device, progress)
        self.size, self.input_size = tuple(self.image_shape[-2:]), tuple(dataset.images.shape[-2:])
        self._check_size(self.size, "the dataset's images")

    def _check_size(self, size, what) -> None:
        if any(s % self.factor for s in size):
            raise NoisecraftError(f"low-res: {what} are {size[0]}x{size[1]}, not divisible by conditioning."
                                  f"low_res_factor = {self.factor}")

    def from_images(self, idx: Tensor, x0: Tensor, generator: torch.Generator) -> dict:
        """Training cond of a batch of high-resolution images x0 (B, C, H, W): z = downsample(x0), levels
        s ~ U[0, s_max] and eps ~ N(0, I), both from the step's generator (levels first, then the noise)."""
        if x0.ndim != 4 or x0.shape[1] != self.channels:
            raise NoisecraftError(f"low-res: expected images (B, {self.channels}, H, W), got {tuple(x0.shape)}")
        low = downsample(x0.float(), self.factor)
        level = torch.rand(len(x0), generator=generator) * self.aug_max
        noise = torch.randn(low.shape, generator=generator)
        return self.values(low, level.to(x0.device), noise.to(x0.device))

    def null(self, n: int) -> dict:
        """The zero map at level 0 (what a request without a low-resolution image gets: never met in training,
        since the condition is not dropped)."""
        h, w = self.input_size
        return {"concat": torch.zeros(1, self.channels, h, w, device=self.device),
                "vector": level_embedding(torch.zeros(1, device=self.device))}

    # ----------------------------------------------------------------------------------- sampling
    def load(self, run_dir, net, device, data_shape: tuple) -> None:
        super().load(run_dir, net, device, data_shape)
        self.size, self.input_size = tuple(self.image_shape[-2:]), tuple(data_shape[-2:])

    @staticmethod
    def checked_level(level) -> float:
        """A sampling augmentation level s in [0, 1] (NoisecraftError otherwise)."""
        return check_level(level)

    def low_size(self) -> tuple[int, int]:
        return self.size[0] // self.factor, self.size[1] // self.factor

    def parse(self, value) -> tuple[Tensor, float]:
        """(image, level) of a request value (class docstring); NoisecraftError naming the expected shape."""
        level = self.aug_sample
        if isinstance(value, dict):
            unknown = set(value) - {"image", "level"}
            if unknown or "image" not in value:
                raise NoisecraftError(f"low-res: the request value is {{'image': tensor, 'level': s}}; got keys "
                                      f"{sorted(value)}")
            level = check_level(value.get("level", level), "low-res level")
            value = value["image"]
        h, w = self.low_size()
        if not isinstance(value, Tensor) or value.ndim != 4 or tuple(value.shape[1:]) != (self.channels, h, w):
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise NoisecraftError(f"low-res: expected a (1 or num, {self.channels}, {h}, {w}) low-resolution "
                                  f"image ({self.channels}-channel {h}x{w}, 1/{self.factor} of the model's "
                                  f"{self.size[0]}x{self.size[1]}), got {shape}")
        return value, level

    def check_request(self, request) -> None:
        if self.given(request):
            image, _ = self.parse(request.conditions[self.name])
            if image.shape[0] not in (1, request.num):
                raise NoisecraftError(f"low-res: {image.shape[0]} images for {request.num} outputs; give 1 or "
                                      f"{request.num}")
            if not torch.isfinite(image).all():
                raise NoisecraftError("low-res: the image has non-finite values (NaN or inf)")

    def from_request(self, request, num: int, seed: int | None) -> dict:
        """The sampling cond: the fixed level s for every image (Ho et al. 2022, Sec. 4.2). For s > 0 the
        augmentation noise of image i is drawn from seed + i (seed None: seed 0), so an image does not depend on
        the batch (seed None: the request's seed, as the unconditional side uses); s = 0 is the clean upsampled
        image."""
        image, level = self.parse(request.conditions[self.name])
        image = image.float().to(self.device)
        levels = torch.full((1,), level, device=self.device)
        if level == 0:
            return self.values(image, levels)
        image = image.expand(num, *image.shape[1:])
        base = request.seed if seed is None else seed
        noise = torch.cat([torch.randn(image.shape[1:], generator=torch.Generator().manual_seed(base + i))[None]
                           for i in range(num)]).to(self.device)
        out = self.values(image, levels.expand(num), noise)
        return {"concat": out["concat"], "vector": out["vector"][:1]}

    def unconditional(self, request) -> dict:
        """Guidance keeps the low-resolution image, with the same augmentation, in both branches (it guides
        another condition: a class or a prompt); batch num when the level is > 0 or one image is given per
        output (`noisecraft.editing.upscale` runs one network batch per call for this)."""
        return self.from_request(request, request.num, request.seed) if self.given(request) else self.null(1)

    def preview(self, dataset, num: int):
        """The low-resolution copies of the dataset's first num images, at the sampling level."""
        from noisecraft.conditions.base import pixel_images

        images = pixel_images(dataset)[:num].float()
        return {"image": downsample(images, self.factor), "level": self.aug_sample} if len(images) == num else None

    def describe(self) -> str:
        h, w = (self.low_size() if self.size else ("H/f", "W/f"))
        return f"a super-resolution model of {h}x{w} images (x{self.factor}); use noisecraft upscale"
