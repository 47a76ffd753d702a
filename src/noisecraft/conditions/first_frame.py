"""Image-to-video: the first frame as channels concatenated to x (Stable Video Diffusion, Blattmann et al. 2023,
sec. 4.4, which concatenates the conditioning frame's latent to every frame's input).

The condition (`conditioning.conditions=["first-frame"]`) feeds cond["concat"] (B, C, 1, H, W): frame 0 of each
training clip as the network sees it (a latent run: the first latent frame, which the causal video autoencoder
codes from the first frame alone, so it is exactly the latent of that image), broadcast over time by the video
networks. Dropped (classifier-free guidance, conditioning.cond_dropout): zeros. At sampling the request gives
`conditions={"first-frame": value}` with value an image or video file (its first frame), or a tensor (C, H, W) /
(N, C, H, W) in [-1, 1] at the clips' frame size; a latent run encodes it with its autoencoder.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from noisecraft.conditions.base import Condition, register
from noisecraft.errors import NoisecraftError

NAME = "first-frame"


@register(NAME)
class FirstFrameCondition(Condition):
    """The first frame of a clip, concatenated to every frame's input (module docstring)."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self.channels = int(config.network.in_channels)  # the clips' (latents') channels
        self.size: tuple[int, int] | None = None  # the network input's frame size (latents' in a latent run)
        self.autoencoder = None  # a latent run's, loaded for sampling

    def network_fields(self) -> dict[str, int]:
        return {"concat_channels": self.channels}

    def setup(self, dataset, net, device, progress: bool = False) -> None:
        super().setup(dataset, net, device, progress)
        if dataset.images.ndim != 5:
            raise NoisecraftError(f"condition {NAME!r} needs video clips (N, C, T, H, W); dataset {dataset.name!r} "
                                  f"has shape {tuple(dataset.images.shape)}")
        self.size = tuple(dataset.images.shape[-2:])

    def from_images(self, idx: Tensor, x0: Tensor, generator: torch.Generator) -> dict:
        return {"concat": x0[:, :, :1]}  # (B, C, 1, H, W)

    def null(self, n: int) -> dict:
        return {"concat": torch.zeros(1, self.channels, 1, *self.size, device=self.device)}

    # ----------------------------------------------------------------------------------- sampling
    def load(self, run_dir, net, device, data_shape: tuple) -> None:
        super().load(run_dir, net, device, data_shape)
        self.size = tuple(data_shape[-2:])
        if self.config.data.autoencoder:
            from noisecraft.autoencoder import load_autoencoder
            from noisecraft.autoencoder.latents import resolve_autoencoder_path

            self.autoencoder = load_autoencoder(resolve_autoencoder_path(self.config.data.autoencoder, run_dir),
                                                device=str(device))

    def pixel_frames(self, value) -> Tensor:
        """The request's first frame(s) as (N, C, H, W) pixels in [-1, 1], checked against the clips' frame size."""
        C, H, W = self.image_shape[0], *self.image_shape[-2:]
        if isinstance(value, str | Path):
            value = read_first_frame(value, C)
        if not isinstance(value, Tensor) or value.ndim not in (3, 4) or not value.is_floating_point():
            raise NoisecraftError(f"{NAME}: expected an image or video file, or a float tensor (C, H, W) / "
                                  f"(N, C, H, W) in [-1, 1]; got {getattr(value, 'shape', type(value).__name__)}")
        frames = value[None] if value.ndim == 3 else value
        if tuple(frames.shape[1:]) != (C, H, W):
            got = tuple(frames.shape[1:])
            raise NoisecraftError(f"{NAME}: the model was trained on frames of {H}x{W} with {C} channel(s); the "
                                  f"first frame given is {got[1]}x{got[2]} with {got[0]} channel(s)")
        return frames.float()

    def check_request(self, request) -> None:
        if self.given(request):
            self.pixel_frames(request.conditions[NAME])

    def from_request(self, request, num: int, seed: int | None) -> dict:
        frames = self.pixel_frames(request.conditions[NAME]).to(self.device)  # (N, C, H, W)
        if len(frames) not in (1, num):
            raise NoisecraftError(f"{NAME}: give one first frame or one per clip ({num}); got {len(frames)}")
        clip = frames[:, :, None]  # (N, C, 1, H, W)
        if self.autoencoder is not None:  # the causal autoencoder codes the first frame alone
            with torch.no_grad():
                clip = self.autoencoder.to_diffusion(self.autoencoder.encode(clip)).float()
        return {"concat": clip}

    def preview(self, dataset, num: int):
        if self.config.data.autoencoder:  # the dataset holds latents; the preview is unconditional
            return None
        return dataset.images[:num, :, 0]  # (num, C, H, W)

    def describe(self) -> str:
        H, W = self.image_shape[-2:] if self.image_shape else ("H", "W")
        return f"an image-to-video model: use --first-frame IMAGE (or a video file: its first frame) at {H}x{W}"


def read_first_frame(path, channels: int) -> Tensor:
    """An image file, or a video file's first frame, as (C, H, W) in [-1, 1]."""
    from noisecraft.data.video import VIDEO_EXTENSIONS, load_video_clip

    path = Path(path)
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return load_video_clip(path, frames=1, channels=channels)[:, 0]
    from noisecraft.data.images import load_image

    return load_image(path, channels=channels)
