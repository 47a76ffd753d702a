"""Video run presets (registered in `noisecraft.presets.PRESETS`): config dataclasses only.

    noisecraft train --preset moving-mnist --minutes 8 --out runs/mm                    # unconditional, pixels
    noisecraft sample --checkpoint runs/mm --frames 16 --out clip.gif
    noisecraft train --preset moving-scenes-text --out runs/mst                          # text-to-video
    noisecraft sample --checkpoint runs/mst --prompt "a red circle moves left" --guidance 3 --out clip.mp4
    noisecraft train --preset moving-mnist-image --out runs/moving-mnist-image           # an image U-Net on frames,
    noisecraft train --preset moving-mnist-inflated --out runs/mmi                       # inflated (AnimateDiff)
    noisecraft train --preset moving-mnist-i2v --out runs/i2v                            # image-to-video (SVD-style)
    noisecraft sample --checkpoint runs/i2v --first-frame digit.png --out clip.gif
    noisecraft train-autoencoder --preset ae-video --out runs/ae-video                   # causal 3-D VAE
    noisecraft train --preset ldm-moving-mnist --out runs/ldm-mm                         # latent video diffusion

All use the EDM recipe of the image presets (Karras et al. 2022), Heun sampling on Karras steps.
"""

from __future__ import annotations

from dataclasses import replace

from noisecraft.conditions.config import ConditioningConfig
from noisecraft.models.video_dit import VideoDiTConfig
from noisecraft.models.video_unet import VideoUNetConfig
from noisecraft.runconfig import DataConfig, DiffusionConfig, RunConfig, SampleConfig, TrainConfig
from noisecraft.text.config import TextConfig

FRAMES, SIDE = 8, 24  # moving digits: 8 frames of 24x24 (12-px digits); scenes: 32x32
_EDM = DiffusionConfig(schedule="edm", prediction="edm", weighting="simple", sigma_data=0.5)
_SAMPLE = SampleConfig(sampler="heun", steps=18, step_schedule="karras", num=8)
_TRAIN = TrainConfig(batch_size=8, lr=1e-3, warmup_steps=50, ema_decay=0.995, steps=1_000_000, minutes=8.0,
                     checkpoint_every=200, log_every=25)
# 32/64/64 channels at 24/12/6 px, self-attention at 6x6, a temporal convolution after every stage and temporal
# attention at 12x12 and 6x6 (at full resolution it would more than double a CPU step).
VIDEO_UNET = VideoUNetConfig(in_channels=1, base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
                             attention_levels=(2,), head_channels=32, norm_groups=8, frames=FRAMES,
                             temporal_attention_levels=(1, 2))
# 2x4x4 spatio-temporal patches, 128 wide, 4 blocks.
_VIDEO_DIT = VideoDiTConfig(in_channels=1, input_size=SIDE, patch_size=4, hidden_size=128, depth=4, num_heads=4,
                            frames=FRAMES, temporal_patch=2)
_MNIST_DATA = DataConfig(dataset="moving-mnist", split="train", frames=FRAMES, resolution=SIDE)

_MOVING_MNIST = RunConfig(name="moving-mnist", model="video-unet", network=VIDEO_UNET, diffusion=_EDM,
                          data=_MNIST_DATA, train=_TRAIN, sample=_SAMPLE)

VIDEO_PRESETS: dict[str, RunConfig] = {
    # Unconditional moving digits in pixel space: 8 frames of 24x24.
    "moving-mnist": _MOVING_MNIST,
    # The image U-Net of the same frames (the video U-Net's spatial layers): the per-frame baseline and the run that
    # `moving-mnist-inflated` starts from.
    "moving-mnist-image": replace(_MOVING_MNIST, name="moving-mnist-image", model="unet",
                                  network=VIDEO_UNET.image_config(),
                                  data=DataConfig(dataset="moving-mnist-frames", split="train", frames=FRAMES,
                                                  resolution=SIDE),
                                  train=replace(_TRAIN, batch_size=64), sample=replace(_SAMPLE, num=64)),
    # AnimateDiff-style: the image run's U-Net inflated, frozen; only the zero-initialised temporal layers train.
    "moving-mnist-inflated": replace(_MOVING_MNIST, name="moving-mnist-inflated",
                                     network=replace(VIDEO_UNET, inflate_from="runs/moving-mnist-image",
                                                     freeze_image=True),
                                     conditioning=ConditioningConfig(conditions=("inflate",))),
    # Image-to-video (SVD-style): the first frame concatenated to every frame's input; dropped 10% for guidance.
    "moving-mnist-i2v": replace(_MOVING_MNIST, name="moving-mnist-i2v",
                                conditioning=ConditioningConfig(cond_dropout=0.1, conditions=("first-frame",))),
    # The Sora-style DiT over 2x4x4 spatio-temporal patches (4 x 6 x 6 = 144 tokens), fixed frame count.
    "moving-mnist-dit": replace(_MOVING_MNIST, name="moving-mnist-dit", model="video-dit", network=_VIDEO_DIT,
                                train=replace(_TRAIN, batch_size=16)),
    # Text-to-video on moving shapes ("a red circle moves left"), 8 frames of 32x32 RGB (U-Net levels 32/16/8), MiniLM
    # tokens through cross-attention at 8x8 and the pooled sentence vector in the time embedding.
    "moving-scenes-text": replace(_MOVING_MNIST, name="moving-scenes-text",
                                  network=replace(VIDEO_UNET, in_channels=3),
                                  data=DataConfig(dataset="moving-scenes", split="train", frames=FRAMES,
                                                  resolution=SIDE),
                                  text=TextConfig(encoder="minilm", max_tokens=16),
                                  conditioning=ConditioningConfig(cond_dropout=0.1)),
    # The same with the video DiT (4 x 8 x 8 = 256 tokens of 2x4x4 patches, cross-attention to the MiniLM tokens in
    # every block): several times faster per step on a CPU, the text-to-video model of benchmarks/video.md.
    "moving-scenes-text-dit": replace(_MOVING_MNIST, name="moving-scenes-text-dit", model="video-dit",
                                      network=replace(_VIDEO_DIT, in_channels=3, input_size=32),
                                      data=DataConfig(dataset="moving-scenes", split="train", frames=FRAMES,
                                                      resolution=32),
                                      text=TextConfig(encoder="minilm", max_tokens=16),
                                      conditioning=ConditioningConfig(cond_dropout=0.1),
                                      train=replace(_TRAIN, batch_size=16)),
    # Latent video diffusion on the causal autoencoder's 3 x 6 x 6 x 4 latents of 9-frame clips (train-autoencoder
    # --preset ae-video --out runs/ae-video first); latents scaled to unit std, so sigma_data = 1.
    "ldm-moving-mnist": replace(_MOVING_MNIST, name="ldm-moving-mnist",
                                network=replace(VIDEO_UNET, in_channels=4, base_channels=64, channel_mult=(1, 2),
                                                attention_levels=(1,), frames=3, temporal_attention_levels=None),
                                diffusion=replace(_EDM, sigma_data=1.0),
                                data=replace(_MNIST_DATA, frames=9, autoencoder="runs/ae-video")),
    # For tests and smoke runs: a tiny video U-Net on 4 frames of 16x16.
    "moving-mnist-tiny": replace(_MOVING_MNIST, name="moving-mnist-tiny",
                                 network=VideoUNetConfig(in_channels=1, base_channels=8, channel_mult=(1, 2),
                                                         num_res_blocks=1, attention_levels=(1,), head_channels=8,
                                                         norm_groups=4, frames=4),
                                 data=DataConfig(dataset="moving-mnist", split="train", frames=4, resolution=16,
                                                 limit=32),
                                 train=replace(_TRAIN, batch_size=4, steps=4, minutes=None, warmup_steps=2,
                                               checkpoint_every=2, log_every=2),
                                 sample=replace(_SAMPLE, steps=2, num=2)),
}
