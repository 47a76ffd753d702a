import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))  # tests/analytic.py importable as `analytic`
torch.set_num_threads(1)  # small test models run fastest single-threaded; avoids oversubscription


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)
