"""argparse value types shared by the command modules (light: argparse only)."""

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
