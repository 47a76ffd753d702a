"""`noisecraft train-autoencoder`: train the autoencoder of a latent diffusion model (plug-in command)."""

from __future__ import annotations

from noisecraft.cli.argtypes import add_training_arguments, with_stopping


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train-autoencoder", help="train an autoencoder for latent diffusion",
        description="Train a KL (or deterministic) autoencoder from --preset or --config (L1 + EfficientNet "
                    "perceptual loss + small KL, optional patch GAN). Writes DIR/checkpoint.safetensors (with the "
                    "latent scaling factor), DIR/diffusers/ (a diffusers AutoencoderKL folder), loss.png, "
                    "metrics.png (PSNR, SSIM, FD of reconstructions) and reconstructions.png. Overrides like "
                    "loss.kl_weight=1e-5 or autoencoder.latent_channels=4 follow as positional arguments.")
    add_training_arguments(p, preset="an autoencoder preset: ae-64, ae-64-f8, ae-glyphs-64, ae-tiny, "
                                  "ae-video (causal 3-D, clips)",
                           config="a .json, .toml or .yaml file of an AERunConfig",
                           out="run directory (also what load_autoencoder and data.autoencoder take)")


def _config(args):
    from noisecraft.autoencoder.config import AERunConfig, get_ae_preset
    from noisecraft.config import apply_overrides, from_dict, load_file, to_dict

    data = to_dict(get_ae_preset(args.preset)) if args.preset else load_file(args.config)
    return with_stopping(from_dict(AERunConfig, apply_overrides(data, args.overrides), "config"), args)


def run(args) -> int:
    if args.preset in ("ae-video", "ae-video-tiny"):  # the causal video autoencoder (noisecraft.video.autoencoder)
        return run_video(args)
    from noisecraft.presets import latent_preset_for
    from noisecraft.training.autoencoder_trainer import AutoencoderTrainer

    config = _config(args)
    trainer = AutoencoderTrainer(config, args.out, resume=args.resume, device=args.device)
    r = trainer.run()
    metrics = ", ".join(f"{k} {r[k]:.4g}" for k in ("psnr", "ssim", "fd") if k in r)
    latent_preset = latent_preset_for(config.data.dataset)
    print(f"trained the autoencoder to step {r['step']} in {r['seconds']:.0f} s ({metrics}; scaling factor "
          f"{r['scaling_factor']:.4g}) -> {args.out}\n  latent diffusion: noisecraft train --preset {latent_preset} "
          f"data.autoencoder={args.out} --out RUN")
    return 0


def run_video(args) -> int:
    """train-autoencoder --preset ae-video: the causal 3-D KL autoencoder of latent video diffusion."""
    from noisecraft.config import apply_overrides, from_dict, to_dict
    from noisecraft.video.autoencoder import VideoAERunConfig, get_video_ae_preset, train_video_autoencoder

    data = apply_overrides(to_dict(get_video_ae_preset(args.preset)), args.overrides)
    config = with_stopping(from_dict(VideoAERunConfig, data, "config"), args)
    r = train_video_autoencoder(config, args.out, device=args.device)
    print(f"trained the video autoencoder to step {r['step']} in {r['seconds']:.0f} s (psnr {r['psnr']:.4g}; scaling "
          f"factor {r['scaling_factor']:.4g}) -> {args.out}\n  latent video diffusion: noisecraft train --preset "
          f"ldm-moving-mnist data.autoencoder={args.out} --out RUN")
    return 0
