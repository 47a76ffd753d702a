"""The runs a server serves, by name: loaded once at start-up (`noisecraft.pipelines.load`), each with its A1111
title ('name [hash]') and short hash (the first 10 hex digits of the checkpoint file's SHA-256, as A1111's)."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

from noisecraft.errors import NoisecraftError, unknown_name


@dataclass
class Served:
    name: str
    run: object               # noisecraft.pipelines.Run
    hash: str                 # short SHA-256 of the checkpoint file
    sha256: str
    filename: str
    scale: int                # outputs are enlarged this many times (the watermark's minimum size)

    @property
    def title(self) -> str:
        return f"{self.name} [{self.hash}]"

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the images the run generates."""
        from noisecraft.editing.img2img import image_shape

        shape = image_shape(self.run)
        return int(shape[-2]), int(shape[-1])

    @property
    def channels(self) -> int:
        from noisecraft.editing.img2img import image_shape

        return int(image_shape(self.run)[0])


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Models:
    """name -> Served; `current` is A1111's sd_model_checkpoint (the first run until an options POST)."""

    def __init__(self, served: list[Served]):
        if not served:
            raise NoisecraftError("serve needs at least one --checkpoint")
        self.by_name = {s.name: s for s in served}
        self.current = served[0].name
        self.lock = threading.Lock()

    @classmethod
    def load(cls, paths, *, device: str = "cpu", watermark: bool = True) -> Models:
        from noisecraft.pipelines import load

        served = []
        for path in paths:
            run = load(path, device=device)
            served.append(describe(run, path, watermark))
        names = [s.name for s in served]
        if len(set(names)) != len(names):
            raise NoisecraftError(f"two checkpoints have the same model name: {names}; serve each name once")
        return cls(served)

    def names(self) -> list[str]:
        return list(self.by_name)

    def get(self, name: str | None) -> Served:
        """The run called `name` (its name or A1111 title); None: the current one."""
        if name is None or name == "":
            return self.by_name[self.current]
        if not isinstance(name, str):
            raise NoisecraftError(f"the model must be a name, got {type(name).__name__}")
        for s in self.by_name.values():
            if name in (s.name, s.title, s.hash):
                return s
        raise unknown_name("model", name, self.names())


def describe(run, path, watermark: bool) -> Served:
    from noisecraft.editing.img2img import image_shape
    from noisecraft.serve.watermark import display_scale

    file = Path(run.path) if run.path else Path(path)
    digest = file_sha256(file) if file.is_file() else hashlib.sha256(str(path).encode()).hexdigest()
    _, h, w = image_shape(run)
    return Served(run.config.name, run, digest[:10], digest, str(file), display_scale(h, w) if watermark else 1)
