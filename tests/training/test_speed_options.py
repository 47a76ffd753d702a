"""Each speed switch leaves a short training run within tolerance of the plain run: exact-arithmetic
switches (accumulation, gradient checkpointing, fused AdamW, channels-last, compile) to float rounding,
reduced-precision autocast (bf16, fp16) to its precision. The fp16 grad scaler skips overflowing steps
and counts them apart from bad steps."""

from dataclasses import replace

import pytest
import torch

from noisecraft.presets import get_preset
from noisecraft.training.trainer import Trainer

STEPS = 4


def tiny(unet=None, **train):
    cfg = get_preset("mnist-tiny")
    return replace(cfg, data=replace(cfg.data, limit=32), network=replace(cfg.network, **(unet or {})),
                   train=replace(cfg.train, steps=STEPS, batch_size=8, warmup_steps=2, checkpoint_every=1000,
                                 log_every=1, **train))


def _train(cfg, path):
    t = Trainer(cfg, path, progress=False)
    t.run()
    return t


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    t = _train(tiny(), tmp_path_factory.mktemp("plain"))
    start = Trainer(tiny(), tmp_path_factory.mktemp("init"), progress=False)  # the same initialisation
    return t, {k: v.clone() for k, v in start.net.state_dict().items()}


def _compare(t, plain, *, atol_loss, rtol_update):
    """Losses to atol_loss; the total parameter update (theta_T - theta_0) to rtol_update relative."""
    ref, theta0 = plain
    assert t.bad_steps == 0
    assert [r["loss"] for r in t.log] == pytest.approx([r["loss"] for r in ref.log], abs=atol_loss)
    a, b = t.net.state_dict(), ref.net.state_dict()
    num = sum(((a[k].float() - b[k].float()) ** 2).sum() for k in b)
    den = sum(((b[k].float() - theta0[k].float()) ** 2).sum() for k in b)
    assert float(num.sqrt() / den.sqrt()) <= rtol_update


@pytest.mark.parametrize("option", [
    {"grad_accum": 2}, {"grad_accum": 8}, {"grad_checkpointing": True}, {"fused_adam": True},
    {"unet": {"channels_last": False}},
])
def test_exact_switches_match_the_plain_run(option, plain, tmp_path):
    option = dict(option)
    t = _train(tiny(unet=option.pop("unet", None), **option), tmp_path)
    _compare(t, plain, atol_loss=1e-6, rtol_update=1e-4)


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_autocast_stays_close_to_float32(dtype, plain, tmp_path):
    t = Trainer(tiny(**{dtype: True}), tmp_path, progress=False)
    if dtype == "fp16":  # start below the default 2^16, which overflows (and skips) this model's first step
        t.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    t.run()
    assert t.scaler_skipped == 0
    assert all(p.dtype == torch.float32 for p in t.net.parameters())  # float32 master weights
    _compare(t, plain, atol_loss=2e-2, rtol_update=0.1)
    if dtype == "fp16":
        assert "scaler_skipped" in t.log[-1] and "grad_scale" in t.log[-1]


def test_fp16_scaler_skips_overflow_and_counts_it(tmp_path):
    t = Trainer(tiny(fp16=True), tmp_path, progress=False)
    t.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**60)  # a scale that overflows float16 gradients
    before = {k: v.clone() for k, v in t.net.state_dict().items()}
    t.train_step()
    assert t.scaler_skipped == 1 and t.bad_steps == 0 and t.step == 1
    assert all(torch.equal(v, before[k]) for k, v in t.net.state_dict().items())  # the update was skipped
    assert t.scaler.get_scale() == 2.0**59  # backed off by the default factor 0.5
    t.save()
    resumed = Trainer(tiny(fp16=True), tmp_path, resume=True, progress=False)
    assert resumed.scaler_skipped == 1 and resumed.scaler.get_scale() == 2.0**59  # scaler state resumes


@pytest.mark.slow  # inductor compiles C++ on first use: about 90 s on 2 shared CPU cores
def test_compile_matches_the_plain_run(tmp_path):
    """torch.compile (inductor) on the 2-D toy MLP: same losses and weights to float rounding."""
    cfg = get_preset("toy2d")
    cfg = replace(cfg, data=replace(cfg.data, limit=256),
                  train=replace(cfg.train, steps=3, batch_size=64, warmup_steps=2, log_every=1, checkpoint_every=99))
    ref = _train(cfg, tmp_path / "plain")
    start = Trainer(cfg, tmp_path / "init", progress=False)
    t = _train(replace(cfg, train=replace(cfg.train, compile=True)), tmp_path / "compiled")
    _compare(t, (ref, {k: v.clone() for k, v in start.net.state_dict().items()}), atol_loss=1e-5, rtol_update=1e-3)
    assert set(t.net.state_dict()) == set(ref.net.state_dict())  # compiling leaves the checkpoint keys alone


def test_config_checks_of_the_scale_fields():
    from noisecraft.errors import ConfigError
    from noisecraft.runconfig import TrainConfig

    with pytest.raises(ConfigError, match="grad_accum.*must divide train.batch_size=8"):
        TrainConfig(batch_size=8, grad_accum=3)
    with pytest.raises(ConfigError, match="at most one autocast"):
        TrainConfig(bf16=True, fp16=True)
    with pytest.raises(ConfigError, match="phema_sigma_rels"):
        TrainConfig(phema_sigma_rels=(0.05, 0.3))


def test_accumulation_slices_class_labels_and_condition_dropout(tmp_path):
    """Class-conditional with condition dropout: labels and dropout are drawn for the global batch and
    sliced per micro-batch, so 4 micro-batches equal one batch to float rounding."""
    from noisecraft.runconfig import ConditioningConfig

    runs = []
    for accum in (1, 4):
        cfg = tiny(unet={"num_classes": 10}, grad_accum=accum)
        cfg = replace(cfg, conditioning=ConditioningConfig(cond_dropout=0.3))
        runs.append(_train(cfg, tmp_path / str(accum)))
    a, b = runs
    assert [r["loss"] for r in a.log] == pytest.approx([r["loss"] for r in b.log], abs=1e-6)
    for k, v in a.net.state_dict().items():
        torch.testing.assert_close(b.net.state_dict()[k], v, rtol=0, atol=1e-6)
