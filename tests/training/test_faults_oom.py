"""A simulated out-of-memory error: in training the micro-batch halves (the global batch kept by
accumulation) and the run equals one accumulated from the start; in sampling it is reported as a
NoisecraftError naming the batch size, and the next call works."""

from dataclasses import replace

import pytest
import torch

from noisecraft.checkpoint import load_checkpoint
from noisecraft.errors import NoisecraftError
from noisecraft.presets import get_preset
from noisecraft.training.trainer import Trainer


def tiny(steps=4, **train):
    cfg = get_preset("mnist-tiny")
    return replace(cfg, data=replace(cfg.data, limit=32),
                   train=replace(cfg.train, steps=steps, batch_size=8, warmup_steps=2, checkpoint_every=1000,
                                 log_every=1, **train))


def _limit_batch(net, largest: int, from_step_of=None):
    """Make net.forward raise torch.OutOfMemoryError for batches larger than `largest`."""
    real = net.forward

    def forward(x, *args, **kwargs):
        if x.shape[0] > largest and (from_step_of is None or from_step_of.step >= 2):
            raise torch.OutOfMemoryError(f"simulated: CUDA out of memory for a batch of {x.shape[0]}")
        return real(x, *args, **kwargs)

    net.forward = forward


def test_training_oom_halves_the_micro_batch_and_equals_the_accumulated_run(tmp_path):
    t = Trainer(tiny(), tmp_path / "oom", progress=False)
    _limit_batch(t.net, 2, from_step_of=t)  # steps 0-1 fit; from step 2 on only 2 images fit
    with pytest.warns(RuntimeWarning) as record:
        t.run()
    assert [str(w.message).split(":")[0] for w in record] == ["out of memory at step 2 with a micro-batch of 8",
                                                               "out of memory at step 2 with a micro-batch of 4"]
    assert "continuing with 2 x 4 accumulated (the same global batch of 8)" in str(record[-1].message)
    assert t.accum == 4 and t.bad_steps == 0
    assert t.log[-1]["grad_accum"] == 4
    ref = Trainer(tiny(grad_accum=4), tmp_path / "ref", progress=False)  # accumulated from the start
    ref.run()
    for k, v in ref.net.state_dict().items():
        torch.testing.assert_close(t.net.state_dict()[k], v, rtol=0, atol=1e-6)
    assert [r["loss"] for r in t.log] == pytest.approx([r["loss"] for r in ref.log], abs=1e-6)
    assert load_checkpoint(tmp_path / "oom").state["grad_accum"] == 4  # a resumed run keeps the smaller batch
    resumed = Trainer(tiny(5), tmp_path / "oom", resume=True, progress=False)
    assert resumed.accum == 4


def test_training_oom_that_cannot_be_halved_is_reported(tmp_path):
    t = Trainer(tiny(oom_retry=False), tmp_path, progress=False)
    _limit_batch(t.net, 4)
    with pytest.raises(NoisecraftError, match="micro-batch of 8 per process.*train.grad_accum"):
        t.train_step()
    t = Trainer(tiny(), tmp_path / "b", progress=False)
    _limit_batch(t.net, 0)  # nothing fits
    with pytest.warns(RuntimeWarning):
        with pytest.raises(NoisecraftError, match="micro-batch of 1 per process.*cannot be halved"):
            t.train_step()


def test_sampling_oom_is_reported_and_the_next_call_works(tmp_path):
    from noisecraft.pipelines import load as load_denoiser
    from noisecraft.pipelines import sample_batches as generate
    from noisecraft.schedules import get_sigmas

    Trainer(tiny(1), tmp_path, progress=False).run()
    loaded = load_denoiser(tmp_path)
    sigmas = get_sigmas(loaded.denoiser.schedule, 3, "karras")
    _limit_batch(loaded.denoiser.net, 4)
    with pytest.raises(NoisecraftError, match=r"out of memory sampling a batch of 6 on cpu.*batch_size=3"):
        generate(loaded.denoiser, sigmas, loaded.data_shape, num=6, seed=0, sampler="euler", batch_size=6)
    small = generate(loaded.denoiser, sigmas, loaded.data_shape, num=6, seed=0, sampler="euler", batch_size=3)
    assert small.shape == (6, *loaded.data_shape) and torch.isfinite(small).all()
