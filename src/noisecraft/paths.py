"""Where noisecraft keeps files it computes once: the cache directory.

$NOISECRAFT_CACHE, else ~/.cache/noisecraft; each user has a sub-folder (emoji/, latents/, text/) or a file
prefix (ref-*.safetensors, the evaluation reference statistics). Light: the standard library only.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "NOISECRAFT_CACHE"


def cache_dir() -> Path:
    """$NOISECRAFT_CACHE, else ~/.cache/noisecraft (created on first write)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "noisecraft")
