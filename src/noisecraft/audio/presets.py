"""The `bach-audio` presets: mel-spectrogram diffusion of Bach chorale clips (Riffusion / AudioLDM style, in pixel
space: the log-mel image is the sample), registered in `noisecraft.presets.PRESETS`.

    noisecraft train --preset bach-audio --out runs/bach
    noisecraft sample --checkpoint runs/bach --class 1 --guidance 2 --num 4 --out clip.wav    # Griffin-Lim
    noisecraft sample --checkpoint runs/bach --num 8 --out spectrograms.png

A U-Net (1.1M parameters) of 16/32/64/64 channels at 128x64 / 64x32 / 32x16 / 16x8 mel bins x frames
(self-attention at 16x8 and in the middle), conditioned on the chorale's mode (2 classes, null label 2, condition
dropout 0.1 for classifier-free guidance, Ho & Salimans 2022), EDM preconditioning and loss (Karras et al. 2022),
Heun sampling on Karras steps; EMA decay 0.995, as a 20-minute CPU run makes about a thousand steps (measured in
benchmarks/modalities.md, "Audio"). `bach-audio-text` reads the captions ("a chorale phrase in C minor") through
the bundled MiniLM instead of the class (the captions name only the mode: the same task through a text encoder).
"""

from __future__ import annotations

from dataclasses import replace

from noisecraft.audio.chorales import MODES
from noisecraft.conditions.config import ConditioningConfig
from noisecraft.models.unet import UNetConfig
from noisecraft.runconfig import DataConfig, DiffusionConfig, RunConfig, SampleConfig, TrainConfig
from noisecraft.text.config import TextConfig

AUDIO_UNET = UNetConfig(in_channels=1, base_channels=16, channel_mult=(1, 2, 4, 4), num_res_blocks=1,
                        attention_levels=(3,), head_channels=32, norm_groups=8, num_classes=len(MODES))

BACH_AUDIO = RunConfig(
    name="bach-audio",
    model="unet",
    network=AUDIO_UNET,
    diffusion=DiffusionConfig(schedule="edm", prediction="edm", weighting="simple", sigma_data=0.5),
    data=DataConfig(dataset="bach-audio", split="train"),
    conditioning=ConditioningConfig(cond_dropout=0.1),
    train=TrainConfig(batch_size=16, lr=1e-3, warmup_steps=100, ema_decay=0.995, steps=1_000_000, minutes=20.0,
                      checkpoint_every=250),
    sample=SampleConfig(sampler="heun", steps=18, step_schedule="karras", num=8),
)

BACH_AUDIO_TEXT = replace(BACH_AUDIO, name="bach-audio-text", network=replace(AUDIO_UNET, num_classes=0),
                          text=TextConfig(encoder="minilm", max_tokens=16))

AUDIO_PRESETS: dict[str, RunConfig] = {"bach-audio": BACH_AUDIO, "bach-audio-text": BACH_AUDIO_TEXT}
