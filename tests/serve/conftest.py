"""A real server for the serve tests: two tiny runs (a class-conditional U-Net and an unconditional one, 2 training
steps on 64 digits) served by uvicorn on 127.0.0.1 at an ephemeral port, in a thread of the test process."""

from dataclasses import replace

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("imwatermark")

from serve_helpers import serve  # noqa: E402

from noisecraft.presets import get_preset  # noqa: E402
from noisecraft.serve.models import Models  # noqa: E402
from noisecraft.training.trainer import Trainer  # noqa: E402


def tiny_run(root, preset: str):
    base = get_preset(preset)
    config = replace(base, data=replace(base.data, limit=64),
                     train=replace(base.train, steps=2, batch_size=8, checkpoint_every=2),
                     sample=replace(base.sample, num=1, steps=4))
    Trainer(config, root / preset, progress=False).run()
    return root / preset


@pytest.fixture(scope="session")
def run_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-runs")
    return {"class": tiny_run(root, "mnist-class"), "tiny": tiny_run(root, "mnist-tiny")}


@pytest.fixture(scope="session")
def models(run_dirs):
    return Models.load([run_dirs["class"], run_dirs["tiny"]])


@pytest.fixture(scope="session")
def server(models):
    s = serve(models, blocked_terms=("forbidden thing",), max_queue=8)
    yield s
    s.close()


@pytest.fixture
def client(server):
    import httpx

    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c
