"""Post-hoc EMA (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion Models",
EDM2, sec. 3 and app. C).

Notation (the paper's): t is training time (here: optimiser steps taken), theta(t) the weights, and a
power-function EMA with exponent gamma averages them with the profile

    p_{t,gamma}(tau) = (gamma + 1) tau^gamma / t^(gamma + 1),   0 <= tau <= t         (eq. 3 / app. C.1)

i.e. theta_hat_gamma(t) = int_0^t p_{t,gamma}(tau) theta(tau) dtau. Its relative standard deviation
(width of the profile relative to t) is

    sigma_rel = sqrt((gamma + 1) / ((gamma + 2)^2 (gamma + 3)))                       (app. C.1, eq. 56)

and the discrete update after step t (t = 1, 2, ...) is theta_hat <- beta theta_hat + (1 - beta) theta
with beta = (1 - 1/t)^(gamma + 1) (app. C.2, eq. 61; at t = 1 the EMA is the weights themselves).

During training `PowerEMA` tracks a few sigma_rel (EDM2 uses 0.05 and 0.10) and writes their values as
snapshots every N steps (DIR/phema/phema-<step>.safetensors). Afterwards any sigma_rel at any time
t_out is reconstructed as a linear combination sum_i x_i theta_hat_i of the snapshots, with x the
least-squares fit of the target profile by the snapshot profiles in L2 (app. C.3, eqs. 63-67):

    A x = b,   A_ij = <p_i, p_j>,   b_i = <p_i, p_out>,

using the closed-form inner product of two power-function profiles (`profile_dot`). As in EDM2's
reference code the solution is normalised to sum to one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from noisecraft.errors import CheckpointError, NoisecraftError

SNAPSHOT_DIR = "phema"
SNAPSHOT_FORMAT = "noisecraft.phema"
_SNAPSHOT_RE = re.compile(r"phema-(\d{9})\.safetensors$")
SIGMA_REL_MAX = 12 ** -0.5  # sigma_rel at gamma = 0 (uniform average); larger needs gamma < 0


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """gamma with sigma_rel(gamma) = sigma_rel: the largest real root of the cubic
    gamma^3 + 7 gamma^2 + (16 - s^-2) gamma + (12 - s^-2) = 0 (eq. 56 squared and rearranged)."""
    if not 0 < sigma_rel < SIGMA_REL_MAX:
        raise NoisecraftError(f"sigma_rel must be in (0, {SIGMA_REL_MAX:.4f}), got {sigma_rel}")
    t = sigma_rel ** -2
    return float(np.roots([1.0, 7.0, 16.0 - t, 12.0 - t]).real.max())


def gamma_to_sigma_rel(gamma: float) -> float:
    return float(np.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3))))


def power_beta(gamma: float, t: int) -> float:
    """Decay of the discrete power-function EMA after step t >= 1: (1 - 1/t)^(gamma + 1)."""
    return (1.0 - 1.0 / t) ** (gamma + 1.0)


def profile(t: float, gamma: float, tau: np.ndarray) -> np.ndarray:
    """p_{t,gamma}(tau) = (gamma + 1) tau^gamma / t^(gamma + 1) on [0, t], 0 beyond."""
    tau = np.asarray(tau, dtype=np.float64)
    return np.where(tau <= t, (gamma + 1) * np.clip(tau, 0, None) ** gamma / t ** (gamma + 1), 0.0)


def profile_dot(t_a, gamma_a, t_b, gamma_b) -> np.ndarray:
    """<p_a, p_b> = int_0^min(t_a, t_b) p_a p_b dtau, in closed form (broadcasts):

        (gamma_a + 1)(gamma_b + 1) / (gamma_a + gamma_b + 1) * min^(gamma_a + gamma_b + 1)
            / (t_a^(gamma_a + 1) t_b^(gamma_b + 1)),

    written as ratio^(gamma of the longer profile) / max so that no power overflows."""
    t_a, g_a, t_b, g_b = (np.asarray(v, dtype=np.float64) for v in (t_a, gamma_a, t_b, gamma_b))
    ratio = t_a / t_b
    exponent = np.where(t_a < t_b, g_b, -g_a)
    return (g_a + 1) * (g_b + 1) * ratio ** exponent / ((g_a + g_b + 1) * np.maximum(t_a, t_b))


def solve_coefficients(t_in, gamma_in, t_out: float, gamma_out: float) -> np.ndarray:
    """x minimising || sum_i x_i p_{t_i,gamma_i} - p_{t_out,gamma_out} ||_2 (normalised to sum 1)."""
    t_in, gamma_in = np.asarray(t_in, dtype=np.float64), np.asarray(gamma_in, dtype=np.float64)
    A = profile_dot(t_in[:, None], gamma_in[:, None], t_in[None, :], gamma_in[None, :])  # (N, N)
    b = profile_dot(t_in, gamma_in, t_out, gamma_out)  # (N,)
    x = np.linalg.lstsq(A, b, rcond=None)[0]
    return x / x.sum()


class PowerEMA:
    """Power-function EMAs of `net`'s parameters for each sigma_rel (buffers are copied)."""

    def __init__(self, net: nn.Module, sigma_rels):
        import copy

        self.sigma_rels = tuple(float(s) for s in sigma_rels)
        self.gammas = tuple(sigma_rel_to_gamma(s) for s in self.sigma_rels)
        self.models = [copy.deepcopy(net).requires_grad_(False).eval() for _ in self.sigma_rels]

    @torch.no_grad()
    def update(self, net: nn.Module, t: int) -> None:
        """After optimiser step t (1-based): theta_hat <- lerp(theta_hat, theta, 1 - beta_gamma(t))."""
        from noisecraft.training.distributed import local_tensors

        live = local_tensors(net.parameters())
        for gamma, model in zip(self.gammas, self.models):
            torch._foreach_lerp_(local_tensors(model.parameters()), live, 1.0 - power_beta(gamma, t))
            for b_ema, b in zip(model.buffers(), net.buffers()):
                b_ema.copy_(b)

    def meta(self) -> dict:
        return {"sigma_rels": list(self.sigma_rels), "gammas": list(self.gammas)}


def snapshot_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / SNAPSHOT_DIR / f"phema-{step:09d}.safetensors"


def write_snapshot(run_dir: Path, step: int, states: list[dict[str, torch.Tensor]], meta: dict) -> Path:
    """One file per snapshot time: tensors "<k>.<name>" for tracked profile k, metadata step/gammas."""
    from safetensors.torch import save

    from noisecraft.files import atomic_write_bytes

    tensors = {f"{k}.{name}": v.detach().cpu().contiguous() for k, sd in enumerate(states) for name, v in sd.items()}
    metadata = {"format": SNAPSHOT_FORMAT, "step": str(step), **{k: json.dumps(v) for k, v in meta.items()}}
    path = snapshot_path(run_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save(tensors, metadata=metadata))
    return path


def list_snapshots(run_dir: Path) -> list[tuple[int, Path]]:
    folder = Path(run_dir) / SNAPSHOT_DIR
    found = [(int(m.group(1)), p) for p in folder.glob("phema-*.safetensors") if (m := _SNAPSHOT_RE.search(p.name))]
    return sorted(found)


def _read_snapshot(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if meta.get("format") != SNAPSHOT_FORMAT:
            raise CheckpointError(f"{path} is not a noisecraft post-hoc EMA snapshot")
        info = {"step": int(meta["step"]), "gammas": json.loads(meta["gammas"]),
                "sigma_rels": json.loads(meta["sigma_rels"])}
    except CheckpointError:
        raise
    except Exception as e:  # corrupt file
        raise CheckpointError(f"{path} is corrupt or unreadable: {type(e).__name__}: {e}") from None
    return info, tensors


def reconstruct(run_dir: Path, sigma_rel: float, step: int | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """The EMA with `sigma_rel` at `step` (default: the last snapshot) from DIR's snapshots.

    Returns (state dict, info with the snapshots used and their coefficients)."""
    snaps = [(s, p) for s, p in list_snapshots(run_dir) if step is None or s <= step]
    if not snaps:
        raise CheckpointError(f"no post-hoc EMA snapshots in {Path(run_dir) / SNAPSHOT_DIR}"
                              + (f" at or before step {step}" if step is not None else "")
                              + "; train with train.phema_sigma_rels=[0.05,0.1] to record them")
    t_out = step if step is not None else snaps[-1][0]
    gamma_out = sigma_rel_to_gamma(sigma_rel)
    entries = []  # (t, gamma, path, k)
    for s, path in snaps:
        entries += [(s, g, path, k) for k, g in enumerate(_read_header(path)["gammas"])]
    x = solve_coefficients([e[0] for e in entries], [e[1] for e in entries], t_out, gamma_out)
    by_path: dict[Path, dict[int, float]] = {}
    for (_, _, path, k), coef in zip(entries, x):
        by_path.setdefault(path, {})[k] = float(coef)
    out: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    for path, coefs in by_path.items():  # one snapshot file in memory at a time
        _, tensors = _read_snapshot(path)
        for name, v in tensors.items():
            idx, _, key = name.partition(".")
            if int(idx) not in coefs:
                continue
            dtypes[key] = v.dtype
            if v.is_floating_point():  # sum in float64, cast back at the end
                out[key] = out.get(key, 0) + v.double() * coefs[int(idx)]
            else:  # integer buffers (counters): the latest value
                out[key] = v
    state = {k: v.to(dtypes[k]) for k, v in out.items()}
    info = {"sigma_rel": sigma_rel, "gamma": gamma_out, "step": t_out,
            "snapshots": [{"step": e[0], "gamma": e[1], "coefficient": float(c)} for e, c in zip(entries, x)]}
    return state, info


def _read_header(path: Path) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != SNAPSHOT_FORMAT:
            raise CheckpointError(f"{path} is not a noisecraft post-hoc EMA snapshot")
        return {"gammas": json.loads(meta["gammas"]), "step": int(meta["step"])}
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"{path} is corrupt or unreadable: {type(e).__name__}: {e}") from None



def write_posthoc_checkpoint(run_dir, out_dir, sigma_rel: float, step: int | None = None) -> dict:
    """A normal checkpoint in `out_dir`: run_dir's checkpoint with its EMA weights replaced by the post-hoc
    reconstruction for `sigma_rel` (its state records the snapshots and coefficients used)."""
    from noisecraft.checkpoint import load_checkpoint, save_checkpoint, unflatten_optimizer
    from noisecraft.files import atomic_write_json

    ckpt = load_checkpoint(run_dir)  # refuses anything but a noisecraft safetensors checkpoint
    ema, info = reconstruct(Path(ckpt.path).parent, sigma_rel, step)
    if set(ema) != set(ckpt.ema) or any(ema[k].shape != ckpt.ema[k].shape for k in ema):
        raise CheckpointError(f"the post-hoc EMA snapshots in {run_dir} do not fit its checkpoint's network")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {**ckpt.state, "posthoc_ema": info}
    save_checkpoint(out_dir, config=ckpt.config, state=state, model=ckpt.model, ema=ema,
                    optimizer=unflatten_optimizer(ckpt.optim, ckpt.optim_groups))
    atomic_write_json(out_dir / "config.json", ckpt.config)
    return info
