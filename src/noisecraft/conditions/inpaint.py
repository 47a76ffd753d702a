"""Mask-conditioned (trained) inpainting: the mask and the masked image as channels concatenated to x.

As Stable Diffusion's inpainting models (Rombach et al. 2022, "High-resolution image synthesis with latent
diffusion models", Sec. 4.3.2 and the sd-v1-5-inpainting recipe; diffusers' StableDiffusionInpaintPipeline):
the network reads [x_t, m, (1 - m) y] with m the mask (1 = regenerate, 0 = keep, as in A1111 and diffusers) and
y the image, and is trained with the plain denoising loss on the whole image x0 = y while m is drawn at random per
sample. It therefore learns p(x0 | (1 - m) x0, m) directly, instead of approximating it at sampling time as the
training-free methods of `noisecraft.editing.inpaint` do.

Training masks (`random_masks`, one draw per sample from the step's generator, so a resumed run draws the
same): with probability 1/4 everything is masked (the unconditional model, as SD's inpainting training masks
everything in 25% of the samples), otherwise one of: 1 to 3 random rectangles, a half of the image (left,
right, top or bottom), or a brush stroke (a random walk of discs; the free-form masks of Yu et al. 2019,
"Free-form image inpainting with gated convolution", Alg. 1, in a simplified form).

Latent runs: the mask is drawn at the latent resolution and the masked image is the masked latent,
(1 - m_z) z. (SD encodes the masked pixel image instead; masking the latent of the whole image keeps
training free of autoencoder calls, and sampling does the same with z = E(y) and m_z the pixel mask
max-pooled by the autoencoder's factor.)

The mask is not guidable: classifier-free guidance keeps the mask and the masked image in both branches (as
diffusers' inpainting pipeline), and condition dropout never drops them (`Condition.guidable`); the null value is
"everything masked", which is what a fully masked training sample sees.
"""

from __future__ import annotations

import math

import torch

from noisecraft.conditions.base import Condition, register
from noisecraft.errors import NoisecraftError

P_FULL = 0.25  # P(a training sample is masked everywhere)
KINDS = ("rectangles", "half", "stroke")


def _rectangles(h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    m = torch.zeros(h, w)
    for _ in range(int(torch.randint(1, 4, (), generator=gen))):
        rh = int(torch.randint(max(1, h // 5), max(2, (3 * h) // 5) + 1, (), generator=gen))
        rw = int(torch.randint(max(1, w // 5), max(2, (3 * w) // 5) + 1, (), generator=gen))
        top = int(torch.randint(0, h - rh + 1, (), generator=gen))
        left = int(torch.randint(0, w - rw + 1, (), generator=gen))
        m[top:top + rh, left:left + rw] = 1
    return m


def _half(h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    m = torch.zeros(h, w)
    side = int(torch.randint(0, 4, (), generator=gen))
    if side == 0:
        m[:, : w // 2] = 1
    elif side == 1:
        m[:, w // 2:] = 1
    elif side == 2:
        m[: h // 2] = 1
    else:
        m[h // 2:] = 1
    return m


def _stroke(h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """A random walk of 4 to 12 vertices (step about a quarter of the side) painted with discs of one radius."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    side = float(min(h, w))
    radius = side * (0.06 + 0.08 * float(torch.rand((), generator=gen)))
    p = torch.rand(2, generator=gen) * torch.tensor([h - 1.0, w - 1.0])
    m = torch.zeros(h, w, dtype=torch.bool)
    for _ in range(int(torch.randint(4, 13, (), generator=gen))):
        angle = float(torch.rand((), generator=gen)) * 2 * math.pi
        length = side * (0.1 + 0.2 * float(torch.rand((), generator=gen)))
        q = (p + length * torch.tensor([math.sin(angle), math.cos(angle)])).clamp(
            torch.zeros(2), torch.tensor([h - 1.0, w - 1.0]))
        for t in torch.linspace(0, 1, 8):
            c = p + t * (q - p)
            m |= (ys - c[0]) ** 2 + (xs - c[1]) ** 2 <= radius ** 2
        p = q
    return m.float()


def random_masks(n: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """(n, 1, h, w) binary training masks (module docstring), all randomness from `gen`."""
    out = torch.zeros(n, 1, h, w)
    draw = {"rectangles": _rectangles, "half": _half, "stroke": _stroke}
    for i in range(n):
        if float(torch.rand((), generator=gen)) < P_FULL:
            out[i, 0] = 1
        else:
            out[i, 0] = draw[KINDS[int(torch.randint(0, len(KINDS), (), generator=gen))]](h, w, gen)
    return out


def inpaint_input(y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The network's extra channels [m, (1 - m) y]: (B, 1 + C, H, W) from y (B, C, H, W) and m (B or 1, 1, H, W)."""
    mask = mask.to(y)
    return torch.cat([mask.expand(y.shape[0], 1, *y.shape[2:]), (1 - mask) * y], dim=1)


def check_inpaint_value(value, shape: tuple[int, int, int], num: int, space: str) -> None:
    """A request's {"image": (1 or num, C, H, W), "mask": (1 or num, 1, H, W)} with a binary, finite mask and a
    finite image of `shape` (C, H, W); NoisecraftError naming the expected shapes otherwise. space: where the
    values live, for the message (e.g. "in pixels")."""
    c, h, w = shape
    if not isinstance(value, dict) or set(value) != {"image", "mask"}:
        raise NoisecraftError(f"conditions['inpaint'] must be {{'image': (1, {c}, {h}, {w}), 'mask': "
                              f"(1, 1, {h}, {w})}} {space} (batch 1 or one per image); use "
                              f"noisecraft.editing.inpaint.inpaint")
    for key, want in (("image", (c, h, w)), ("mask", (1, h, w))):
        v = value[key]
        if not isinstance(v, torch.Tensor) or v.ndim != 4 or tuple(v.shape[1:]) != want or v.shape[0] not in (1, num):
            got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise NoisecraftError(f"conditions['inpaint'][{key!r}] is {got}; expected {(1, *want)} or "
                                  f"{(num, *want)} (one per image)")
        if not torch.isfinite(v).all():
            raise NoisecraftError(f"conditions['inpaint'][{key!r}] has non-finite values")
    if not ((value["mask"] == 0) | (value["mask"] == 1)).all():
        raise NoisecraftError("conditions['inpaint']['mask'] must be binary: 1 = regenerate, 0 = keep")


@register("inpaint")
class InpaintCondition(Condition):
    """[mask, masked image] as `concat` channels (module docstring). At sampling, request.conditions["inpaint"] =
    {"image": y, "mask": m} in the model's space ((1, C, H, W) and (1, 1, H, W) binary); the editing function
    `noisecraft.editing.inpaint.inpaint(run, image, mask, method="trained")` builds them from pixels."""

    guidable = False

    def __init__(self, config) -> None:
        super().__init__(config)
        self.channels = int(config.network.in_channels)
        self.size: tuple[int, int] | None = None

    def network_fields(self) -> dict[str, int]:
        return {"concat_channels": 1 + self.channels}

    def setup(self, dataset, net, device, progress: bool = False) -> None:
        super().setup(dataset, net, device, progress)
        self.size = tuple(dataset.images.shape[-2:])

    def from_images(self, idx, x0, generator) -> dict:
        m = random_masks(x0.shape[0], x0.shape[-2], x0.shape[-1], generator).to(x0)
        return {"concat": inpaint_input(x0, m)}

    def from_batch(self, idx):
        raise NoisecraftError("the inpainting condition is made from the batch's images (from_images), not indices")

    def null(self, n: int) -> dict:
        h, w = self.size
        return {"concat": torch.cat([torch.ones(1, 1, h, w), torch.zeros(1, self.channels, h, w)], 1).to(self.device)}

    def load(self, run_dir, net, device, data_shape: tuple) -> None:
        super().load(run_dir, net, device, data_shape)
        self.size = tuple(data_shape[-2:])

    def check_request(self, request) -> None:
        value = (request.conditions or {}).get(self.name)
        if value is None:
            return
        h, w = self.size
        if isinstance(value, dict) and isinstance(value.get("image"), torch.Tensor) and value["image"].ndim == 4:
            h, w = value["image"].shape[-2:]  # a canvas other than the training size (outpainting beyond it)
        check_inpaint_value(value, (self.channels, h, w), request.num, "in the model's space")

    def from_request(self, request, num: int, seed=None) -> dict:
        value = request.conditions[self.name]
        return {"concat": inpaint_input(value["image"].float().to(self.device), value["mask"].float().to(self.device))}

    def unconditional(self, request) -> dict:
        return self.from_request(request, 1) if self.given(request) else self.null(1)

    def preview(self, dataset, num: int):
        """The dataset's first num images (the model's space: latents in a latent run) with the right half masked."""
        images = dataset.images[:num].float()
        if len(images) != num:
            return None
        mask = torch.zeros(1, 1, *images.shape[-2:])
        mask[..., images.shape[-1] // 2:] = 1
        return {"image": images, "mask": mask}

    def describe(self) -> str:
        return "a mask-conditioned inpainting model; use noisecraft inpaint (--image and --mask)"
