"""The files of diffusers folders: JSON configs, safetensors weights (pickle refused unopened), `from_pretrained` with
local files only, and the noise schedule table diffusers' schedulers compute. Shared by the folder loader
(`diffusers_load`) and the parts it attaches (`diffusers_controlnet`, `diffusers_inpaint`, `diffusers_upscale`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from noisecraft.errors import CheckpointError

MODEL_INDEX, CONFIG, SCHEDULER_CONFIG = "model_index.json", "config.json", "scheduler_config.json"
BETA_SCHEDULES = {"linear": "linear", "scaled_linear": "scaled_linear", "squaredcos_cap_v2": "cosine",
                  "sigmoid": "sigmoid"}  # diffusers' name -> noisecraft's
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def read_json(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read it as JSON: {type(e).__name__}: {str(e).splitlines()[0]}") \
            from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def check_weights(folder: Path) -> None:
    """The folder holds safetensors weights that open (headers checked, so a truncated file is refused here);
    a folder with pickle weights only is refused without unpickling them."""
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        pickles = sorted(f.name for f in folder.iterdir() if f.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise CheckpointError(f"{folder}: only pickle weights ({', '.join(pickles)}), which noisecraft does not "
                                  f"load (unpickling can run code); save the model with safetensors "
                                  f"(save_pretrained(..., safe_serialization=True))")
        raise CheckpointError(f"{folder}: no *.safetensors weights")
    from safetensors import safe_open

    for f in files:
        try:
            with safe_open(str(f), framework="pt") as st:
                st.keys()
        except Exception as e:  # SafetensorError, OSError: truncated, corrupt, unreadable
            raise CheckpointError(f"{f} is truncated or corrupt: {type(e).__name__}: {str(e).splitlines()[0]}") \
                from None


def from_pretrained(cls, folder: Path, what: str, **kwargs):
    """cls.from_pretrained(folder), local files and safetensors only, errors as one-line CheckpointErrors."""
    check_weights(folder)
    try:
        return cls.from_pretrained(str(folder), local_files_only=True, use_safetensors=True, **kwargs)
    except Exception as e:  # diffusers / transformers raise OSError, ValueError, EnvironmentError, ...
        raise CheckpointError(f"{folder}: cannot load the {what}: {type(e).__name__}: "
                              f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}") from None


def require(ok: bool, where, message: str) -> None:
    if not ok:
        raise CheckpointError(f"{where}: {message}")


def diffusers_alphas_cumprod(cfg: dict, where="scheduler_config.json") -> torch.Tensor:
    """alphas_cumprod (float64) exactly as diffusers' schedulers compute them: betas in float32 from
    trained_betas or beta_schedule (linear, scaled_linear = linear in sqrt(beta), squaredcos_cap_v2 = Nichol &
    Dhariwal 2021 Eq. 17 with beta <= 0.999, sigmoid), then their float32 cumulative product."""
    require(not cfg.get("rescale_betas_zero_snr"), where, "rescale_betas_zero_snr (zero terminal SNR, sigma_max "
             "= inf) is not supported")
    T = int(cfg.get("num_train_timesteps", 1000))
    start, end = float(cfg.get("beta_start", 1e-4)), float(cfg.get("beta_end", 0.02))
    if cfg.get("trained_betas") is not None:
        betas = torch.tensor(cfg["trained_betas"], dtype=torch.float32)
    else:
        kind = cfg.get("beta_schedule", "linear")
        require(kind in BETA_SCHEDULES, where, f"beta_schedule {kind!r} is not supported; supported: "
                 f"{', '.join(BETA_SCHEDULES)} (or trained_betas)")
        if kind == "linear":
            betas = torch.linspace(start, end, T, dtype=torch.float32)
        elif kind == "scaled_linear":
            betas = torch.linspace(start**0.5, end**0.5, T, dtype=torch.float32) ** 2
        elif kind == "sigmoid":
            betas = torch.sigmoid(torch.linspace(-6, 6, T)) * (end - start) + start
        else:
            def abar(t):
                return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

            betas = torch.tensor([min(1 - abar((i + 1) / T) / abar(i / T), 0.999) for i in range(T)],
                                 dtype=torch.float32)
    require(betas.ndim == 1 and len(betas) >= 2 and bool(((betas > 0) & (betas < 1)).all()), where,
             "betas must be a list of at least 2 values in (0, 1)")
    return torch.cumprod(1.0 - betas, dim=0).double()
