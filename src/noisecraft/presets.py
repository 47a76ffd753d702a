"""Named run presets (plain dict registry). `noisecraft presets` lists them."""

from __future__ import annotations

from dataclasses import replace

from noisecraft.conditions.config import ConditioningConfig
from noisecraft.errors import unknown_name
from noisecraft.models.conditioning import TokenRefinerConfig
from noisecraft.models.dit import DIT_PRESETS
from noisecraft.models.mlp import MLP_PRESETS
from noisecraft.models.unet import UNET_PRESETS, UNetConfig
from noisecraft.runconfig import DataConfig, DiffusionConfig, RunConfig, SampleConfig, TrainConfig
from noisecraft.text.config import TextConfig
from noisecraft.training.repa import REPAConfig

# The quickstart: a 1.2M-parameter U-Net (the "mnist" U-Net with one residual block per level) on the
# embedded MNIST, EDM preconditioning and loss (Karras et al. 2022), Heun sampling on Karras steps.
# One res block per level rather than two: in an 8-minute CPU budget the extra updates matter more than the
# depth (measured in docs/quickstart.md).
_MNIST = RunConfig(
    name="mnist",
    model="unet",
    network=replace(UNET_PRESETS["mnist"], num_res_blocks=1),
    diffusion=DiffusionConfig(schedule="edm", prediction="edm", weighting="simple", sigma_data=0.5),
    data=DataConfig(dataset="mnist", split="train"),
    train=TrainConfig(batch_size=64, lr=1e-3, warmup_steps=100, ema_decay=0.999, steps=100_000, minutes=8.0,
                      checkpoint_every=250),
    sample=SampleConfig(sampler="heun", steps=18, step_schedule="karras", num=64),
)

# The latent-vs-pixel study on 64x64 emoji (benchmarks/latent_vs_pixel.md): the same EDM recipe, sampler and
# budget, in pixel space (64x64x3, U-Net levels 64/32/16/8) and in the latent space of the `ae-64` autoencoder
# (16x16x4 scaled to unit std, hence sigma_data = 1; U-Net levels 16/8).
_EMOJI_64 = RunConfig(
    name="emoji-64", model="unet",
    network=UNetConfig(in_channels=3, base_channels=32, channel_mult=(1, 2, 2, 2), num_res_blocks=1,
                       attention_levels=(3,), head_channels=32, norm_groups=8),
    diffusion=DiffusionConfig(schedule="edm", prediction="edm", weighting="simple", sigma_data=0.5),
    data=DataConfig(dataset="emoji", split="train"),
    train=TrainConfig(batch_size=32, lr=1e-3, warmup_steps=50, ema_decay=0.999, steps=1_000_000, minutes=10.0,
                      checkpoint_every=100),
    sample=SampleConfig(sampler="heun", steps=18, step_schedule="karras", num=64),
)
_LDM_64 = replace(
    _EMOJI_64, name="ldm-64",
    network=UNetConfig(in_channels=4, base_channels=64, channel_mult=(1, 2), num_res_blocks=1,
                       attention_levels=(1,), head_channels=32, norm_groups=8),
    diffusion=replace(_EMOJI_64.diffusion, sigma_data=1.0),
    data=DataConfig(dataset="emoji", split="train", autoencoder="runs/ae-64"),  # from train-autoencoder --preset ae-64
)

# The same study on 64x64 glyphs rendered natively from matplotlib's fonts (grey; benchmarks/latent_vs_pixel.md
# says why they replaced emoji there): pixel U-Net levels 64/32/16/8 on 64x64x1, latent U-Net levels 16/8 on the
# 16x16x4 latents of `ae-glyphs-64`.
_GLYPHS_64_DATA = DataConfig(dataset="glyphs", split="train", resolution=64)
_GLYPHS_64 = replace(_EMOJI_64, name="glyphs-64", network=replace(_EMOJI_64.network, in_channels=1),
                     data=_GLYPHS_64_DATA)
_LDM_GLYPHS_64 = replace(_LDM_64, name="ldm-glyphs-64",
                         data=replace(_GLYPHS_64_DATA, autoencoder="runs/ae-glyphs-64"))

PRESETS: dict[str, RunConfig] = {
    # The quickstart itself trains with ln sigma ~ N(0, 1.2^2) rather than EDM's N(-1.2, 1.2^2), i.e. more often at
    # the noise levels that decide a digit's shape, and samples with DPM-Solver++(2M) SDE: at 8 CPU-minutes this
    # halved the FD (docs/quickstart.md, "Re-tuned defaults"); the presets built on _MNIST keep EDM's values.
    "mnist": replace(_MNIST, diffusion=replace(_MNIST.diffusion, p_mean=0.0),
                     sample=replace(_MNIST.sample, sampler="dpmpp_2m_sde", steps=30)),
    # The classic DDPM recipe on MNIST: linear betas, eps prediction, L_simple (Ho et al. 2020).
    "mnist-ddpm": replace(
        _MNIST, name="mnist-ddpm", diffusion=DiffusionConfig(schedule="linear", prediction="eps"),
        sample=SampleConfig(sampler="ddim", steps=50, step_schedule="trailing"),
    ),
    # Rectified flow on MNIST (Esser et al. 2024).
    "mnist-flow": replace(
        _MNIST, name="mnist-flow", diffusion=DiffusionConfig(schedule="flow", prediction="flow"),
        sample=SampleConfig(sampler="euler", steps=30, step_schedule="uniform"),
    ),
    # sklearn's 8x8 digits: seconds per epoch on a CPU.
    "digits": replace(
        _MNIST, name="digits", network=replace(UNET_PRESETS["tiny"], base_channels=16, norm_groups=8,
                                               attention_levels=(1,), head_channels=16),
        data=DataConfig(dataset="digits", split="train"),
        train=replace(_MNIST.train, minutes=3.0),
    ),
    # 2-D toy distribution with an MLP: the smallest complete diffusion model.
    "toy2d": RunConfig(
        name="toy2d", model="mlp", network=MLP_PRESETS["toy2d"],
        diffusion=DiffusionConfig(schedule="edm", prediction="edm", sigma_data=1.0),
        data=DataConfig(dataset="8gaussians", split="all"),
        train=TrainConfig(batch_size=256, lr=1e-3, warmup_steps=100, steps=3000, minutes=None),
        sample=SampleConfig(sampler="heun", steps=18, step_schedule="karras", num=2000),
    ),
    # For tests and smoke runs: a ~50k-parameter U-Net on a slice of MNIST.
    "mnist-tiny": replace(
        _MNIST, name="mnist-tiny", network=UNET_PRESETS["tiny"],
        data=DataConfig(dataset="mnist", split="train", limit=256),
        train=replace(_MNIST.train, batch_size=16, steps=20, minutes=None, warmup_steps=5, checkpoint_every=10,
                      log_every=5),
        sample=SampleConfig(sampler="heun", steps=4, step_schedule="karras", num=4),
    ),
    # Pixel-space diffusion on 64x64 emoji (the baseline of the latent-vs-pixel study).
    "emoji-64": _EMOJI_64,
    # Latent diffusion on 64x64 emoji: train the autoencoder first (noisecraft train-autoencoder --preset ae-64
    # --out runs/ae-64), or point data.autoencoder at another one (a diffusers AutoencoderKL folder works too).
    "ldm-64": _LDM_64,
    # Pixel-space and latent diffusion on 64x64 glyphs (the latent-vs-pixel study; train-autoencoder --preset
    # ae-glyphs-64 --out runs/ae-glyphs-64 first, or point data.autoencoder elsewhere).
    "glyphs-64": _GLYPHS_64,
    "ldm-glyphs-64": _LDM_GLYPHS_64,
}

# Conditional generation (classifier-free guidance needs the null condition: conditioning.cond_dropout = 0.1).
# Text presets use the bundled all-MiniLM-L6-v2: its 384-d tokens through cross-attention at 8x8 and its pooled
# sentence vector added to the time embedding; the U-Net has 16/32/64 channels at 32/16/8 px, which is what a
# CPU can train in well under an hour (measured in benchmarks/guidance.md).
_TEXT_UNET = replace(_MNIST.network, base_channels=16, channel_mult=(1, 2, 4), norm_groups=8, attention_levels=(2,))
_SCENES_UNET = replace(_TEXT_UNET, in_channels=3, refiner=TokenRefinerConfig(kernel=5, pool=True, residual=True))
_TEXT = dict(text=TextConfig(encoder="minilm", max_tokens=32), conditioning=ConditioningConfig(cond_dropout=0.1),
             sample=SampleConfig(sampler="heun", steps=18, step_schedule="karras", num=64))
PRESETS.update({
    # Class-conditional MNIST: the quickstart U-Net with a class embedding (label 10 = null).
    "mnist-class": replace(_MNIST, name="mnist-class", network=replace(_MNIST.network, num_classes=10),
                           conditioning=ConditioningConfig(cond_dropout=0.1),
                           train=replace(_MNIST.train, minutes=20.0)),
    # Mask-conditioned inpainting on MNIST (the SD-inpainting recipe, noisecraft.conditions.inpaint): the U-Net reads
    # [x, mask, masked image]; random rectangles, halves, strokes and full masks. With a class, guidable by class.
    "mnist-inpaint": replace(_MNIST, name="mnist-inpaint", conditioning=ConditioningConfig(conditions=("inpaint",)),
                             train=replace(_MNIST.train, minutes=15.0)),
    "mnist-class-inpaint": replace(_MNIST, name="mnist-class-inpaint",
                                   network=replace(_MNIST.network, num_classes=10),
                                   conditioning=ConditioningConfig(cond_dropout=0.1, conditions=("inpaint",)),
                                   train=replace(_MNIST.train, minutes=20.0)),
    # Class-conditional MNIST with the DiT backbone (Peebles & Xie 2023): 4x4 patches (49 tokens), 6 blocks.
    "mnist-dit": replace(_MNIST, name="mnist-dit", model="dit",
                         network=replace(DIT_PRESETS["mnist"], patch_size=4, hidden_size=128, depth=6,
                                         num_heads=4, num_classes=10),
                         conditioning=ConditioningConfig(cond_dropout=0.1),
                         train=replace(_MNIST.train, minutes=20.0)),
    # mnist-dit with the options that measured best at equal CPU time (benchmarks/transformers.md "DiT vs U-Net"):
    # QK-norm, a 3x3 output conv, a unit-scale class table and Xavier time MLP (out of adaLN-Zero's saddle) and
    # a depthwise 3x3 conv in every MLP (Mix-FFN).
    "mnist-dit-mix": replace(_MNIST, name="mnist-dit-mix", model="dit",
                             network=replace(DIT_PRESETS["mnist"], patch_size=4, hidden_size=128, depth=6,
                                             num_heads=4, num_classes=10, out_conv=True, qk_norm=True,
                                             class_embed_std=1.0, time_embed_init="xavier", mlp_conv=True),
                             conditioning=ConditioningConfig(cond_dropout=0.1),
                             train=replace(_MNIST.train, minutes=20.0)),
    # Text-to-image on glyphs ("bold serif capital letter G"), 32x32 grey.
    "glyphs-text": replace(_MNIST, name="glyphs-text", network=_TEXT_UNET,
                           data=DataConfig(dataset="glyphs", split="train"),
                           train=replace(_MNIST.train, minutes=30.0), **_TEXT),
    # Text-to-image on the compositional scenes ("a small red circle left of a large blue square"), 32x32 RGB.
    # The frozen MiniLM tokens are close to a bag of words, so the U-Net adds a residual n-gram refiner (each
    # token reads the two words on either side) and its pooled vector (its prompt adherence against the plain
    # text U-Net is measured in benchmarks/scenes_text.md).
    "scenes-text": replace(_MNIST, name="scenes-text", network=_SCENES_UNET,
                           data=DataConfig(dataset="scenes", split="train"),
                           train=replace(_MNIST.train, minutes=30.0), **_TEXT),
    # Latent text-to-image on the scenes (Rombach et al. 2022): the 8x8x4 latents of the `ae-scenes` autoencoder
    # (train-autoencoder --preset ae-scenes --out runs/ae-scenes first), sigma_data = 1 (latents scaled to unit
    # std), a U-Net of 64/128 channels at 8/4 latent px with self- and cross-attention at both levels (each
    # latent cell sees every text token and every other cell), the same text path as `scenes-text`; 40000 scenes
    # instead of 8000, and training sigmas ln sigma ~ N(0.3, 1.0) (EDM2's latent P_mean -0.4 for sigma_data 0.5,
    # moved to unit-std latents). Measured against `scenes-text` in benchmarks/scenes_text.md "Latent diffusion".
    "ldm-scenes-text": replace(
        _MNIST, name="ldm-scenes-text",
        network=replace(_SCENES_UNET, in_channels=4, base_channels=64, channel_mult=(1, 2), attention_levels=(0, 1)),
        diffusion=replace(_MNIST.diffusion, sigma_data=1.0, p_mean=0.3, p_std=1.0),
        data=DataConfig(dataset="scenes", split="train", autoencoder="runs/ae-scenes", count=40_000),
        train=replace(_MNIST.train, minutes=30.0), **_TEXT),
})
# Layout-grounded latent text-to-image on the scenes (noisecraft.conditions.layout; LayoutGPT / LLM-grounded
# Diffusion + GLIGEN-style grounding): `ldm-scenes-text` whose U-Net also reads, as channels concatenated to x, a
# map of each object phrase's embedding painted into its box - the dataset's boxes in training, a planner's boxes
# (learned from them at the start of the run) when sampling. The relation's direction, which the text-only model
# leaves at chance, is the planner's job (measured in benchmarks/guidance.md and benchmarks/scenes_text.md).
PRESETS["ldm-scenes-layout"] = replace(PRESETS["ldm-scenes-text"], name="ldm-scenes-layout",
                                       conditioning=replace(_TEXT["conditioning"], layout=True))

# mnist-dit-mix with representation alignment (REPA, Yu et al. 2025): block 2's tokens aligned with the 7x7x128
# features of noisecraft's MNIST classifier (benchmarks/transformers.md "REPA"). Before 2026-12-08 this preset's
# network had only QK-norm and the output conv (runs made then keep that network in their own config).
PRESETS["mnist-dit-repa"] = replace(PRESETS["mnist-dit-mix"], name="mnist-dit-repa",
                                    train=replace(PRESETS["mnist-dit-mix"].train,
                                                  repa=REPAConfig(encoder="mnist", depth=2, weight=0.5)))

# ---- MMDiT text-to-image with rectified flow (Esser et al. 2024, SD3; noisecraft.models.mmdit) -------------------
# Image and text tokens with their own weights and one joint attention, adaLN-Zero from the time and the pooled
# MiniLM vector, QK RMSNorm; rectified flow with logit-normal t (SD3 Sec. 3.1; diffusion.flow_shift = SD3's shift,
# 1 at these sizes), Euler on uniform t. The text path is the text presets' (MiniLM tokens + pooled, cond dropout
# 0.1 for guidance); no token refiner: the text stream has its own attention and MLPs in every block.
# Pixel scenes: 4x4 patches of 32x32 RGB (64 image tokens); latent scenes: 2x2 patches of the 8x8x4 `ae-scenes`
# latents (16 tokens; train-autoencoder --preset ae-scenes --out runs/ae-scenes first); MNIST-class-as-text:
# dataset mnist-text ("the digit seven"), 4x4 patches of 28x28 (49 tokens). Measured in benchmarks/transformers.md.
from noisecraft.models.mmdit import MMDIT_PRESETS  # noqa: E402

_FLOW = DiffusionConfig(schedule="flow", prediction="flow")
_MMDIT_TEXT = dict(_TEXT, sample=SampleConfig(sampler="euler", steps=30, step_schedule="uniform", num=64))
_MMDIT_TRAIN = replace(_MNIST.train, lr=5e-4, warmup_steps=100, minutes=30.0)
PRESETS.update({
    "scenes-text-mmdit": replace(_MNIST, name="scenes-text-mmdit", model="mmdit", network=MMDIT_PRESETS["scenes"],
                                 diffusion=_FLOW, data=DataConfig(dataset="scenes", split="train"),
                                 train=_MMDIT_TRAIN, **_MMDIT_TEXT),
    "ldm-scenes-text-mmdit": replace(_MNIST, name="ldm-scenes-text-mmdit", model="mmdit",
                                     network=MMDIT_PRESETS["latent"], diffusion=_FLOW,
                                     data=PRESETS["ldm-scenes-text"].data, train=_MMDIT_TRAIN, **_MMDIT_TEXT),
    "mnist-text-mmdit": replace(_MNIST, name="mnist-text-mmdit", model="mmdit", network=MMDIT_PRESETS["mnist"],
                                diffusion=_FLOW, data=DataConfig(dataset="mnist-text", split="train"),
                                train=replace(_MMDIT_TRAIN, minutes=20.0), **_MMDIT_TEXT),
})

# ---- Structure control (ControlNet, Zhang et al. 2023; noisecraft.conditions.control) --------------------------
# A ControlNet trained on a frozen base run (conditioning.control_base: `mnist` -> runs/m, `mnist-class` ->
# runs/mc, as in the README), whose network, diffusion and data these presets repeat; only the ControlNet
# (a trainable copy of the encoder, the map encoder and the zero convolutions) is optimised. No condition dropout
# for the unconditional base (the null control is exactly the base); the class-conditional one keeps the base's
# 0.1, so that guidance by class has its null label.
_CONTROL_TRAIN = replace(_MNIST.train, lr=5e-4, warmup_steps=100, minutes=15.0)
_CONTROL = ConditioningConfig(cond_dropout=0.0, conditions=("control",), control_base="runs/m")
PRESETS.update({
    "mnist-control-canny": replace(_MNIST, name="mnist-control-canny", conditioning=_CONTROL, train=_CONTROL_TRAIN),
    "mnist-control-scribble": replace(_MNIST, name="mnist-control-scribble",
                                      conditioning=replace(_CONTROL, control_map="scribble"), train=_CONTROL_TRAIN),
    "mnist-class-control-canny": replace(PRESETS["mnist-class"], name="mnist-class-control-canny",
                                         conditioning=replace(_CONTROL, cond_dropout=0.1, control_base="runs/mc"),
                                         train=_CONTROL_TRAIN),
})
# ---- end of structure control -------------------------------------------------------------------------------------


# ---- Super-resolution cascade (SR3 + noise conditioning augmentation; noisecraft.conditions.low_res) ----------
# Imagen-style cascade on glyphs, 16 -> 32 -> 64 (grey): `glyphs-16` draws 16x16 glyphs, `glyphs-sr-32` and
# `glyphs-sr-64` each double the resolution, reading the area-downsampled image bicubic-upsampled as concatenated
# channels and the augmentation level through cond["vector"]. The SR U-Nets are shallow (their job is local
# detail), EDM recipe as the other presets; no condition dropout (the low-res image is not guidable).
# noisecraft upscale --checkpoint runs/glyphs-sr-32 --checkpoint runs/glyphs-sr-64 --base runs/glyphs-16 --num 16
_SR_CONDITIONING = ConditioningConfig(cond_dropout=0.0, conditions=("low-res",), low_res_factor=2)
_SR_TRAIN = replace(_EMOJI_64.train, batch_size=32, lr=1e-3, warmup_steps=50, minutes=15.0, checkpoint_every=250)
PRESETS.update({
    "glyphs-16": replace(_MNIST, name="glyphs-16",
                         network=UNetConfig(in_channels=1, base_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                                            attention_levels=(1,), head_channels=32, norm_groups=8),
                         data=DataConfig(dataset="glyphs", split="train", resolution=16),
                         train=replace(_MNIST.train, minutes=8.0)),
    "glyphs-sr-32": replace(_GLYPHS_64, name="glyphs-sr-32",
                            network=UNetConfig(in_channels=1, base_channels=32, channel_mult=(1, 2, 2),
                                               num_res_blocks=1, attention_levels=(), head_channels=32,
                                               norm_groups=8),
                            data=DataConfig(dataset="glyphs", split="train", resolution=32),
                            conditioning=_SR_CONDITIONING, train=_SR_TRAIN),
    "glyphs-sr-64": replace(_GLYPHS_64, name="glyphs-sr-64",
                            network=UNetConfig(in_channels=1, base_channels=24, channel_mult=(1, 2, 2),
                                               num_res_blocks=1, attention_levels=(), head_channels=24,
                                               norm_groups=8),
                            data=DataConfig(dataset="glyphs", split="train", resolution=64),
                            conditioning=_SR_CONDITIONING, train=replace(_SR_TRAIN, batch_size=16, minutes=15.0)),
})
# ---- end of super-resolution ---------------------------------------------------------------------------------


# ---- Video (noisecraft.video.presets): moving digits / scenes, text- and image-to-video, inflation, latent video ----
from noisecraft.video.presets import VIDEO_PRESETS  # noqa: E402

PRESETS.update(VIDEO_PRESETS)

# ---- Molecules (noisecraft.molecules.presets): E(3)-equivariant diffusion of small molecules (EDM, EGNN) ----
from noisecraft.molecules.presets import MOLECULE_PRESETS  # noqa: E402

PRESETS.update(MOLECULE_PRESETS)

# ---- 3-D point clouds (noisecraft.points.presets): Point-E style shapes, class- and text-to-point-cloud ----
from noisecraft.points.presets import POINT_PRESETS  # noqa: E402

PRESETS.update(POINT_PRESETS)

# ---- Audio (noisecraft.audio.presets): mel-spectrogram diffusion of Bach chorale clips, class- or text ----
from noisecraft.audio.presets import AUDIO_PRESETS  # noqa: E402

PRESETS.update(AUDIO_PRESETS)


def latent_preset_for(dataset: str) -> str:
    """The first latent-diffusion preset (one with data.autoencoder set) that trains on `dataset`, else ldm-64:
    what the autoencoder trainer suggests next (train-autoencoder --preset ae-scenes -> ldm-scenes-text)."""
    return next((name for name, c in PRESETS.items() if c.data.autoencoder and c.data.dataset == dataset), "ldm-64")


def get_preset(name: str) -> RunConfig:
    if name not in PRESETS:
        raise unknown_name("preset", name, PRESETS)
    return PRESETS[name]
