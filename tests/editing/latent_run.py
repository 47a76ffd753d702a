"""Tiny latent runs for the editing tests: a 2-step ae-tiny autoencoder (f = 4: 16x16 RGB digits -> 2 x 4 x 4
latents) and 2-step mnist-tiny U-Nets on its latents."""

from dataclasses import replace

from noisecraft.autoencoder.config import get_ae_preset
from noisecraft.pipelines import load
from noisecraft.presets import get_preset
from noisecraft.training.autoencoder_trainer import AutoencoderTrainer
from noisecraft.training.trainer import Trainer


def tiny_autoencoder(tmp_path, monkeypatch):
    """The directory of a trained ae-tiny (its latent cache under tmp_path)."""
    monkeypatch.setenv("NOISECRAFT_CACHE", str(tmp_path / "cache"))
    ae = get_ae_preset("ae-tiny")
    AutoencoderTrainer(replace(ae, train=replace(ae.train, steps=2, eval_every=2, fd_every=2)), tmp_path / "ae",
                       progress=False).run()
    return tmp_path / "ae"


def tiny_latent_config(ae_dir, steps: int = 2, **data):
    """mnist-tiny on the latents of the autoencoder at ae_dir: 64 digits at 16x16 RGB, batch 8."""
    base = get_preset("mnist-tiny")
    return replace(base, data=replace(base.data, dataset="digits", resolution=16, channels=3, limit=64,
                                      autoencoder=str(ae_dir), **data),
                   train=replace(base.train, steps=steps, batch_size=8, checkpoint_every=2))


def tiny_latent_run(tmp_path, monkeypatch):
    """The loaded latent run."""
    ae = tiny_autoencoder(tmp_path, monkeypatch)
    Trainer(tiny_latent_config(ae), tmp_path / "ldm", progress=False).run()
    return load(tmp_path / "ldm")
