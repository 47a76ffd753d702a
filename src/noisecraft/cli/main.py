"""The `noisecraft` command. Only argparse is imported at start-up (fast --help); each command imports
what it needs. User errors exit with status 2 and one line on stderr, never a traceback."""

from __future__ import annotations

import argparse
import sys

from noisecraft.cli.argtypes import positive_float, positive_int
from noisecraft.errors import NoisecraftError, TrainingDiverged


def _add_quickstart(sub) -> None:
    p = sub.add_parser("quickstart", help="train a small U-Net on the embedded MNIST and write samples",
                       description="Train the `mnist` preset on the embedded MNIST for a few minutes on the CPU, "
                                   "then write DIR/samples.png, DIR/loss.png, DIR/config.json and the checkpoint.")
    p.add_argument("--minutes", type=positive_float, default=None, help="training time (default: the preset's, 8)")
    p.add_argument("--out", default="runs/quickstart", help="output directory (default: runs/quickstart)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model from a preset or a config file",
                       description="Train from --preset or --config; field overrides like train.lr=3e-4 "
                                   "or unet.base_channels=64 follow as positional arguments.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", help="a preset name (see `noisecraft presets`)")
    src.add_argument("--config", help="a .json, .toml or .yaml config file")
    p.add_argument("--steps", type=positive_int, help="stop after this many steps")
    p.add_argument("--minutes", type=positive_float, help="stop after this much wall time")
    p.add_argument("--out", required=True, help="run directory (also a valid --checkpoint)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("overrides", nargs="*", metavar="section.field=value", help="config overrides")


def _add_conditioning(p) -> None:
    g = p.add_argument_group("conditioning and guidance")
    g.add_argument("--prompt", help="text prompt (text-to-image models, e.g. the scenes-text preset)")
    g.add_argument("--negative-prompt", help="guide away from this text instead of the empty prompt")
    g.add_argument("--class", dest="class_ids", type=int, nargs="+", metavar="N",
                   help="class id(s) of a class-conditional model: one for all images or one per image")
    g.add_argument("--guidance", type=float, metavar="S",
                   help="classifier-free guidance scale (1 = the conditional model, 0 = unconditional)")
    g.add_argument("--guidance-interval", type=float, nargs=2, metavar=("LO", "HI"),
                   help="guide only while sigma is in [LO, HI] (Kynkaanniemi et al. 2024)")
    g.add_argument("--guidance-rescale", type=float, default=0.0, metavar="PHI",
                   help="guidance rescale phi in [0, 1] (Lin et al. 2024; default 0 = off)")


def _add_sample(sub) -> None:
    p = sub.add_parser("sample", help="generate images from a trained run")
    p.add_argument("--checkpoint", required=True, help="run directory or checkpoint.safetensors")
    p.add_argument("--sampler", help="sampler name or alias (default: the run's); see --list-samplers")
    p.add_argument("--steps", type=positive_int, help="sampling steps (default: the run's)")
    p.add_argument("--schedule", help="step schedule: trailing, leading, linspace, karras, exponential, uniform")
    p.add_argument("--seed", type=int, default=0, help="seed; image i uses seed + i (default 0)")
    p.add_argument("--num", type=positive_int, default=16, help="number of images (default 16)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per batch (default 64)")
    p.add_argument("--out", default="samples.png", help="grid PNG path, or a directory for one PNG per image")
    p.add_argument("--eta", type=float, default=None, help="stochasticity for ddim / ancestral samplers")
    p.add_argument("--trajectory", help="also write the reverse process of image 0 (.png strip or .gif)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    _add_conditioning(p)
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def _add_forward(sub) -> None:
    p = sub.add_parser("forward", help="show the forward noising of a picture",
                       description="Write x_t = alpha_t x0 + sigma_t n at several t as an image strip.")
    p.add_argument("--image", help="a picture (default: the first MNIST digit)")
    p.add_argument("--schedule", default="linear", help="training schedule: linear, scaled_linear, cosine, "
                                                        "sigmoid, vp, ve, edm, flow (default linear)")
    p.add_argument("--num", type=positive_int, default=8, help="number of noise levels shown (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resolution", type=positive_int, default=None, help="resize the picture first")
    p.add_argument("--out", default="forward.png", help="output PNG")


# Commands defined in their own modules: each has add_parser(subparsers) and run(args) -> int, and
# imports nothing heavy at module level.
PLUGIN_MODULES = ("noisecraft.cli.schedule_cmd", "noisecraft.cli.eval_cmd", "noisecraft.cli.autoencoder_cmd",
                  "noisecraft.cli.ema_cmd")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, str]]:
    """The argument parser, and for each plug-in command the module that runs it."""
    import importlib

    parser = argparse.ArgumentParser(prog="noisecraft", description="Diffusion models: train, sample, inspect.")
    parser.add_argument("--version", action="version", version="noisecraft 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_quickstart(sub)
    _add_train(sub)
    _add_sample(sub)
    sub.add_parser("presets", help="list the training presets")
    _add_forward(sub)
    plugins = {}
    for name in PLUGIN_MODULES:
        before = set(sub.choices)
        importlib.import_module(name).add_parser(sub)
        plugins.update({command: name for command in set(sub.choices) - before})
    return parser, plugins


def main(argv: list[str] | None = None) -> int:
    import importlib

    parser, plugins = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command in plugins:
        handler = importlib.import_module(plugins[args.command]).run
    else:
        from noisecraft.cli import commands

        handler = getattr(commands, args.command)
    try:
        return int(handler(args) or 0)
    except NoisecraftError as e:
        print(f"noisecraft: error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"noisecraft: training stopped: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("noisecraft: interrupted (a checkpoint was written; continue with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
