"""Error types. Every user-facing mistake raises one of these with a message that names the
problem and the allowed values; the CLI prints it as one line (no traceback)."""


class NoisecraftError(ValueError):
    """Bad user input: a wrong name, shape, value or file. Subclasses ValueError."""


class ConfigError(NoisecraftError):
    """A config value of the wrong type, out of range, or an unknown field."""


class CheckpointError(NoisecraftError):
    """A missing, corrupt, foreign or unsafe checkpoint."""


class DataError(NoisecraftError):
    """A dataset that cannot be loaded: no images, NaN values, a wrong shape."""


class NoisecraftWarning(UserWarning):
    """Something a user should know but that does not stop the command (e.g. a run folder's config.json that
    is not the checkpoint's own config). The CLI prints each as one line: `noisecraft: warning: ...`."""


class TrainingDiverged(RuntimeError):
    """Training produced non-finite losses repeatedly; the last good checkpoint is intact."""


def unknown_name(kind: str, name: str, allowed) -> NoisecraftError:
    """The standard 'unknown X' error: names the bad value and lists the allowed ones."""
    return NoisecraftError(f"unknown {kind} {name!r}; allowed: {', '.join(sorted(allowed))}")


def require(ok: bool, where: str, message: str) -> None:
    """Raise ConfigError('where: message') unless `ok`: the one config check, e.g.
    require(lr > 0, "train.lr", f"must be > 0, got {lr}")."""
    if not ok:
        raise ConfigError(f"{where}: {message}")
