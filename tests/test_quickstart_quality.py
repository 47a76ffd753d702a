"""The quickstart's digits, as a new user gets them (issue 25): the default `noisecraft quickstart` run (8 minutes
of training), then 1000 samples with the run's own sampler scored by `noisecraft eval`'s MNIST classifier and
features. Slow (about 10 minutes on 2 cores, and the figures need a quiet machine): `pytest -m slow`.

The thresholds are the figures measured on the 2-core machine (docs/quickstart.md, "Re-tuned defaults") less a
margin for run-to-run and machine variation, so a change that makes the quickstart worse fails here; the issue's
aims are stated beside them."""

import pytest

from noisecraft.cli.main import main

pytestmark = pytest.mark.slow

# measured 2026-12-08 (docs/quickstart.md): confident 0.500, digit shares 0.069 - 0.130, FD 1.70
CONFIDENT_AT_LEAST = 0.40
SHARE_MIN_AT_LEAST = 0.055
SHARE_MAX_AT_MOST = 0.145
FD_AT_MOST = 2.5


def test_default_quickstart_digits_are_legible_and_balanced(tmp_path):
    from noisecraft.eval import evaluate
    from noisecraft.pipelines import load
    from noisecraft.pipelines.generate import generate
    from noisecraft.pipelines.request import Request

    out = tmp_path / "quickstart"
    assert main(["quickstart", "--out", str(out)]) == 0
    images = generate(load(out), Request(num=1000, batch_size=100)).images
    r = evaluate(images.clamp(-1, 1), reference="mnist", features="mnist", metrics=("fd", "classes"))
    assert r["confident"] >= CONFIDENT_AT_LEAST          # aim 0.90 (real held-out digits: 0.85)
    assert r["class_share_min"] >= SHARE_MIN_AT_LEAST    # aim 0.07
    assert r["class_share_max"] <= SHARE_MAX_AT_MOST     # aim 0.13
    assert r["fd"] <= FD_AT_MOST                         # aim 2.5 (half of the old default's 5.0)
