"""Training: losses and weightings, the run config, checkpoints and the loop.

Import submodules directly (`noisecraft.training.trainer`), so that the light ones stay light.
"""
