"""The number of frames a loaded video run samples (`noisecraft sample --frames N`)."""

from __future__ import annotations

import dataclasses

from noisecraft.errors import NoisecraftError


def pixel_frames(run, latent_t: int) -> int:
    """Frames of the decoded clip of `latent_t` latent frames (a latent run), else latent_t."""
    ae = run.autoencoder
    return latent_t if ae is None else 1 + getattr(ae, "time_factor", 1) * (latent_t - 1)


def with_frames(run, frames: int):
    """The run sampling clips of `frames` frames. The video U-Net takes any count (its temporal layers have only
    relative positions); the video DiT samples exactly its trained count; a latent run's count must be one the
    causal autoencoder decodes (1 + f_t k). NoisecraftError otherwise, naming what the model takes."""
    from noisecraft.models.video_unet import VideoUNetConfig
    from noisecraft.pipelines.outputs import modality

    if modality(run) != "video" or len(run.data_shape) != 4:
        raise NoisecraftError(f"--frames applies to video models; model {run.config.name!r} makes {modality(run)}s")
    C, T, H, W = run.data_shape
    trained = pixel_frames(run, T)
    latent_t = frames
    if run.autoencoder is not None:
        from noisecraft.models.causal_vae import latent_frames

        latent_t = latent_frames(frames, run.autoencoder.time_factor)
    if latent_t != T and not isinstance(run.config.network, VideoUNetConfig):
        raise NoisecraftError(f"--frames {frames}: model {run.config.name!r} ({run.config.model}) samples exactly "
                              f"{trained} frames, the count it was trained on (its position embedding is built for "
                              f"them); omit --frames or give --frames {trained}")
    return dataclasses.replace(run, data_shape=(C, latent_t, H, W))
