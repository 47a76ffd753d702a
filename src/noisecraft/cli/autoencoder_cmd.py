"""`noisecraft train-autoencoder`: train the autoencoder of a latent diffusion model (plug-in command)."""

from __future__ import annotations

from noisecraft.cli.argtypes import positive_float, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train-autoencoder", help="train an autoencoder for latent diffusion",
        description="Train a KL (or deterministic) autoencoder from --preset or --config (L1 + EfficientNet "
                    "perceptual loss + small KL, optional patch GAN). Writes DIR/checkpoint.safetensors (with the "
                    "latent scaling factor), DIR/diffusers/ (a diffusers AutoencoderKL folder), loss.png, "
                    "metrics.png (PSNR, SSIM, FD of reconstructions) and reconstructions.png. Overrides like "
                    "loss.kl_weight=1e-5 or autoencoder.latent_channels=4 follow as positional arguments.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", help="an autoencoder preset: ae-64, ae-64-f8, ae-glyphs-64, ae-tiny")
    src.add_argument("--config", help="a .json, .toml or .yaml file of an AERunConfig")
    p.add_argument("--steps", type=positive_int, help="stop after this many steps")
    p.add_argument("--minutes", type=positive_float, help="stop after this much wall time")
    p.add_argument("--out", required=True, help="run directory (also what load_autoencoder and data.autoencoder take)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("overrides", nargs="*", metavar="section.field=value", help="config overrides")


def _config(args):
    from dataclasses import replace

    from noisecraft.autoencoder.config import AERunConfig, get_ae_preset
    from noisecraft.config import apply_overrides, from_dict, load_file, to_dict

    data = to_dict(get_ae_preset(args.preset)) if args.preset else load_file(args.config)
    config = from_dict(AERunConfig, apply_overrides(data, args.overrides), "config")
    train = config.train
    if args.steps is not None:
        train = replace(train, steps=args.steps, minutes=args.minutes)
    elif args.minutes is not None:
        train = replace(train, minutes=args.minutes, steps=10**9)
    return replace(config, train=train)


def run(args) -> int:
    from noisecraft.autoencoder.trainer import AutoencoderTrainer
    from noisecraft.presets import latent_preset_for

    config = _config(args)
    trainer = AutoencoderTrainer(config, args.out, resume=args.resume, device=args.device)
    r = trainer.run()
    metrics = ", ".join(f"{k} {r[k]:.4g}" for k in ("psnr", "ssim", "fd") if k in r)
    latent_preset = latent_preset_for(config.data.dataset)
    print(f"trained the autoencoder to step {r['step']} in {r['seconds']:.0f} s ({metrics}; scaling factor "
          f"{r['scaling_factor']:.4g}) -> {args.out}\n  latent diffusion: noisecraft train --preset {latent_preset} "
          f"data.autoencoder={args.out} --out RUN")
    return 0
