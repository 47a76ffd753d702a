"""`load(path)`: the reader of a path's format -> a `Run`. The formats in `LOADERS` (a probe and a loader each:
Stable Diffusion single files, diffusers model and pipeline folders) are tried before our own run directories.
The interop readers are imported only when their probe runs, so `noisecraft.interop` stays above
`noisecraft.pipelines.run` (it builds `Run`s) and nothing below imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from noisecraft.pipelines.run import Run, load_checkpoint_run


def _is_single_file(path: Path) -> bool:
    from noisecraft.interop.single_file import is_single_file  # reads a safetensors header only

    return is_single_file(path)


def _load_single_file(path, *, use_ema: bool = True, device: str = "cpu", config_dir=None) -> Run:
    from noisecraft.interop.single_file import load_single_file_run

    return load_single_file_run(path, config_dir, use_ema=use_ema, device=device)


def _is_diffusers_folder(path: Path) -> bool:
    from noisecraft.interop.diffusers_load import is_diffusers_folder  # light: diffusers is imported on load

    return is_diffusers_folder(path)


def _load_diffusers_folder(path, *, use_ema: bool = True, device: str = "cpu", config_dir=None) -> Run:
    from noisecraft.interop.diffusers_load import load_diffusers_run

    return load_diffusers_run(path, use_ema=use_ema, device=device)


# (probe(path) -> bool, loader(path, use_ema=, device=, config_dir=) -> Run): formats other than our checkpoints,
# tried in order
LOADERS: list[tuple[Callable, Callable]] = [(_is_single_file, _load_single_file),
                                            (_is_diffusers_folder, _load_diffusers_folder)]


def load(path, *, use_ema: bool = True, device: str = "cpu", config_dir=None) -> Run:
    """A run directory, checkpoint file or (through LOADERS) another format -> its `Run`. config_dir: for a Stable
    Diffusion single-file checkpoint, the local diffusers folder of its family's configs."""
    for probe, loader in LOADERS:
        if probe(Path(path)):
            return loader(path, use_ema=use_ema, device=device, config_dir=config_dir)
    return load_checkpoint_run(path, use_ema=use_ema, device=device)
