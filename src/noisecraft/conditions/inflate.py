"""Inflation of a trained image U-Net into a video model (AnimateDiff, Guo et al. 2024, sec. 4.2), as a condition
that feeds the network nothing and loads weights at setup (the pattern of the ControlNet's frozen base).

`conditioning.conditions=["inflate"]` with a `video-unet` network whose `inflate_from` names an image U-Net run:
at the start of training, the video U-Net's image layers take that run's EMA weights and, with
`network.freeze_image=true`, are frozen, so the trainer optimises (and averages) only the zero-initialised temporal
layers. The video run's own checkpoint holds every weight, so it samples without the image run.
"""

from __future__ import annotations

from noisecraft.conditions.base import Condition, register
from noisecraft.errors import CheckpointError, ConfigError


@register("inflate")
class InflateCondition(Condition):
    guidable = False

    def setup(self, dataset, net, device, progress: bool = False) -> None:
        from noisecraft.checkpoint import load_checkpoint
        from noisecraft.models.video_unet import VideoUNet, inflate

        super().setup(dataset, net, device, progress)
        cfg = self.config.network
        path = getattr(cfg, "inflate_from", None)
        video = next((m for m in net.modules() if isinstance(m, VideoUNet)), None)
        if video is None or not path:
            raise ConfigError("conditioning.conditions 'inflate' needs model = 'video-unet' with network.inflate_from"
                              "=IMAGE_RUN (a U-Net run trained on the clips' frames)")
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError as e:
            raise ConfigError(f"network.inflate_from={path!r}: not a readable image run: {e}") from None
        inflate(video, ckpt.ema or ckpt.model, freeze=cfg.freeze_image)
        video.to(device)

    def from_batch(self, idx) -> dict:
        return {}

    def null(self, n: int) -> dict:
        return {}

    def given(self, request) -> bool:
        return False
