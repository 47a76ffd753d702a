"""diffusers' SD3 / FLUX joint transformers -> noisecraft's MMDiT (`noisecraft.models.mmdit`): the config and the
state-dict key map, so that weights of an `SD3Transformer2DModel` (Esser et al. 2024) load into `MMDiT` and give
the same outputs (tests/models/test_mmdit_parity.py).

| diffusers SD3Transformer2DModel                  | noisecraft MMDiT                                          |
|--------------------------------------------------|-----------------------------------------------------------|
| pos_embed.proj, pos_embed.pos_embed              | x_embedder, pos_embed ("learned" when the table is saved) |
| time_text_embed.timestep_embedder.linear_1/2     | t_embedder.0 / t_embedder.2                               |
| time_text_embed.text_embedder.linear_1/2         | pooled_embedder.0 / pooled_embedder.2                     |
| context_embedder                                 | context_embedder                                          |
| transformer_blocks.i.norm1.linear                | blocks.i.x.modulation (norm1_context: blocks.i.ctx.*)     |
| attn.to_q / to_k / to_v (add_q/k/v_proj)         | blocks.i.x.qkv (blocks.i.ctx.qkv), rows [q; k; v]         |
| attn.norm_q / norm_k (norm_added_q / _k)         | blocks.i.x.norm_q / norm_k (ctx.*)                        |
| attn.to_out.0 (to_add_out)                       | blocks.i.x.proj (ctx.proj)                                |
| ff.net.0.proj / ff.net.2 (ff_context.*)          | blocks.i.x.mlp.0 / mlp.2 (ctx.mlp.*)                      |
| norm_out.linear, proj_out                        | norm_out_modulation, proj_out                             |

A FLUX double-stream block (`FluxTransformerBlock`) has the same keys as a joint block, so
`joint_block_from_diffusers` maps it too (FLUX's single-stream blocks and guidance embedding are not MMDiT's).
SD3.5's dual-attention layers (`dual_attention_layers`) are not implemented: a config with them is refused.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from noisecraft.errors import CheckpointError
from noisecraft.models.mmdit import MMDiT, MMDiTConfig

_STREAM_KEYS = {  # ours (per stream) -> diffusers (image stream, text stream)
    "modulation": ("norm1.linear", "norm1_context.linear"),
    "norm_q": ("attn.norm_q", "attn.norm_added_q"),
    "norm_k": ("attn.norm_k", "attn.norm_added_k"),
    "proj": ("attn.to_out.0", "attn.to_add_out"),
    "mlp.0": ("ff.net.0.proj", "ff_context.net.0.proj"),
    "mlp.2": ("ff.net.2", "ff_context.net.2"),
}
_QKV = (("attn.to_q", "attn.to_k", "attn.to_v"), ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"))
_TOP_KEYS = {
    "x_embedder": "pos_embed.proj", "t_embedder.0": "time_text_embed.timestep_embedder.linear_1",
    "t_embedder.2": "time_text_embed.timestep_embedder.linear_2",
    "pooled_embedder.0": "time_text_embed.text_embedder.linear_1",
    "pooled_embedder.2": "time_text_embed.text_embedder.linear_2",
    "context_embedder": "context_embedder", "norm_out_modulation": "norm_out.linear", "proj_out": "proj_out",
}


def mmdit_config_from_sd3(cfg: dict) -> MMDiTConfig:
    """The MMDiTConfig of an SD3Transformer2DModel config.json dict (its `sample_size` is the latent side)."""
    if cfg.get("dual_attention_layers"):
        raise CheckpointError("SD3Transformer2DModel with dual_attention_layers (SD3.5's MMDiT-X) is not supported")
    qk = cfg.get("qk_norm")
    if qk not in (None, "rms_norm"):
        raise CheckpointError(f"SD3Transformer2DModel qk_norm {qk!r} is not supported; allowed: None, 'rms_norm'")
    heads, head_dim = int(cfg.get("num_attention_heads", 18)), int(cfg.get("attention_head_dim", 64))
    caption = int(cfg.get("caption_projection_dim", 1152))
    if caption != heads * head_dim:
        raise CheckpointError(f"SD3Transformer2DModel caption_projection_dim {caption} must equal the width "
                              f"num_attention_heads * attention_head_dim = {heads * head_dim}")
    max_size = cfg.get("pos_embed_max_size") or 0
    in_ch = int(cfg.get("in_channels", 16))
    return MMDiTConfig(
        in_channels=in_ch, out_channels=cfg.get("out_channels") or in_ch, input_size=int(cfg.get("sample_size", 128)),
        patch_size=int(cfg.get("patch_size", 2)), hidden_size=heads * head_dim, depth=int(cfg.get("num_layers", 18)),
        num_heads=heads, pos_embed="learned" if max_size else "sincos", pos_embed_max_size=int(max_size),
        qk_norm=qk == "rms_norm", context_dim=int(cfg.get("joint_attention_dim", 4096)),
        pooled_dim=int(cfg.get("pooled_projection_dim", 2048)))


def _take(sd: dict, key: str, where: str) -> Tensor:
    if key not in sd:
        raise CheckpointError(f"{where}: the state dict has no {key!r}")
    return sd[key]


def joint_block_from_diffusers(sd: dict, prefix: str = "", out_prefix: str = "") -> dict[str, Tensor]:
    """Our MMDiTBlock's state dict from a diffusers JointTransformerBlock's (SD3) or FluxTransformerBlock's
    (FLUX double stream) keys under `prefix`; q, k, v are stacked into one qkv weight. A context-pre-only
    block (no to_add_out) gives a text stream without proj and mlp."""
    out: dict[str, Tensor] = {}
    has_ctx = f"{prefix}attn.add_k_proj.weight" in sd
    for s, stream in enumerate(("x", "ctx")[:1 + has_ctx]):
        for param in ("weight", "bias"):
            parts = [_take(sd, f"{prefix}{name}.{param}", "diffusers joint block") for name in _QKV[s]]
            out[f"{out_prefix}{stream}.qkv.{param}"] = torch.cat(parts, dim=0)
        for ours, theirs in _STREAM_KEYS.items():
            for param in ("weight", "bias"):
                key = f"{prefix}{theirs[s]}.{param}"
                if key in sd:
                    out[f"{out_prefix}{stream}.{ours}.{param}"] = sd[key]
    return out


def from_diffusers_sd3(sd: dict[str, Tensor], depth: int | None = None) -> dict[str, Tensor]:
    """Our MMDiT's state dict from an SD3Transformer2DModel state dict (keys as in the table above)."""
    if depth is None:
        depth = 1 + max((int(k.split(".")[1]) for k in sd if k.startswith("transformer_blocks.")), default=-1)
    out: dict[str, Tensor] = {}
    for ours, theirs in _TOP_KEYS.items():
        for param in ("weight", "bias"):
            if f"{theirs}.{param}" in sd:
                out[f"{ours}.{param}"] = sd[f"{theirs}.{param}"]
    if "pos_embed.pos_embed" in sd:
        out["pos_embed"] = sd["pos_embed.pos_embed"]
    for i in range(depth):
        out.update(joint_block_from_diffusers(sd, f"transformer_blocks.{i}.", f"blocks.{i}."))
    return out


def load_sd3_transformer(folder, device: str = "cpu") -> MMDiT:
    """An MMDiT with the weights of a local diffusers SD3Transformer2DModel folder (config.json + safetensors)."""
    from safetensors.torch import load_file

    from noisecraft.interop.diffusers_files import check_weights, read_json

    folder = Path(folder)
    cfg = read_json(folder / "config.json")
    if cfg.get("_class_name") != "SD3Transformer2DModel":
        raise CheckpointError(f"{folder}: expected an SD3Transformer2DModel folder, got {cfg.get('_class_name')!r}")
    check_weights(folder)
    sd: dict[str, Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        sd.update(load_file(str(f), device=device))
    model = MMDiT(mmdit_config_from_sd3(cfg)).to(device)
    missing, unexpected = model.load_state_dict(from_diffusers_sd3(sd, model.config.depth), strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{folder}: weights do not match the SD3 transformer: missing {missing[:4]}, "
                              f"unexpected {unexpected[:4]}")
    return model


__all__ = ["from_diffusers_sd3", "joint_block_from_diffusers", "load_sd3_transformer", "mmdit_config_from_sd3"]
