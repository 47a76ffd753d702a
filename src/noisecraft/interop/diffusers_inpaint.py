"""Stable Diffusion inpainting models (a UNet2DConditionModel with 9 input channels: the latents, the mask and the
masked image's latents) as noisecraft runs, so `noisecraft.editing.inpaint` (method "trained") and
`noisecraft inpaint` use them.

The network's extra input is the one `StableDiffusionInpaintPipeline` builds (Rombach et al. 2022, Sec. 4.3.2 and
the sd-v1-5-inpainting recipe): for an image y in [-1, 1] and a binary mask m (1 = regenerate, 0 = keep),

    m_z = nearest-neighbour resize of m to the latents' size         (1 channel)
    y_z = E((1 - m) y), the scaled latent of the masked image          (latent channels)
    input = [x_t, m_z, y_z]                                             (concatenated along the channels)

The one difference from the pipeline is E: the pipeline draws y_z from the encoder's posterior (its generator),
here y_z is the posterior mean, so an image does not depend on how the pipeline would have drawn it; given the same
y_z the two agree (tests/interop/test_diffusers_inpaint.py). The condition is made in pixel space (`pixel_space`):
it takes the pixel image and mask, and `inpaint` pastes the known pixels back at the end. Not guidable:
classifier-free guidance keeps it in both branches, as the pipeline does; with nothing given, everything is masked
(the masked image is 0, mid-grey).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from noisecraft.conditions.base import Condition
from noisecraft.conditions.inpaint import check_inpaint_value
from noisecraft.errors import CheckpointError


class DiffusersInpaintCondition(Condition):
    """request.conditions["inpaint"] = {"image": (1 or num, C, H, W) in [-1, 1], "mask": (1 or num, 1, H, W)
    binary} in pixels (module docstring)."""

    name = "inpaint"
    guidable = False
    pixel_space = True

    def __init__(self, autoencoder, image_shape: tuple[int, int, int], device) -> None:
        super().__init__(None)
        self.autoencoder, self.image_shape = autoencoder, tuple(image_shape)
        self.device = torch.device(device)
        self._null = None

    def load(self, run_dir, net, device, data_shape: tuple) -> None:
        """Nothing to read: the loader sets the condition up."""

    def encode(self, image: torch.Tensor, mask: torch.Tensor) -> dict:
        """{"concat": [m_z, E((1 - m) y)]} of images (B, C, H, W) and masks (B or 1, 1, H, W)."""
        from noisecraft.autoencoder.latents import encode_images

        image, mask = image.float().to(self.device), mask.float().to(self.device)
        masked = image * (mask < 0.5)  # the pipeline's masked image: known pixels, 0 where regenerated
        z = encode_images(self.autoencoder, masked, progress=False).to(self.device)  # (B, c, h, w)
        m_z = F.interpolate(mask, size=z.shape[-2:])  # nearest, as the pipeline's prepare_mask_latents
        return {"concat": torch.cat([m_z.expand(z.shape[0], 1, *z.shape[-2:]), z], dim=1)}

    def check_request(self, request) -> None:
        value = (request.conditions or {}).get(self.name)
        if value is not None:
            check_inpaint_value(value, self.image_shape, request.num, "in pixels")

    def from_request(self, request, num: int, seed=None) -> dict:
        value = request.conditions[self.name]
        return self.encode(value["image"], value["mask"])

    def null(self, n: int) -> dict:
        """Everything masked: mask 1, the latent of the all-zero masked image (computed once)."""
        if self._null is None:
            c, h, w = self.image_shape
            self._null = self.encode(torch.zeros(1, c, h, w), torch.ones(1, 1, h, w))
        return self._null

    def unconditional(self, request) -> dict:
        return self.from_request(request, 1) if self.given(request) else self.null(1)

    def describe(self) -> str:
        return "a Stable Diffusion inpainting model; use noisecraft inpaint (--image and --mask) with --prompt"


def inpaint_condition(root, net, autoencoder, device) -> DiffusersInpaintCondition:
    """The condition of a U-Net with extra input channels: SD inpainting's 1 + latent channels and a vae, else a
    one-line CheckpointError (other layouts, e.g. the x4 upscaler's low-resolution image, are not read)."""
    extra, latent = net.concat_channels, net.in_channels
    if extra != latent + 1:
        raise CheckpointError(f"{root}: the U-Net reads {extra} channels beside its {latent}-channel latents; "
                              f"supported: {latent + 1} (Stable Diffusion inpainting: the mask and the masked image's "
                              f"latents)")
    if autoencoder is None:
        raise CheckpointError(f"{root}: an inpainting U-Net (mask and masked-image latents beside x) needs the "
                              f"pipeline's vae; load the pipeline folder (model_index.json), not the unet folder")
    size = net.module.config.sample_size
    h, w = (size, size) if isinstance(size, int) else size
    f = autoencoder.factor
    return DiffusersInpaintCondition(autoencoder, (int(autoencoder.config.in_channels), h * f, w * f), device)


__all__ = ["DiffusersInpaintCondition", "inpaint_condition"]
