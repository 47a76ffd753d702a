"""The teacher the distillation tests share: a tiny 2-D toy MLP run trained for 20 steps (read-only)."""

from dataclasses import replace

import pytest

from noisecraft.presets import get_preset
from noisecraft.training.trainer import Trainer


@pytest.fixture(scope="session")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    config = get_preset("toy2d")
    config = replace(config, network=replace(config.network, hidden=32, num_blocks=1),
                     train=replace(config.train, steps=20, batch_size=64, threads=1, checkpoint_every=20))
    Trainer(config, out, progress=False).run()
    return out
