"""Determinism: `noisecraft sample` with the same seed writes byte-identical PNGs in two separate CPU
processes, and sample i of a batch equals the same seed generated alone (per-sample generators) to 1e-5."""

import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from noisecraft.presets import get_preset
from noisecraft.training.trainer import Trainer


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("det")
    cfg = get_preset("mnist-tiny")
    cfg = replace(cfg, data=replace(cfg.data, limit=32),
                  train=replace(cfg.train, steps=3, batch_size=8, warmup_steps=1, checkpoint_every=1000))
    Trainer(cfg, out, progress=False).run()
    return out


def test_same_seed_same_png_bytes_across_processes(run_dir, tmp_path):
    outs = []
    for i in range(2):
        out = tmp_path / f"s{i}.png"
        cmd = [sys.executable, "-m", "noisecraft", "sample", "--checkpoint", str(run_dir), "--sampler", "euler_a",
               "--steps", "4", "--num", "6", "--seed", "11", "--out", str(out)]
        proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]


@pytest.mark.parametrize("sampler", ["heun", "euler_a", "dpmpp_2m"])
def test_sample_i_of_a_batch_equals_it_alone(run_dir, sampler):
    from noisecraft.pipelines import load as load_denoiser
    from noisecraft.pipelines import sample_batches as generate
    from noisecraft.schedules import get_sigmas

    loaded = load_denoiser(run_dir)
    sigmas = get_sigmas(loaded.denoiser.schedule, 5, "karras")
    batch = generate(loaded.denoiser, sigmas, loaded.data_shape, num=6, seed=20, sampler=sampler, batch_size=6)
    for i in (0, 3, 5):
        alone = generate(loaded.denoiser, sigmas, loaded.data_shape, num=1, seed=20 + i, sampler=sampler)
        torch.testing.assert_close(batch[i:i + 1], alone, rtol=0, atol=1e-5)
    split = generate(loaded.denoiser, sigmas, loaded.data_shape, num=6, seed=20, sampler=sampler, batch_size=4)
    torch.testing.assert_close(split, batch, rtol=0, atol=1e-5)
