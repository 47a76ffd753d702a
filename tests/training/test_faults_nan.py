"""NaN/inf injected into a batch or a gradient: the step is skipped and counted; persistent NaN stops with
a diagnostic and leaves the last good checkpoint intact; a checkpoint never holds NaN."""

from dataclasses import replace

import pytest
import torch

from noisecraft.checkpoint import CHECKPOINT_FILE, load_checkpoint
from noisecraft.errors import CheckpointError, TrainingDiverged
from noisecraft.presets import get_preset
from noisecraft.training.trainer import Trainer


def tiny(steps=6, **train):
    cfg = get_preset("mnist-tiny")
    return replace(cfg, data=replace(cfg.data, limit=32),
                   train=replace(cfg.train, steps=steps, batch_size=8, warmup_steps=2, checkpoint_every=2,
                                 log_every=1, **train))


def _weights(t):
    return {k: v.clone() for k, v in t.net.state_dict().items()}


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_poisoned_batch_is_skipped_and_counted(value, tmp_path):
    t = Trainer(tiny(), tmp_path, progress=False)
    t.train_step()
    bad_item = int(t.batch_indices(1)[3])  # an image of step 1's batch
    t.images[bad_item, 0, 5, 5] = value
    before, ema_before = _weights(t), {k: v.clone() for k, v in t.ema.state_dict().items()}
    t.train_step()
    assert t.bad_steps == 1 and t.step == 2
    assert all(torch.equal(v, before[k]) for k, v in t.net.state_dict().items())  # no update
    assert all(torch.equal(v, ema_before[k]) for k, v in t.ema.state_dict().items())  # EMA untouched too
    t.train_step()  # step 2's batch is clean: training goes on
    assert t.bad_steps == 1 and t.consecutive_bad == 0
    assert all(torch.isfinite(v).all() for v in t.net.state_dict().values())


def test_poisoned_gradient_is_skipped_and_named(tmp_path):
    t = Trainer(tiny(max_bad_steps=2), tmp_path, progress=False)
    name, param = next((n, p) for n, p in t.net.named_parameters() if n.endswith("conv_in.weight"))
    hook = param.register_hook(lambda g: g * float("nan"))
    t.train_step()
    assert t.bad_steps == 1
    with pytest.raises(TrainingDiverged, match=f"non-finite gradient \\(first in {name}\\)"):
        t.train_step()
    hook.remove()


def test_persistent_nan_stops_with_the_last_good_checkpoint_intact(tmp_path):
    """NaN data from step 3 on (checkpoints every 2 steps): steps 3-5 are skipped, the run stops with a
    diagnostic, and the last checkpoint (step 4, one skipped step) holds exactly the weights of 3 good steps."""
    t = Trainer(tiny(20, max_bad_steps=3), tmp_path / "run", progress=False)
    real_batch = Trainer.batch

    def poisoned(self, step, gen):
        x0, cond = real_batch(self, step, gen)
        return (x0 * float("nan") if step >= 3 else x0), cond

    t.batch = poisoned.__get__(t)
    with pytest.raises(TrainingDiverged) as err:
        t.run()
    message = str(err.value)
    assert "3 consecutive non-finite" in message and "non-finite loss" in message and "intact" in message
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt.state["step"] == 4 and ckpt.state["bad_steps"] == 1
    clean = Trainer(tiny(3), tmp_path / "clean", progress=False)
    clean.run()
    for k, v in clean.net.state_dict().items():
        assert torch.equal(ckpt.model[k], v), k
    assert all(torch.isfinite(v).all() for part in (ckpt.model, ckpt.ema, ckpt.optim) for v in part.values())


def test_save_refuses_nan_weights_and_keeps_the_previous_file(tmp_path):
    t = Trainer(tiny(), tmp_path, progress=False)
    t.train_step()
    t.save()
    before = (tmp_path / CHECKPOINT_FILE).read_bytes()
    with torch.no_grad():
        next(t.ema.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(CheckpointError, match="non-finite values in ema"):
        t.save()
    assert (tmp_path / CHECKPOINT_FILE).read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
