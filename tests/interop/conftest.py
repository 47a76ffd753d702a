"""The interop tests' shared tiny diffusers builders (defined in diffusers_tiny.py, re-exported here so that
`from conftest import tiny_sd_pipeline_dir` works as well)."""

from diffusers_tiny import *  # noqa: F403
from diffusers_tiny import __all__  # noqa: F401
