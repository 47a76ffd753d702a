"""diffusers `AutoencoderKL` folders <-> noisecraft's `Autoencoder`.

A diffusers folder is `config.json` (`"_class_name": "AutoencoderKL"`) + `diffusion_pytorch_model.safetensors`
(the layout of `AutoencoderKL.save_pretrained`, and of the `vae/` folder of Stable Diffusion pipelines).
noisecraft's autoencoder uses diffusers' module names and layer arithmetic, so the state dicts map with the
identity, apart from two older spellings diffusers itself still reads: the attention layers of the
"deprecated attention block" (`query`, `key`, `value`, `proj_attn`) and 1x1-convolution attention weights
(C, C, 1, 1) of converted LDM checkpoints, which are squeezed to linear (C, C).

Only safetensors weights are read (a folder with only `diffusion_pytorch_model.bin` is refused: pickle).
Saving writes the same two files; a "deterministic" noisecraft autoencoder is saved as an AutoencoderKL
whose log-variance channels are constant at -30 (the clamp minimum): its posterior mean is the code
exactly, and sampling adds noise of standard deviation exp(-15) ~ 3e-7.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from noisecraft.errors import CheckpointError
from noisecraft.models.autoencoder import LOGVAR_RANGE, Autoencoder, AutoencoderConfig

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
PICKLE_WEIGHTS = "diffusion_pytorch_model.bin"
DIFFUSERS_VERSION = "0.30.0"  # the config format written (read by diffusers >= 0.30)
_OLD_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def read_diffusers_config(folder: Path) -> dict:
    path = Path(folder) / CONFIG_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read the diffusers config: {e}") from None


def is_diffusers_folder(folder: Path) -> bool:
    """A directory with a config.json and no noisecraft checkpoint (a noisecraft run has both)."""
    folder = Path(folder)
    return folder.is_dir() and (folder / CONFIG_FILE).is_file() and not (folder / "checkpoint.safetensors").is_file()


def _expect(ok: bool, where, message: str) -> None:
    if not ok:
        raise CheckpointError(f"{where}: {message}")


def config_from_diffusers(cfg: dict, where="config.json") -> tuple[AutoencoderConfig, float, float]:
    """A diffusers AutoencoderKL config -> (AutoencoderConfig, scaling_factor, shift_factor); CheckpointError
    for another class or an AutoencoderKL variant noisecraft does not implement."""
    name = cfg.get("_class_name")
    _expect(name == "AutoencoderKL", where, f"describes a diffusers {name!r}, not an 'AutoencoderKL' "
                                            "(noisecraft reads AutoencoderKL folders only)")
    channels = tuple(cfg.get("block_out_channels", (64,)))
    down = tuple(cfg.get("down_block_types", ("DownEncoderBlock2D",)))
    up = tuple(cfg.get("up_block_types", ("UpDecoderBlock2D",)))
    _expect(set(down) == {"DownEncoderBlock2D"} and set(up) == {"UpDecoderBlock2D"}, where,
            f"unsupported block types {down} / {up}; allowed: DownEncoderBlock2D / UpDecoderBlock2D")
    _expect(len(down) == len(up) == len(channels), where, "down/up block types and block_out_channels differ "
                                                          "in length")
    _expect(cfg.get("act_fn", "silu") == "silu", where, f"act_fn {cfg.get('act_fn')!r} unsupported; allowed: silu")
    _expect(cfg.get("latents_mean") is None and cfg.get("latents_std") is None, where,
            "per-channel latents_mean/latents_std are not supported")
    config = AutoencoderConfig(
        in_channels=int(cfg.get("in_channels", 3)), out_channels=int(cfg.get("out_channels", 3)),
        block_channels=channels, layers_per_block=int(cfg.get("layers_per_block", 1)),
        latent_channels=int(cfg.get("latent_channels", 4)), norm_groups=int(cfg.get("norm_num_groups", 32)),
        kind="kl", mid_attention=bool(cfg.get("mid_block_add_attention", True)),
        quant_conv=bool(cfg.get("use_quant_conv", True)), post_quant_conv=bool(cfg.get("use_post_quant_conv", True)),
    )
    shift = cfg.get("shift_factor")
    return config, float(cfg.get("scaling_factor", 0.18215)), 0.0 if shift is None else float(shift)


def diffusers_config(ae: Autoencoder, sample_size: int = 64) -> dict:
    """The diffusers AutoencoderKL config.json of `ae`."""
    c = ae.config
    n = len(c.block_channels)
    return {
        "_class_name": "AutoencoderKL", "_diffusers_version": DIFFUSERS_VERSION, "act_fn": "silu",
        "block_out_channels": list(c.block_channels), "down_block_types": ["DownEncoderBlock2D"] * n,
        "up_block_types": ["UpDecoderBlock2D"] * n, "in_channels": c.in_channels, "out_channels": c.out_ch,
        "latent_channels": c.latent_channels, "layers_per_block": c.layers_per_block,
        "norm_num_groups": c.norm_groups, "sample_size": sample_size, "scaling_factor": ae.scaling_factor,
        "shift_factor": ae.shift_factor or None, "latents_mean": None, "latents_std": None, "force_upcast": True,
        "use_quant_conv": c.quant_conv, "use_post_quant_conv": c.post_quant_conv,
        "mid_block_add_attention": c.mid_attention,
    }


def from_diffusers_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers AutoencoderKL keys -> noisecraft keys (identity, plus the older attention spellings)."""
    out = {}
    for key, t in state.items():
        parts = key.split(".")
        if len(parts) >= 2 and parts[-2] in _OLD_ATTENTION and "attentions" in parts:
            key = ".".join(parts[:-2] + [_OLD_ATTENTION[parts[-2]], parts[-1]])
        if "attentions" in key and key.endswith(".weight") and t.ndim == 4 and t.shape[-2:] == (1, 1):
            t = t[:, :, 0, 0]  # 1x1 conv attention projection -> linear
        out[key] = t
    return out


def _load_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = folder / WEIGHTS_FILE
    if not path.is_file():
        pickle_note = f" ({PICKLE_WEIGHTS} is a pickle file and is not loaded: unsafe)" \
            if (folder / PICKLE_WEIGHTS).is_file() else ""
        raise CheckpointError(f"{folder}: no {WEIGHTS_FILE}{pickle_note}")
    try:
        return load_file(str(path))
    except Exception as e:  # SafetensorError, OSError
        raise CheckpointError(f"{path} is corrupt or unreadable: {type(e).__name__}: {e}") from None


def load_state_strict(ae: Autoencoder, state: dict[str, torch.Tensor], source) -> Autoencoder:
    """Load `state` into `ae`; every key and shape must match (CheckpointError naming the differences)."""
    expected = ae.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        raise CheckpointError(f"{source}: weights do not fit the autoencoder of its config: missing {missing[:4]} "
                              f"({len(missing)}), unexpected {unexpected[:4]} ({len(unexpected)}), wrong shape "
                              f"{wrong[:4]} ({len(wrong)})")
    ae.load_state_dict(state, strict=True)
    return ae


def load_diffusers_autoencoder(folder) -> Autoencoder:
    """A diffusers AutoencoderKL folder -> noisecraft Autoencoder (float32, eval mode)."""
    folder = Path(folder)
    config, scale, shift = config_from_diffusers(read_diffusers_config(folder), folder / CONFIG_FILE)
    ae = Autoencoder(config, scaling_factor=scale, shift_factor=shift)
    state = {k: v.float() for k, v in from_diffusers_state_dict(_load_weights(folder)).items()}
    return load_state_strict(ae, state, folder).eval()


def to_diffusers_state_dict(ae: Autoencoder) -> dict[str, torch.Tensor]:
    """noisecraft state dict -> AutoencoderKL state dict; "deterministic" gains constant log-variance channels."""
    state = {k: v.detach().cpu().contiguous() for k, v in ae.state_dict().items()}
    if ae.config.kind == "kl":
        return state
    c = ae.config.latent_channels
    w, b = state["encoder.conv_out.weight"], state["encoder.conv_out.bias"]
    state["encoder.conv_out.weight"] = torch.cat([w, torch.zeros_like(w)])          # (2c, C, 3, 3)
    state["encoder.conv_out.bias"] = torch.cat([b, torch.full_like(b, LOGVAR_RANGE[0])])
    if ae.config.quant_conv:
        q, qb = state["quant_conv.weight"], state["quant_conv.bias"]                  # (c, c, 1, 1)
        big = torch.zeros(2 * c, 2 * c, 1, 1, dtype=q.dtype)
        big[:c, :c] = q
        big[c:, c:, 0, 0] = torch.eye(c, dtype=q.dtype)  # logvar passes through unchanged
        state["quant_conv.weight"], state["quant_conv.bias"] = big, torch.cat([qb, torch.zeros_like(qb)])
    return state


def save_diffusers(ae: Autoencoder, folder, *, sample_size: int = 64) -> Path:
    """Write `ae` as a diffusers AutoencoderKL folder (config.json + diffusion_pytorch_model.safetensors),
    loadable with `diffusers.AutoencoderKL.from_pretrained(folder)`; both files written atomically."""
    from safetensors.torch import save

    from noisecraft.files import atomic_write_bytes, atomic_write_json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / WEIGHTS_FILE, save(to_diffusers_state_dict(ae), metadata={"format": "pt"}))
    atomic_write_json(folder / CONFIG_FILE, diffusers_config(ae, sample_size))
    return folder
