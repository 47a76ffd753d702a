"""Moving averages of the weights during training.

- The classic EMA: ema <- beta ema + (1 - beta) theta after every applied update, with the warm-up
  beta_s = min(train.ema_decay, (1 + s) / (10 + s)) so early averages forget the initialisation quickly.
- Post-hoc EMA (Karras et al. 2024, section 3; the algorithm is in posthoc_ema.py): the power-function
  profiles are updated with the EMA and snapshotted to DIR/phema/ every train.phema_every steps (default
  train.checkpoint_every) and at the end, for any EMA length to be reconstructed after training.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from noisecraft.training import distributed
from noisecraft.training.posthoc_ema import PowerEMA, write_snapshot


def ema_copy(net: nn.Module) -> nn.Module:
    """A frozen copy of `net` (no gradients, eval mode) to hold its moving average."""
    return copy.deepcopy(net).requires_grad_(False).eval()


def ema_decay(step: int, target: float) -> float:
    """beta of the update after step `step`: min(target, (1 + step) / (10 + step))."""
    return min(target, (1 + step) / (10 + step))


@torch.no_grad()
def update_ema(ema: nn.Module, net: nn.Module, decay: float) -> None:
    """ema <- decay ema + (1 - decay) net for the parameters (this process's shards); buffers are copied."""
    w = 1 - decay
    averaged, live = distributed.local_tensors(ema.parameters()), distributed.local_tensors(net.parameters())
    torch._foreach_lerp_(averaged, live, w)
    for b_ema, b in zip(ema.buffers(), net.buffers()):
        b_ema.copy_(b)


def power_ema(net: nn.Module, train) -> PowerEMA | None:
    """The post-hoc EMA profiles of a TrainConfig (train.phema_sigma_rels), or None when there are none."""
    return PowerEMA(net, train.phema_sigma_rels) if train.phema_sigma_rels else None


def phema_every(train) -> int:
    """Steps between post-hoc EMA snapshots: train.phema_every, else train.checkpoint_every."""
    return train.phema_every or train.checkpoint_every


def snapshot_phema(phema: PowerEMA, out_dir: Path, step: int, dist, *, fsdp: bool) -> None:
    """Write the post-hoc EMA profiles at `step` to out_dir/phema/ (rank 0; collective under FSDP)."""
    states = [distributed.full_model_state(m) if fsdp else m.state_dict() for m in phema.models]
    try:
        if dist.is_main:
            write_snapshot(out_dir, step, states, phema.meta())
    finally:
        dist.barrier()
