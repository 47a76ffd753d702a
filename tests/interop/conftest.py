"""The interop tests' shared tiny diffusers builders (defined in diffusers_tiny.py, re-exported here so that
fixtures can use them; tests import them `from diffusers_tiny import ...`: a bare `conftest` module name is shared by
every test folder's conftest)."""

from diffusers_tiny import *  # noqa: F403
from diffusers_tiny import __all__  # noqa: F401
