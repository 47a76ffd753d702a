"""Data-parallel training with 2 gloo processes on the CPU: DDP and FSDP2 equal a 1-process run with
gradient accumulation over the same global batch; a killed 2-rank torchrun run resumes."""

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from noisecraft.checkpoint import load_checkpoint
from noisecraft.config import from_dict, to_dict
from noisecraft.presets import get_preset
from noisecraft.runconfig import RunConfig
from noisecraft.training.distributed import micro_slice, outer_blocks
from noisecraft.training.trainer import Trainer

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")


def tiny(steps=4, **train):
    cfg = get_preset("mnist-tiny")
    return replace(cfg, data=replace(cfg.data, limit=32),
                   train=replace(cfg.train, steps=steps, batch_size=8, warmup_steps=2, checkpoint_every=1000,
                                 log_every=1, threads=1, **train))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, out, cfg_dict):
    """One rank: the launcher's environment, then an ordinary Trainer (it joins the group itself)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from noisecraft.training.distributed import teardown

    t = Trainer(from_dict(RunConfig, cfg_dict), out, progress=False)
    t.run()
    if not t.config.train.fsdp:  # every rank's replica, to compare
        save_file({k: v.contiguous() for k, v in t.net.state_dict().items()}, os.path.join(out, f"rank{rank}.st"))
    teardown()


def _spawn(cfg, out, world=2):
    mp.spawn(_worker, args=(world, _free_port(), str(out), to_dict(cfg)), nprocs=world, join=True)


def _assert_close_to(ckpt, ref: Trainer, atol=1e-6):
    for name, want in ref.net.state_dict().items():
        torch.testing.assert_close(ckpt.model[name], want, rtol=0, atol=atol, msg=name)
    for name, want in ref.ema.state_dict().items():
        torch.testing.assert_close(ckpt.ema[name], want, rtol=0, atol=atol, msg=name)
    opt = ref.optimizer.state_dict()["state"]
    for i, per_param in opt.items():
        for key, want in per_param.items():
            torch.testing.assert_close(ckpt.optim[f"optim.{i}.{key}"], torch.as_tensor(want), rtol=0, atol=atol)


def test_micro_batches_partition_the_global_batch():
    rows = [micro_slice(12, c, 4) for c in range(4)]
    assert [(r.start, r.stop) for r in rows] == [(0, 3), (3, 6), (6, 9), (9, 12)]
    with pytest.raises(ValueError, match="divisible"):
        micro_slice(10, 0, 4)


def test_blocks_found_for_sharding_and_checkpointing():
    from noisecraft.models import build_model

    cfg = get_preset("mnist-tiny")
    names = {type(b).__name__ for b in outer_blocks(build_model(cfg.model, cfg.network))}
    assert names == {"EmbedSequential"}
    toy = get_preset("toy2d")
    assert {type(b).__name__ for b in outer_blocks(build_model(toy.model, toy.network))} == {"_ResidualBlock"}


def test_ddp_two_ranks_equal_one_process_with_accumulation(tmp_path):
    """2 ranks x 2 micro-batches of 2 (DDP no_sync on the first) == 1 process x 4 micro-batches of 2."""
    _spawn(tiny(grad_accum=2), tmp_path / "ddp")
    r0, r1 = load_file(tmp_path / "ddp" / "rank0.st"), load_file(tmp_path / "ddp" / "rank1.st")
    for name in r0:
        assert torch.equal(r0[name], r1[name]), name  # the replicas never drift apart
    ref = Trainer(tiny(grad_accum=4), tmp_path / "one", progress=False)
    ref.run()
    ckpt = load_checkpoint(tmp_path / "ddp")
    _assert_close_to(ckpt, ref)
    assert ckpt.state["data_hash"] == ref.data_hash  # the same global batches in the same order
    assert ckpt.state["world_size"] == 2
    logged = [r["loss"] for r in ref.log]
    assert [r["loss"] for r in load_checkpoint_log(tmp_path / "ddp")] == pytest.approx(logged, abs=1e-6)


def load_checkpoint_log(run_dir):
    import json

    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow  # ~40 s on the loaded 2-core machine (two spawned processes); run with -m slow
def test_fsdp2_two_ranks_save_one_consolidated_checkpoint(tmp_path):
    """fully_shard over 2 ranks trains like 1 process (<= 1e-6) and writes one ordinary checkpoint that a
    single process resumes from."""
    _spawn(tiny(3, fsdp=True), tmp_path / "fsdp")
    ref = Trainer(tiny(3, grad_accum=2), tmp_path / "one", progress=False)
    ref.run()
    ckpt = load_checkpoint(tmp_path / "fsdp")
    assert set(ckpt.model) == set(ref.net.state_dict())
    _assert_close_to(ckpt, ref)
    resumed = Trainer(tiny(4, grad_accum=2), tmp_path / "fsdp", resume=True, progress=False)  # one process
    assert resumed.step == 3 and not resumed.config.train.fsdp
    resumed.run()
    ref.config = replace(ref.config, train=replace(ref.config.train, steps=4))
    ref.run()
    _assert_close_to(load_checkpoint(tmp_path / "fsdp"), ref)
    assert not [p for p in (tmp_path / "fsdp").iterdir() if p.name.endswith(".tmp")]


def test_fsdp_without_a_launch_is_a_config_error(tmp_path):
    from noisecraft.errors import ConfigError

    with pytest.raises(ConfigError, match="torchrun"):
        Trainer(tiny(1, fsdp=True), tmp_path, progress=False)


def _torchrun(out, steps, *extra):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), "-m", "noisecraft", "train", "--preset", "toy2d", "--out", str(out), "--steps",
           str(steps), "data.limit=256", "train.batch_size=16", "train.warmup_steps=5", "train.checkpoint_every=3",
           "train.threads=1", "sample.num=16", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_torchrun_kill_and_resume_two_ranks(tmp_path):
    """`torchrun --nproc_per_node 2 -m noisecraft train`, SIGKILLed after its first checkpoints, resumed by
    torchrun: the final weights, EMA and optimizer state equal a 1-process run (<= 1e-6)."""
    out, steps = tmp_path / "run", 60
    proc = _torchrun(out, steps)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        ckpt = out / "checkpoint.safetensors"
        if ckpt.is_file() and load_checkpoint(out).state["step"] >= 6:
            break
        time.sleep(0.05)
    if proc.poll() is not None:
        pytest.fail(f"torchrun ended before it was killed:\n{proc.stdout.read().decode()[-3000:]}")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(out).state["step"]
    assert 6 <= killed_at < steps
    proc = _torchrun(out, steps, "--resume")
    log = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, log[-3000:]
    cfg = get_preset("toy2d")
    cfg = replace(cfg, data=replace(cfg.data, limit=256),
                  train=replace(cfg.train, steps=steps, batch_size=16, warmup_steps=5, checkpoint_every=1000,
                                grad_accum=2, threads=1))
    ref = Trainer(cfg, tmp_path / "one", progress=False)
    ref.run()
    final = load_checkpoint(out)
    assert final.state["step"] == steps and final.state["data_hash"] == ref.data_hash
    _assert_close_to(final, ref)
