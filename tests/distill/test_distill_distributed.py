"""Multi-process distillation: 2 gloo processes on the CPU (torch.multiprocessing spawn, each an ordinary
`Distiller` that joins the group itself) equal a 1-process run over the same global batch.

The global batch of a step is cut into world x grad_accum micro-batches whatever the launch, so 2 ranks x 1
micro-batch and 1 process x 2 micro-batches compute the same per-micro-batch losses; only the order in which the
two gradients are summed differs (DDP's all-reduce mean against accumulation of loss / 2). The comparison is
therefore within float32 rounding (atol 1e-6), not bit for bit; the two ranks' replicas are bit-equal.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from noisecraft.checkpoint import load_checkpoint
from noisecraft.distill.trainer import Distiller, student_config

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")

# cd: a teacher ODE step and the EMA target network; scm: the time tangent of F^- and the adaptive weight w_phi(t),
# which lives outside the DDP module (its gradient averaged by the Distiller)
METHODS = {"cd": (), "scm": ("distill.scm_adaptive=true",)}
STEPS = 3
SMALL = ("train.batch_size=16", "train.threads=1", "train.log_every=1", "train.checkpoint_every=1000",
         "distill.scm_warmup_steps=2")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, teacher: str, out: str) -> None:
    """One rank: the launcher's environment, then one ordinary Distiller per method in the same group."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from noisecraft.training.distributed import teardown

    try:
        for method, extra in METHODS.items():
            d = Distiller(student_config(teacher, method, steps=STEPS, overrides=SMALL + extra),
                          os.path.join(out, method), progress=False)
            assert d.dist.world == world
            d.run()
            save_file({k: v.contiguous() for k, v in d.net.state_dict().items()},
                      os.path.join(out, method, f"rank{rank}.st"))
    finally:
        teardown()


def test_two_ranks_equal_one_process_with_the_same_global_batch(teacher, tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(teacher), str(tmp_path / "ddp")), nprocs=2, join=True)
    for method, extra in METHODS.items():
        ddp = tmp_path / "ddp" / method
        r0, r1 = load_file(ddp / "rank0.st"), load_file(ddp / "rank1.st")
        assert all(torch.equal(r0[k], r1[k]) for k in r0), method  # the replicas never drift apart
        ref = Distiller(student_config(teacher, method, steps=STEPS, overrides=SMALL + extra + ("train.grad_accum=2",)),
                        tmp_path / "one" / method, progress=False)
        ref.run()
        ckpt = load_checkpoint(ddp)
        assert ckpt.state["world_size"] == 2 and ckpt.state["step"] == STEPS
        assert ckpt.state["data_hash"] == ref.data_hash  # the same global batches in the same order
        for part, want in (("model", ref.net.state_dict()), ("ema", ref.ema.state_dict())):
            got = getattr(ckpt, part)
            for name, value in want.items():
                torch.testing.assert_close(got[name], value, rtol=0, atol=1e-6, msg=f"{method} {part} {name}")
        slot = ref.target if ref.target is not None else ref.weight  # the checkpoint's slot "0"
        for name, value in slot.state_dict().items():  # cd's target network theta^-, scm's w_phi(t)
            torch.testing.assert_close(ckpt.phema["0"][name], value, rtol=0, atol=1e-6, msg=f"{method} {name}")
        for i, per_param in ref.optimizer.state_dict()["state"].items():
            for key, want in per_param.items():
                torch.testing.assert_close(ckpt.optim[f"optim.{i}.{key}"], torch.as_tensor(want), rtol=0, atol=1e-6)
        assert [r["loss"] for r in _log(ddp)] == pytest.approx([r["loss"] for r in ref.log], abs=1e-6)
        assert (method == "cd") == (ref.target is not None) and (method == "scm") == (ref.weight is not None)


def _log(run_dir):
    import json

    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
