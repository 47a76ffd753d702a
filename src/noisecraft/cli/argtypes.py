"""argparse value types and argument groups shared by the command modules (light: argparse only)."""

import argparse


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value}")
    return value


def key_value(text: str) -> tuple[str, str]:
    """KEY=VALUE -> (KEY, VALUE); the value stays text (e.g. samplers.check_options converts it)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


class KeyValues(argparse.Action):
    """Collects repeated KEY=VALUE arguments (type=key_value) into one dict; a later KEY replaces an
    earlier one. With key=NAME the flag takes only the value: `--eta X` is `--option eta=X`."""

    def __init__(self, option_strings, dest, key: str | None = None, **kwargs):
        self.key = key
        super().__init__(option_strings, dest, **{"default": {}, **kwargs})

    def __call__(self, parser, namespace, values, option_string=None):
        key, value = (self.key, values) if self.key else values
        setattr(namespace, self.dest, {**(getattr(namespace, self.dest) or {}), key: value})  # never the default


def add_training_arguments(p, *, preset: str, config: str, out: str) -> None:
    """The arguments every training command takes: --preset or --config, the stopping criteria, the run
    directory, --resume, --device and section.field=value overrides."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", help=preset)
    src.add_argument("--config", help=config)
    p.add_argument("--steps", type=positive_int, help="stop after this many steps")
    p.add_argument("--minutes", type=positive_float, help="stop after this much wall time")
    p.add_argument("--out", required=True, help=out)
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("overrides", nargs="*", metavar="section.field=value", help="config overrides")


def with_stopping(config, args):
    """config with --steps / --minutes applied (--minutes alone: no step limit)."""
    from dataclasses import replace

    train = config.train
    if args.steps is not None:
        train = replace(train, steps=args.steps, minutes=args.minutes)
    elif args.minutes is not None:
        train = replace(train, minutes=args.minutes, steps=10**9)
    return replace(config, train=train)
