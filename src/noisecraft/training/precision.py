"""Numerics of one optimiser step: the optimiser, autocast, the fp16 grad scaler, non-finite steps,
out-of-memory retries.

- Autocast: train.bf16 or train.fp16 runs the forward in that dtype; the master weights stay float32.
- fp16 gradients that overflow are the grad scaler's business: it skips the update and lowers its scale
  (`OVERFLOW`, counted apart from bad steps). Any other non-finite loss or gradient skips the update and
  is a bad step; `max_bad_steps` bad steps in a row stop the run (`raise_if_diverged`).
- Out of memory: a single-process run keeps its global batch and halves the micro-batch, doubling the
  gradient accumulation (`halved_micro_batch`), when train.oom_retry is on.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from noisecraft.errors import NoisecraftError, TrainingDiverged

STEPPED, OVERFLOW = "stepped", "overflow"  # outcomes of guarded_update besides "what was non-finite"


def autocast_dtype(train) -> torch.dtype | None:
    """The forward's autocast dtype for a TrainConfig: bfloat16 (bf16), float16 (fp16) or None (float32)."""
    return torch.bfloat16 if train.bf16 else torch.float16 if train.fp16 else None


def fast_bf16(device) -> bool:
    """Whether bfloat16 matrix arithmetic is native on `device`: a CUDA GPU that supports bfloat16, or an x86 CPU
    with AMX tiles (Sapphire Rapids and later), where oneDNN's bfloat16 convolutions run several times faster than
    float32 ones. Elsewhere (AVX2-only CPUs, Apple silicon) bfloat16 is emulated on the CPU and slower."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # torch >= 2.3
        return bool(probe()) if probe is not None else False
    return False


def autocast(device: torch.device, train):
    """torch.autocast in `autocast_dtype(train)` on device's type (disabled for float32)."""
    dtype = autocast_dtype(train)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def grad_scaler(device: torch.device, train) -> torch.amp.GradScaler:
    """The loss scaler of fp16 training (a no-op scaler otherwise)."""
    return torch.amp.GradScaler(device.type, enabled=train.fp16)


def adamw(params, train, device: torch.device) -> torch.optim.AdamW:
    """The AdamW optimiser of a TrainConfig (lr, adam_betas, weight_decay). train.fused_adam: None -> the
    fused kernel on CUDA (torch's default elsewhere); true -> fused on any device torch has it for (CUDA,
    CPU, MPS, XPU); false -> never."""
    fused = train.fused_adam
    if fused is None:
        fused = True if device.type == "cuda" else None
    return torch.optim.AdamW(params, lr=train.lr, betas=train.adam_betas, weight_decay=train.weight_decay,
                             fused=fused or None)


def guarded_update(optimizer, scaler, net: torch.nn.Module, loss: torch.Tensor, grad_clip: float | None) -> str:
    """Unscale, clip by the global gradient norm, and step unless something is non-finite.

    Returns STEPPED; OVERFLOW when fp16 gradients overflowed (the scaler skipped the step and lowered its
    scale); otherwise what was non-finite, "loss" or "gradient (first in NAME)", with no update made."""
    scaler.unscale_(optimizer)  # (no-op without fp16)
    params = [p for p in net.parameters() if p.grad is not None]
    norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    full = norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # FSDP: a DTensor
    finite_loss, finite_grad = bool(torch.isfinite(loss)), bool(torch.isfinite(full))
    if finite_grad and grad_clip:  # (clipping by a non-finite norm would turn every gradient NaN)
        torch.nn.utils.clip_grads_with_norm_(params, grad_clip, norm)
    if finite_loss and not finite_grad and scaler.is_enabled():
        scaler.step(optimizer)  # finds the inf and skips
        scaler.update()  # lowers the scale
        return OVERFLOW
    if not (finite_loss and finite_grad):
        where = "loss" if not finite_loss else f"gradient (first in {first_nonfinite_grad(net)})"
        if scaler.is_enabled():
            scaler.update()
        return where
    scaler.step(optimizer)
    scaler.update()
    return STEPPED


def first_nonfinite_grad(net: torch.nn.Module) -> str | None:
    """The name of the first parameter whose gradient (this process's shard) holds a NaN or inf."""
    for name, p in net.named_parameters():
        g = p.grad.to_local() if hasattr(p.grad, "to_local") else p.grad
        if g is not None and not bool(torch.isfinite(g).all()):
            return name
    return None


def raise_if_diverged(consecutive: int, limit: int, *, step: int, out_dir: Path, last: str,
                      hint: str = "try a lower train.lr") -> None:
    """TrainingDiverged once `consecutive` bad (non-finite) steps in a row reach `limit`."""
    if consecutive >= limit:
        raise TrainingDiverged(f"{consecutive} consecutive non-finite losses/gradients at step {step} (last: "
                               f"{last}); stopped. The last good checkpoint in {out_dir} is intact; {hint}.")


def halved_micro_batch(error: Exception, *, step: int, accum: int, world: int, train, device: torch.device) -> int:
    """After an out-of-memory error: the gradient accumulation that halves the micro-batch and keeps the
    global batch (with a warning), or a NoisecraftError saying why that is not possible."""
    micro = train.batch_size // (world * accum)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if not train.oom_retry or world > 1 or micro < 2 or micro % 2:
        why = "automatic halving is for single-process runs" if world > 1 else \
            "train.oom_retry is off" if not train.oom_retry else f"{micro} cannot be halved"
        raise NoisecraftError(f"out of memory at step {step} with a micro-batch of {micro} per process "
                              f"({why}); lower train.batch_size or raise train.grad_accum (now {accum}). "
                              f"{type(error).__name__}: {error}") from None
    warnings.warn(f"out of memory at step {step} with a micro-batch of {micro}: continuing with "
                  f"{micro // 2} x {2 * accum} accumulated (the same global batch of {train.batch_size})",
                  RuntimeWarning, stacklevel=2)
    return 2 * accum
