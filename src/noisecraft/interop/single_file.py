"""Stable Diffusion single-file checkpoints (the original LDM key layout) <-> diffusers-layout state dicts.

An original checkpoint holds three models under three prefixes; each maps onto a diffusers class:

| original prefix                          | diffusers class        | diffusers config needed for the names   |
|------------------------------------------|------------------------|-----------------------------------------|
| model.diffusion_model.                   | UNet2DConditionModel   | block types, layers_per_block           |
| first_stage_model.                       | AutoencoderKL          | number of blocks, layers_per_block      |
| cond_stage_model.transformer. (SD 1.x)   | CLIPTextModel          | none (the same names)                   |
| cond_stage_model.model. (SD 2.x, OpenCLIP)| CLIPTextModel         | num_hidden_layers (SD 2 uses the        |
|                                          |                        | penultimate layer: later ones are left) |

The names come from one table per model (`unet_pairs`, `vae_pairs`, `clip_pairs`) of (original, diffusers) module
prefixes, used in both directions, so write-then-read is the identity. Three tensors change shape on the way:
the VAE's mid-attention q/k/v/proj_out are 1x1 convolutions (C, C, 1, 1) in the original and linear (C, C) in
diffusers; OpenCLIP's fused `in_proj_weight` (3D, D) is CLIP's q/k/v projections stacked; its
`positional_embedding` is CLIP's position-embedding weight. The facts are those of diffusers'
`loaders.single_file_utils` (convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint, convert_ldm_clip_checkpoint,
convert_open_clip_checkpoint); tests check the two agree. CLIP state dicts use the `text_model.` names of
Stable Diffusion pipeline folders' text_encoder/model.safetensors (transformers reads them as they are).

Configs come from a local diffusers pipeline folder (`unet/config.json`, `vae/config.json`,
`text_encoder/config.json`): nothing is fetched. Only safetensors files are read; pickle files (.ckpt, .bin, .pt,
.pth) are refused unopened, as they can run code when loaded.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from noisecraft.errors import CheckpointError

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."       # SD 1.x: transformers' CLIPTextModel inside
OPEN_CLIP_PREFIX = "cond_stage_model.model."        # SD 2.x: OpenCLIP's text tower
PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth", ".pkl")
_UNET_RES = (("in_layers.0", "norm1"), ("in_layers.2", "conv1"), ("emb_layers.1", "time_emb_proj"),
             ("out_layers.0", "norm2"), ("out_layers.3", "conv2"), ("skip_connection", "conv_shortcut"))
_VAE_RES = (("norm1", "norm1"), ("conv1", "conv1"), ("norm2", "norm2"), ("conv2", "conv2"),
            ("nin_shortcut", "conv_shortcut"))
_VAE_ATTN = (("norm", "group_norm"), ("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("proj_out", "to_out.0"))
_OPEN_CLIP_LAYER = (("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"), ("attn.out_proj", "self_attn.out_proj"),
                    ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2"))


# ---------------------------------------------------------------------------------------------------------------
# Name tables: (original prefix, diffusers prefix) module pairs; a pair maps every key under it, suffix unchanged


def unet_pairs(config: dict) -> list[tuple[str, str]]:
    """Module pairs of an SD-style UNet2DConditionModel (openaimodel.py's input/middle/output blocks)."""
    down, up = list(config["down_block_types"]), list(config["up_block_types"])
    n = int(config["layers_per_block"])
    pairs = [("time_embed.0", "time_embedding.linear_1"), ("time_embed.2", "time_embedding.linear_2"),
             ("input_blocks.0.0", "conv_in"), ("out.0", "conv_norm_out"), ("out.2", "conv_out")]
    if config.get("num_class_embeds"):
        pairs.append(("label_emb", "class_embedding"))

    def res(orig: str, diff: str) -> None:
        pairs.extend((f"{orig}.{a}", f"{diff}.{b}") for a, b in _UNET_RES)

    for level, kind in enumerate(down):
        for j in range(n):
            i = 1 + level * (n + 1) + j
            res(f"input_blocks.{i}.0", f"down_blocks.{level}.resnets.{j}")
            if kind.startswith("CrossAttn"):
                pairs.append((f"input_blocks.{i}.1", f"down_blocks.{level}.attentions.{j}"))
        if level < len(down) - 1:
            pairs.append((f"input_blocks.{1 + level * (n + 1) + n}.0.op", f"down_blocks.{level}.downsamplers.0.conv"))
    res("middle_block.0", "mid_block.resnets.0")
    pairs.append(("middle_block.1", "mid_block.attentions.0"))
    res("middle_block.2", "mid_block.resnets.1")
    for b, kind in enumerate(up):
        attn = kind.startswith("CrossAttn")
        for j in range(n + 1):
            i = b * (n + 1) + j
            res(f"output_blocks.{i}.0", f"up_blocks.{b}.resnets.{j}")
            if attn:
                pairs.append((f"output_blocks.{i}.1", f"up_blocks.{b}.attentions.{j}"))
            if j == n and b < len(up) - 1:
                pairs.append((f"output_blocks.{i}.{1 + attn}.conv", f"up_blocks.{b}.upsamplers.0.conv"))
    return pairs


def vae_pairs(config: dict) -> list[tuple[str, str]]:
    """Module pairs of an AutoencoderKL (ldm/modules/diffusionmodules/model.py's Encoder/Decoder)."""
    levels, n = len(config["down_block_types"]), int(config.get("layers_per_block", 1))
    pairs = [("quant_conv", "quant_conv"), ("post_quant_conv", "post_quant_conv")]
    for part in ("encoder", "decoder"):
        pairs += [(f"{part}.conv_in", f"{part}.conv_in"), (f"{part}.norm_out", f"{part}.conv_norm_out"),
                  (f"{part}.conv_out", f"{part}.conv_out")]
        for k in (1, 2):
            pairs += [(f"{part}.mid.block_{k}.{a}", f"{part}.mid_block.resnets.{k - 1}.{b}") for a, b in _VAE_RES]
        pairs += [(f"{part}.mid.attn_1.{a}", f"{part}.mid_block.attentions.0.{b}") for a, b in _VAE_ATTN]
    for i in range(levels):
        for j in range(n):
            pairs += [(f"encoder.down.{i}.block.{j}.{a}", f"encoder.down_blocks.{i}.resnets.{j}.{b}")
                      for a, b in _VAE_RES]
        if i < levels - 1:
            pairs.append((f"encoder.down.{i}.downsample.conv", f"encoder.down_blocks.{i}.downsamplers.0.conv"))
    for b in range(levels):
        orig = levels - 1 - b  # the decoder's up blocks are numbered from the lowest resolution in diffusers
        for j in range(n + 1):
            pairs += [(f"decoder.up.{orig}.block.{j}.{x}", f"decoder.up_blocks.{b}.resnets.{j}.{y}")
                      for x, y in _VAE_RES]
        if b < levels - 1:
            pairs.append((f"decoder.up.{orig}.upsample.conv", f"decoder.up_blocks.{b}.upsamplers.0.conv"))
    return pairs


def open_clip_pairs(config: dict) -> list[tuple[str, str]]:
    """Module pairs of OpenCLIP's text tower -> CLIPTextModel (`num_hidden_layers` of them; q/k/v apart)."""
    pairs = [("token_embedding", "text_model.embeddings.token_embedding"), ("ln_final", "text_model.final_layer_norm")]
    for i in range(int(config["num_hidden_layers"])):
        pairs += [(f"transformer.resblocks.{i}.{a}", f"text_model.encoder.layers.{i}.{b}") for a, b in _OPEN_CLIP_LAYER]
    return pairs


def _rename(state: dict, pairs: list[tuple[str, str]], where: str) -> dict:
    """Every key of `state` renamed by the pair with the longest matching prefix; CheckpointError for the rest."""
    table = dict(pairs)
    out, left = {}, []
    for key, t in state.items():
        parts = key.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            head = ".".join(parts[:cut])
            if head in table:
                out[f"{table[head]}.{'.'.join(parts[cut:])}"] = t
                break
        else:
            left.append(key)
    if left:
        raise CheckpointError(f"{where}: {len(left)} weight(s) the config does not account for, e.g. {sorted(left)[:4]}"
                              " (is the config the checkpoint's?)")
    return out


def _strip(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _add(state: dict, prefix: str) -> dict:
    return {prefix + k: v for k, v in state.items()}


def _is_vae_attn_linear(key: str) -> bool:
    parts = key.split(".")
    return "attentions" in parts and parts[-1] == "weight" and parts[-2] in ("to_q", "to_k", "to_v", "0")


# ---------------------------------------------------------------------------------------------------------------
# Original -> diffusers


def unet_to_diffusers(original: dict, config: dict) -> dict:
    """`model.diffusion_model.*` keys (prefix optional) -> UNet2DConditionModel state dict."""
    state = _strip(original, UNET_PREFIX) if any(k.startswith(UNET_PREFIX) for k in original) else original
    return _rename(state, unet_pairs(config), "UNet (model.diffusion_model.*)")


def vae_to_diffusers(original: dict, config: dict) -> dict:
    """`first_stage_model.*` keys -> AutoencoderKL state dict (mid-attention 1x1 convs -> linear)."""
    state = _strip(original, VAE_PREFIX) if any(k.startswith(VAE_PREFIX) for k in original) else original
    state = {k: v for k, v in state.items() if not k.startswith("loss.")}  # a training loss's LPIPS/discriminator
    out = _rename(state, vae_pairs(config), "VAE (first_stage_model.*)")
    return {k: v[:, :, 0, 0] if _is_vae_attn_linear(k) and v.ndim == 4 else v for k, v in out.items()}


def clip_to_diffusers(original: dict, config: dict | None = None) -> dict:
    """`cond_stage_model.*` keys -> CLIPTextModel state dict (`text_model.*` names): SD 1.x's CLIP as is, SD 2.x's
    OpenCLIP renamed (`config`: the CLIPTextConfig dict; its num_hidden_layers layers are read, later ones and
    the unused text_projection are left, as diffusers does)."""
    if any(k.startswith(CLIP_PREFIX) for k in original):
        return {k: v for k, v in _strip(original, CLIP_PREFIX).items() if not k.endswith("position_ids")}
    state = _strip(original, OPEN_CLIP_PREFIX)
    if not state:
        raise CheckpointError("the checkpoint has no text encoder (cond_stage_model.transformer.* or "
                              "cond_stage_model.model.*)")
    if config is None:
        raise CheckpointError("an SD 2.x (OpenCLIP) text encoder needs its CLIPTextModel config")
    layers = int(config["num_hidden_layers"])
    kept = {k: v for k, v in state.items() if not _unused_open_clip(k, layers)}
    fused = {k: kept.pop(k) for k in list(kept) if k.endswith((".attn.in_proj_weight", ".attn.in_proj_bias"))}
    out = {"text_model.embeddings.position_embedding.weight": kept.pop("positional_embedding")}
    out |= _rename(kept, open_clip_pairs(config), "text encoder (cond_stage_model.model.*)")
    for key, t in fused.items():
        i, p = key.split(".")[2], "weight" if key.endswith("weight") else "bias"
        for name, part in zip(("q_proj", "k_proj", "v_proj"), t.chunk(3, dim=0)):
            out[f"text_model.encoder.layers.{i}.self_attn.{name}.{p}"] = part.clone()
    return out


def _unused_open_clip(key: str, layers: int) -> bool:
    parts = key.split(".")
    if key in ("text_projection", "logit_scale") or key.endswith("attn_mask"):
        return True
    return parts[:2] == ["transformer", "resblocks"] and int(parts[2]) >= layers


# ---------------------------------------------------------------------------------------------------------------
# Diffusers -> original


def unet_to_original(state: dict, config: dict) -> dict:
    """UNet2DConditionModel state dict -> `model.diffusion_model.*` keys."""
    return _add(_rename(state, [(b, a) for a, b in unet_pairs(config)], "UNet2DConditionModel"), UNET_PREFIX)


def vae_to_original(state: dict, config: dict) -> dict:
    """AutoencoderKL state dict -> `first_stage_model.*` keys (mid-attention linear -> 1x1 conv)."""
    state = {k: v[:, :, None, None] if _is_vae_attn_linear(k) and v.ndim == 2 else v for k, v in state.items()}
    return _add(_rename(state, [(b, a) for a, b in vae_pairs(config)], "AutoencoderKL"), VAE_PREFIX)


def clip_to_original(state: dict, config: dict | None = None, *, open_clip: bool = False) -> dict:
    """CLIPTextModel state dict (with or without the `text_model.` prefix) -> SD 1.x `cond_stage_model.transformer.*`
    keys, or with open_clip=True SD 2.x `cond_stage_model.model.*` (OpenCLIP names; q/k/v fused)."""
    state = {("" if k.startswith("text_model.") else "text_model.") + k: v for k, v in state.items()
             if not k.endswith("position_ids")}
    if not open_clip:
        return _add(state, CLIP_PREFIX)
    state = dict(state)
    out = {"positional_embedding": state.pop("text_model.embeddings.position_embedding.weight")}
    for i in range(int(config["num_hidden_layers"])):
        for p in ("weight", "bias"):
            qkv = [state.pop(f"text_model.encoder.layers.{i}.self_attn.{n}.{p}")
                   for n in ("q_proj", "k_proj", "v_proj")]
            out[f"transformer.resblocks.{i}.attn.in_proj_{p}"] = torch.cat(qkv, dim=0)
    out |= _rename(state, [(b, a) for a, b in open_clip_pairs(config)], "CLIPTextModel")
    return _add(out, OPEN_CLIP_PREFIX)


# ---------------------------------------------------------------------------------------------------------------
# Files


def read_safetensors(path) -> dict[str, torch.Tensor]:
    """All tensors of a .safetensors file; one-line CheckpointError for a pickle file (never opened), a missing,
    truncated or corrupt file."""
    from safetensors.torch import load_file

    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(f"{path}: {path.suffix} files are pickles, which can run code when loaded, and are never "
                              "unpickled; convert the checkpoint to .safetensors")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    with path.open("rb") as f:
        head = f.read(2)
    if head[:1] == b"\x80" or head == b"PK":
        raise CheckpointError(f"{path}: a pickle (torch.save) file, never unpickled; only .safetensors is read")
    try:
        return load_file(str(path))
    except Exception as e:  # SafetensorError (truncated, bad header), OSError
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt): "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None


def _config(config_dir: Path, sub: str) -> dict:
    path = Path(config_dir) / sub / "config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read the {sub} config: {e}") from None


def read_single_file(path, config_dir) -> dict[str, dict[str, torch.Tensor]]:
    """An original-layout SD .safetensors file -> {"unet": ..., "vae": ..., "text_encoder": ...} diffusers-layout
    state dicts, with the configs of a local diffusers pipeline folder `config_dir` (unet/, vae/, text_encoder/
    config.json). A part with no weights in the file is left out."""
    original = read_safetensors(path)
    out = {}
    if any(k.startswith(UNET_PREFIX) for k in original):
        out["unet"] = unet_to_diffusers(original, _config(config_dir, "unet"))
    if any(k.startswith(VAE_PREFIX) for k in original):
        out["vae"] = vae_to_diffusers(original, _config(config_dir, "vae"))
    if any(k.startswith(("cond_stage_model.",)) for k in original):
        text_cfg = None if any(k.startswith(CLIP_PREFIX) for k in original) else _config(config_dir, "text_encoder")
        out["text_encoder"] = clip_to_diffusers(original, text_cfg)
    if not out:
        raise CheckpointError(f"{path}: no Stable Diffusion weights (model.diffusion_model.*, first_stage_model.*, "
                              "cond_stage_model.*)")
    return out


def write_single_file(path, *, unet: tuple[dict, dict], vae: tuple[dict, dict] | None = None,
                      text_encoder: tuple[dict, dict | None] | None = None, open_clip: bool = False) -> Path:
    """Write (state dict, config) pairs of a UNet2DConditionModel, AutoencoderKL and CLIPTextModel as one
    original-layout .safetensors file (SD 1.x CLIP names, or SD 2.x OpenCLIP names with open_clip=True)."""
    from safetensors.torch import save

    from noisecraft.files import atomic_write_bytes

    original = unet_to_original(*unet)
    if vae is not None:
        original |= vae_to_original(*vae)
    if text_encoder is not None:
        original |= clip_to_original(*text_encoder, open_clip=open_clip)
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in original.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save(tensors, metadata={"format": "pt"}))
    return path


def single_file_to_diffusers_dir(path, config_dir, out_dir) -> Path:
    """An original-layout SD .safetensors file + a local diffusers pipeline folder of configs -> a diffusers pipeline
    folder: every file of `config_dir` copied (model_index.json, scheduler/, tokenizer/, configs), and each model's
    weights written as safetensors (unet/ and vae/ diffusion_pytorch_model.safetensors,
    text_encoder/model.safetensors). For the diffusers-folder loader: the folder it returns is an ordinary one."""
    from safetensors.torch import save

    from noisecraft.files import atomic_write_bytes

    parts = read_single_file(path, config_dir)
    out, config_dir = Path(out_dir), Path(config_dir)
    for item in config_dir.rglob("*"):
        if item.is_file() and not item.name.endswith((".safetensors", ".bin", ".ckpt", ".pt")):
            target = out / item.relative_to(config_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(item, target)
    names = {"unet": "diffusion_pytorch_model.safetensors", "vae": "diffusion_pytorch_model.safetensors",
             "text_encoder": "model.safetensors"}
    for part, state in parts.items():
        (out / part).mkdir(parents=True, exist_ok=True)
        tensors = {k: v.contiguous() for k, v in state.items()}
        atomic_write_bytes(out / part / names[part], save(tensors, metadata={"format": "pt"}))
    return out


def is_single_file(path) -> bool:
    """Whether path is a .safetensors file in the original Stable Diffusion layout (reads the header only)."""
    path = Path(path)
    if not (path.is_file() and path.suffix.lower() == ".safetensors"):
        return False
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return any(k.startswith(UNET_PREFIX) for k in f.keys())
    except Exception:  # not readable as safetensors: the checkpoint reader gives the error
        return False


def load_single_file_run(path, config_dir, *, use_ema: bool = True, device: str = "cpu"):
    """A Stable Diffusion single-file checkpoint as a noisecraft Run: its weights converted with the configs of a
    local diffusers pipeline folder of the same family (`config_dir`: model_index.json, unet/, vae/, text_encoder/,
    tokenizer/, scheduler/; nothing is downloaded), then loaded as that pipeline folder."""
    import tempfile

    from noisecraft.interop.diffusers_load import load_diffusers_run

    if config_dir is None:
        raise CheckpointError(f"{path} is a Stable Diffusion single-file checkpoint; give the local diffusers folder "
                              "of its family's configs (model_index.json, unet/, vae/, text_encoder/, tokenizer/, "
                              "scheduler/) with config_dir= (CLI: --config-dir DIR); nothing is downloaded")
    if not (Path(config_dir) / "model_index.json").is_file():
        raise CheckpointError(f"{config_dir}: no model_index.json; config_dir must be a diffusers pipeline folder of "
                              "configs (its weights are not needed)")
    with tempfile.TemporaryDirectory(prefix="noisecraft-single-file-") as tmp:
        folder = single_file_to_diffusers_dir(path, config_dir, Path(tmp) / "pipeline")
        run = load_diffusers_run(folder, use_ema=use_ema, device=device)  # weights now in memory
    run.path = Path(path)
    return run
