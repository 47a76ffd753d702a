"""A tiny latent run for the editing tests: a 2-step ae-tiny autoencoder and a 2-step mnist-tiny U-Net on its
latents of 16x16 RGB digits."""

from dataclasses import replace

from noisecraft.autoencoder.config import get_ae_preset
from noisecraft.pipelines import load
from noisecraft.presets import get_preset
from noisecraft.training.autoencoder_trainer import AutoencoderTrainer
from noisecraft.training.trainer import Trainer


def tiny_latent_run(tmp_path, monkeypatch):
    """The loaded latent run (its latent cache under tmp_path)."""
    monkeypatch.setenv("NOISECRAFT_CACHE", str(tmp_path / "cache"))
    ae = get_ae_preset("ae-tiny")
    AutoencoderTrainer(replace(ae, train=replace(ae.train, steps=2, eval_every=2, fd_every=2)), tmp_path / "ae",
                       progress=False).run()
    base = get_preset("mnist-tiny")
    c = replace(base, data=replace(base.data, dataset="digits", resolution=16, channels=3, limit=64,
                                   autoencoder=str(tmp_path / "ae")),
                train=replace(base.train, steps=2, batch_size=8, checkpoint_every=2))
    Trainer(c, tmp_path / "ldm", progress=False).run()
    return load(tmp_path / "ldm")
