"""Latent diffusion runs use pixel-space semantics where they must: evaluation during training scores decoded
images against the pixel dataset's statistics, trajectories show decoded images, and data.hflip flips the pixels
before encoding (E(flip(x)), which differs from flip(E(x)))."""

import warnings
from dataclasses import replace

import pytest
import torch

from noisecraft.autoencoder import load_autoencoder
from noisecraft.autoencoder.config import get_ae_preset
from noisecraft.training.autoencoder_trainer import AutoencoderTrainer


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NOISECRAFT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def ae_dir(tmp_path, cache):
    cfg = get_ae_preset("ae-tiny")
    cfg = replace(cfg, train=replace(cfg.train, steps=2, eval_every=2, fd_every=2))
    AutoencoderTrainer(cfg, tmp_path / "ae", progress=False).run()
    return tmp_path / "ae"


def _digits():
    from noisecraft.data import load_dataset

    return load_dataset("digits", split="train", resolution=16, channels=3, limit=40)


def _ldm_config(ae_dir, **data):
    from noisecraft.presets import get_preset

    base = get_preset("mnist-tiny")
    return replace(base, data=replace(base.data, dataset="digits", resolution=16, channels=3, limit=64,
                                      autoencoder=str(ae_dir), **data),
                   train=replace(base.train, steps=2, batch_size=8, checkpoint_every=2))


# ------------------------------------------------------------------------------------------ hflip
def test_hflip_latents_are_the_latents_of_flipped_images_and_are_cached(ae_dir, cache, monkeypatch):
    from noisecraft.autoencoder import latents as L

    ds = _digits()
    ae = load_autoencoder(ae_dir)
    out = L.encode_dataset(ds, ae_dir, hflip=True, progress=False)
    flipped = out.attributes[L.HFLIP_KEY]
    with torch.no_grad():
        torch.testing.assert_close(out.images, ae.to_diffusion(ae.encode(ds.images)))
        torch.testing.assert_close(flipped, ae.to_diffusion(ae.encode(ds.images.flip(-1))))
    # the encoder is not flip-equivariant: flipping latents would be a different (wrong) augmentation
    assert (flipped - out.images.flip(-1)).abs().max() > 1e-3
    assert len(list((cache / "latents").glob("latents-digits-hflip-*.safetensors"))) == 1
    assert L.encode_dataset(ds, ae_dir, progress=False).attributes is None  # no flip requested: none encoded

    def no_encoding(*a, **k):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(L, "encode_images", no_encoding)
    again = L.encode_dataset(ds, ae_dir, hflip=True, progress=False)
    assert torch.equal(again.attributes[L.HFLIP_KEY], flipped)


def test_latent_trainer_draws_flipped_rows_from_the_flipped_latents(tmp_path, ae_dir):
    from noisecraft.training.trainer import Trainer

    trainer = Trainer(_ldm_config(ae_dir, hflip=True), tmp_path / "ldm", progress=False)
    idx = trainer.batch_indices(0)
    x0, _ = trainer.batch(0, torch.Generator().manual_seed(7))
    flip = torch.rand(len(idx), generator=torch.Generator().manual_seed(7)) < 0.5  # the draw batch() makes
    assert 0 < int(flip.sum()) < len(idx)
    assert torch.equal(x0[flip], trainer.images_hflip[idx][flip])
    assert torch.equal(x0[~flip], trainer.images[idx][~flip])
    assert not torch.allclose(x0[flip], trainer.images[idx][flip].flip(-1))


# ------------------------------------------------------------------------------------- evaluation
def test_evaluation_during_a_latent_run_scores_decoded_images(tmp_path, ae_dir, monkeypatch):
    from noisecraft.autoencoder.latents import decode_latents
    from noisecraft.build import build_denoiser
    from noisecraft.pipelines import sample_batches as generate
    from noisecraft.schedules import get_sigmas
    from noisecraft.training.evaluation import TrainingEvaluator
    from noisecraft.training.trainer import Trainer

    cfg = _ldm_config(ae_dir)
    cfg = replace(cfg, eval=replace(cfg.eval, every=2, metrics=("kid",), num_samples=6, features="mnist"))
    trainer = Trainer(cfg, tmp_path / "ldm", progress=False)
    seen = []
    real_score = TrainingEvaluator._score
    monkeypatch.setattr(TrainingEvaluator, "_score", lambda self, images: seen.append(images) or real_score(
        self, images))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.run()
    assert len(seen) == 1 and seen[0].shape == (6, 3, 16, 16)  # pixels, not (6, 2, 4, 4) latents
    rec = trainer.evaluator.history()[-1]
    assert rec["step"] == 2 and rec["kid"] == rec["kid"]
    # exactly the decoded samples of the EMA model (same seeds), clipped to the pixel range
    ev = trainer.evaluator
    den = build_denoiser(trainer.config, trainer._plain_ema()).eval()
    with torch.no_grad():
        z = generate(den, get_sigmas(den.schedule, ev.steps, ev.step_schedule), (2, 4, 4), num=6, seed=ev.seed,
                     sampler=ev.sampler, batch_size=ev.batch_size)
        expected = decode_latents(load_autoencoder(ae_dir), z).clamp(-1, 1)
    torch.testing.assert_close(seen[0], expected)
    # the reference statistics are those of the pixel dataset
    import numpy as np

    from noisecraft.data import load_dataset

    ext, ref = ev._load()
    pixels = load_dataset("digits", split="train", resolution=16, channels=3, limit=64).images
    np.testing.assert_allclose(ref.features, ext.features_and_logits(pixels)[0], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------- trajectory
def test_sample_trajectory_of_a_latent_model_shows_decoded_images(tmp_path, ae_dir, monkeypatch):
    from noisecraft import viz
    from noisecraft.cli.main import main
    from noisecraft.training.trainer import Trainer

    Trainer(_ldm_config(ae_dir), tmp_path / "ldm", progress=False).run()
    got = []
    real = viz.save_trajectory
    monkeypatch.setattr(viz, "save_trajectory", lambda frames, path, **k: got.append(frames) or real(
        frames, path, **k))
    rc = main(["sample", "--checkpoint", str(tmp_path / "ldm"), "--num", "2", "--steps", "2",
               "--out", str(tmp_path / "s.png"), "--trajectory", str(tmp_path / "t.png")])
    assert rc == 0 and (tmp_path / "t.png").stat().st_size > 0
    frames = got[0]
    assert len(frames) >= 2
    for _sigma, x, denoised in frames:
        assert x.shape == denoised.shape == (3, 16, 16)  # image 0 decoded, not its (2, 4, 4) latent
