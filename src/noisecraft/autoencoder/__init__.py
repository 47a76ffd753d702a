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
        if "causal_vae" in ckpt.config:  # the causal video autoencoder (noisecraft.video.autoencoder)
            from noisecraft.video.autoencoder import load_causal_vae

            return load_causal_vae(ckpt).to(device).eval().requires_grad_(False)
        try:
            config = from_dict(AutoencoderConfig, ckpt.config["autoencoder"], "autoencoder")
        except (ConfigError, KeyError) as e:
            raise CheckpointError(f"{ckpt.path}: its autoencoder config is invalid: {e}") from None
        ae = Autoencoder(config, scaling_factor=float(ckpt.state.get("scaling_factor", 1.0)),
                         shift_factor=float(ckpt.state.get("shift_factor", 0.0)))
        load_state_strict(ae, ckpt.tensors["model"], ckpt.path)
    return ae.to(device).eval().requires_grad_(False)


__all__ = ["load_autoencoder"]
