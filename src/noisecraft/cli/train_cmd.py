"""`noisecraft train`: train a model from a preset or a config file, then write loss.png and a preview
of samples from the EMA weights."""

from __future__ import annotations

from noisecraft.cli.argtypes import add_training_arguments, with_stopping


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model from a preset or a config file",
                       description="Train from --preset or --config; field overrides like train.lr=3e-4 "
                                   "or network.base_channels=64 follow as positional arguments.")
    add_training_arguments(p, preset="a preset name (see `noisecraft presets`)",
                           config="a .json, .toml or .yaml config file",
                           out="run directory (also a valid --checkpoint)")


def run(args) -> int:
    config = run_config(args)
    result = train_and_preview(config, args.out, resume=args.resume, device=args.device)
    loss = "n/a" if result["loss"] is None else f"{result['loss']:.4f}"
    print(f"trained to step {result['step']} (loss {loss}, {result['bad_steps']} skipped steps) -> {args.out}")
    return 0


def run_config(args):
    """The RunConfig of --preset or --config with the overrides, --steps and --minutes applied."""
    from noisecraft.compat import migrate_config
    from noisecraft.config import from_dict, load_file, to_dict
    from noisecraft.presets import get_preset
    from noisecraft.runconfig import RunConfig, apply_run_overrides

    data = to_dict(get_preset(args.preset)) if args.preset else migrate_config(load_file(args.config), args.config)
    return with_stopping(from_dict(RunConfig, apply_run_overrides(data, args.overrides), "config"), args)


def train_and_preview(config, out: str, *, resume: bool, device: str) -> dict:
    """Train (joining the process group under torchrun / accelerate launch); the main process then writes
    loss.png and samples.png."""
    from noisecraft.training.distributed import teardown
    from noisecraft.training.trainer import Trainer

    try:
        trainer = Trainer(config, out, resume=resume, device=device)
        result = trainer.run()
        if trainer.dist.is_main:
            _after_training(trainer)
    finally:
        teardown()
    return result


def _after_training(trainer) -> None:
    """loss.png and a preview of samples from the EMA weights (conditional models: classes / captions)."""
    from noisecraft.cli.sample_cmd import write_generation
    from noisecraft.pipelines import load
    from noisecraft.pipelines.preview import preview_request
    from noisecraft.viz import plot_loss

    out = trainer.out_dir
    if trainer.log:
        plot_loss(trainer.log, out / "loss.png", title=f"{trainer.config.name}: training loss")
    request = preview_request(trainer.config, trainer.data, trainer.config.sample.num, trainer.conditions)
    write_generation(load(out), request, out / "samples.png")
