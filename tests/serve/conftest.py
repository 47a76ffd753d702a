"""A real server for the serve tests: two tiny runs (a class-conditional U-Net and an unconditional one, 2 training
steps on 64 digits) served by uvicorn on 127.0.0.1 at an ephemeral port, in a thread of the test process."""

import os
import shutil
import subprocess
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


def ensure_chromium() -> tuple[str, str]:
    """(chromium, chromedriver) paths, installing Debian's packages with apt-get when they are missing."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        if not shutil.which("apt-get") or os.geteuid() != 0:
            pytest.skip("chromium and chromium-driver are missing and apt-get cannot install them (not root)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium", "chromium-driver"]
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=True)
            subprocess.run(install, env=env, capture_output=True, check=True)
    return shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="session")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    chromium, driver = ensure_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    b = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver), options=options)
    yield b
    b.quit()
