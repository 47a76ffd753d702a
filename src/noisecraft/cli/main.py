"""The `noisecraft` command. Only argparse and the light command modules are imported at start-up (fast
--help); each command's `run` imports what it needs. User errors exit with status 2 and one line on
stderr, never a traceback."""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from noisecraft.errors import NoisecraftError, NoisecraftWarning, TrainingDiverged

_python_show_warning = warnings.showwarning

# Every command: its name -> the module that defines add_parser(subparsers), which adds the command's
# parser, and run(args) -> int. The modules import nothing heavy at module level.
COMMANDS = {
    "quickstart": "noisecraft.cli.quickstart_cmd",
    "train": "noisecraft.cli.train_cmd",
    "sample": "noisecraft.cli.sample_cmd",
    "samplers": "noisecraft.cli.samplers_cmd",
    "presets": "noisecraft.cli.presets_cmd",
    "forward": "noisecraft.cli.forward_cmd",
    "schedule": "noisecraft.cli.schedule_cmd",
    "eval": "noisecraft.cli.eval_cmd",
    "train-autoencoder": "noisecraft.cli.autoencoder_cmd",
    "ema": "noisecraft.cli.ema_cmd",
    "export": "noisecraft.cli.export_cmd",
    "onnx-sample": "noisecraft.cli.onnx_sample_cmd",
    "img2img": "noisecraft.cli.img2img_cmd",
    "inpaint": "noisecraft.cli.inpaint_cmd",
    "index": "noisecraft.cli.index_cmd",
    "search": "noisecraft.cli.search_cmd",
    "upscale": "noisecraft.cli.upscale_cmd",
    "distill": "noisecraft.cli.distill_cmd",
    "finetune": "noisecraft.cli.finetune_cmd",
    "serve": "noisecraft.cli.serve_cmd",
    "watermark": "noisecraft.cli.watermark_cmd",
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command in COMMANDS."""
    parser = argparse.ArgumentParser(prog="noisecraft", description="Diffusion models: train, sample, inspect.")
    parser.add_argument("--version", action="version", version="noisecraft 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        importlib.import_module(module).add_parser(sub)
        if name not in sub.choices:
            raise RuntimeError(f"{module}.add_parser did not add the command {name!r}")
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Our warnings as one line on stderr, others as Python prints them."""
    if issubclass(category, NoisecraftWarning):
        print(f"noisecraft: warning: {message}", file=sys.stderr)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    previous, warnings.showwarning = warnings.showwarning, _show_warning
    try:
        return int(importlib.import_module(COMMANDS[args.command]).run(args) or 0)
    except NoisecraftError as e:
        print(f"noisecraft: error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"noisecraft: training stopped: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("noisecraft: interrupted (a checkpoint was written; continue with --resume)", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = previous


if __name__ == "__main__":
    sys.exit(main())
