"""Autoencoders for latent diffusion: training, checkpoints, diffusers interop and the latent cache.

    ae = noisecraft.load_autoencoder("runs/ae-64")        # or a diffusers AutoencoderKL folder (e.g. an SD vae/)
    z = ae.encode(x)                                       # (B, c, H/f, W/f): posterior mean, unscaled
    x_hat = ae.decode(z)                                   # or ae.tiled_decode(z, tile=32, overlap=8)
    z_diffusion = ae.to_diffusion(z)                       # (z - shift_factor) * scaling_factor

The network is `noisecraft.models.autoencoder.Autoencoder`; training is `noisecraft train-autoencoder`
(`noisecraft.training.autoencoder_trainer`, presets in `config.py`); `latents.py` turns a dataset into cached
latents for `noisecraft train` with `data.autoencoder=DIR`.
"""

from __future__ import annotations

from pathlib import Path

from noisecraft.errors import CheckpointError


def load_autoencoder(path, *, device: str = "cpu"):
    """A noisecraft autoencoder run directory / checkpoint file, or a diffusers AutoencoderKL folder (config.json
    + diffusion_pytorch_model.safetensors) -> `Autoencoder` in eval mode, with its scaling_factor. Anything else
    (a diffusion run, another diffusers model, a pickle file) raises CheckpointError saying what it is."""
    from noisecraft.autoencoder.checkpoint import load_ae_checkpoint
    from noisecraft.autoencoder.interop import is_diffusers_folder, load_diffusers_autoencoder, load_state_strict
    from noisecraft.config import from_dict
    from noisecraft.errors import ConfigError
    from noisecraft.models.autoencoder import Autoencoder, AutoencoderConfig

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"autoencoder not found: {path}")
    if is_diffusers_folder(path):
        ae = load_diffusers_autoencoder(path)
    else:
        ckpt = load_ae_checkpoint(path)
        if "causal_vae" in ckpt.config:  # the causal video autoencoder (trained by noisecraft.video.autoencoder)
            return _load_causal_vae(ckpt).to(device).eval().requires_grad_(False)
        try:
            config = from_dict(AutoencoderConfig, ckpt.config["autoencoder"], "autoencoder")
        except (ConfigError, KeyError) as e:
            raise CheckpointError(f"{ckpt.path}: its autoencoder config is invalid: {e}") from None
        ae = Autoencoder(config, scaling_factor=float(ckpt.state.get("scaling_factor", 1.0)),
                         shift_factor=float(ckpt.state.get("shift_factor", 0.0)))
        load_state_strict(ae, ckpt.tensors["model"], ckpt.path)
    return ae.to(device).eval().requires_grad_(False)


def _load_causal_vae(ckpt):
    """The CausalVideoVAE of an autoencoder checkpoint written by `noisecraft.video.autoencoder`
    (config key "causal_vae")."""
    from noisecraft.autoencoder.interop import load_state_strict
    from noisecraft.config import from_dict
    from noisecraft.errors import ConfigError
    from noisecraft.models.causal_vae import CausalVAEConfig, CausalVideoVAE

    try:
        cfg = from_dict(CausalVAEConfig, ckpt.config["causal_vae"], "causal_vae")
    except (ConfigError, KeyError) as e:
        raise CheckpointError(f"{ckpt.path}: its causal video autoencoder config is invalid: {e}") from None
    vae = CausalVideoVAE(cfg, scaling_factor=float(ckpt.state.get("scaling_factor", 1.0)),
                         shift_factor=float(ckpt.state.get("shift_factor", 0.0)))
    return load_state_strict(vae, ckpt.tensors["model"], ckpt.path)


__all__ = ["load_autoencoder"]
