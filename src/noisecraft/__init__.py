"""noisecraft: a toolkit for diffusion models.

    run = noisecraft.load("runs/quickstart")
    images = noisecraft.generate(run, noisecraft.Request(num=16)).images

`import noisecraft` is light: subpackages (which import torch) load on first use.
"""

from importlib import import_module

__version__ = "0.1.0"

_SUBMODULES = {
    "core", "schedules", "samplers", "models", "conditions", "pipelines", "training", "data", "viz", "errors", "config",
}
_FUNCTIONS = {  # name -> module, imported on first use
    "load": "noisecraft.pipelines", "generate": "noisecraft.pipelines", "Request": "noisecraft.pipelines",
    "load_autoencoder": "noisecraft.autoencoder",
}


def __getattr__(name):
    if name in _SUBMODULES:
        return import_module(f"noisecraft.{name}")
    if name in _FUNCTIONS:
        return getattr(import_module(_FUNCTIONS[name]), name)
    raise AttributeError(f"module 'noisecraft' has no attribute {name!r}")
