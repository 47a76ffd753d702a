"""Reference statistics: computed once, cached as safetensors keyed by what changes them, recomputed if corrupt;
`evaluate` end to end on real MNIST."""

import numpy as np
import pytest

from noisecraft.eval import evaluate, gaussian_stats
from noisecraft.eval.features import get_extractor
from noisecraft.eval.reference import cache_dir, load_reference

pytestmark = pytest.mark.filterwarnings("ignore::noisecraft.eval.common.RankWarning")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NOISECRAFT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_cache_written_once_and_reused(cache, monkeypatch):
    ext = get_extractor("mnist")
    assert cache_dir() == cache
    ref = load_reference("mnist", ext, split="train", limit=300)
    files = list(cache.glob("ref-mnist-train-mnist-*.safetensors"))
    assert len(files) == 1 and ref.path == files[0]
    mu, sigma = gaussian_stats(ref.features)
    np.testing.assert_allclose(ref.mu, mu)
    np.testing.assert_allclose(ref.sigma, sigma)

    calls = []
    monkeypatch.setattr(type(ext), "__call__", lambda self, x: calls.append(x) or 1 / 0)
    again = load_reference("mnist", ext, split="train", limit=300)  # from disk: the network is not called
    assert not calls
    np.testing.assert_array_equal(again.features, ref.features)
    np.testing.assert_array_equal(again.sigma, ref.sigma)


def test_key_separates_splits_and_limits(cache):
    ext = get_extractor("mnist")
    load_reference("mnist", ext, split="test", limit=200)
    load_reference("mnist", ext, split="test", limit=220)
    load_reference("mnist", ext, split="train", limit=200)
    assert len(list(cache.glob("*.safetensors"))) == 3


def test_corrupt_cache_is_recomputed(cache):
    ext = get_extractor("mnist")
    ref = load_reference("mnist", ext, split="test", limit=200)
    ref.path.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable"):
        again = load_reference("mnist", ext, split="test", limit=200)
    np.testing.assert_array_equal(again.features, ref.features)


def test_evaluate_real_mnist_held_out_is_close_to_the_floor(cache):
    """Real held-out digits against the training split: small FD/KID, high precision and recall, no copies."""
    from noisecraft.data import load_dataset

    test = load_dataset("mnist", split="test").images
    res = evaluate(test, reference="mnist", features="mnist", metrics="fd,kid,pr,is,classes,mem",
                   kid_subsets=10)
    assert res["num_samples"] == 500 and res["num_reference"] == 4500 and res["reference"] == "mnist/train"
    assert res["fd"] < 2.0 and abs(res["kid"]) < 0.01
    assert res["precision"] > 0.7 and res["recall"] > 0.7 and res["is"] > 5
    assert res["near_copies"] == 0.0
    # the classifier is sure of most real held-out digits (label smoothing 0.05 caps p near 0.955: 0.85 here) and
    # each digit holds about a tenth of them
    assert 0.8 < res["confident"] < 0.9 and 0.09 <= res["class_share_min"] <= res["class_share_max"] <= 0.12
    assert sum(res["class_shares"]) == pytest.approx(1.0)
    noise = np.random.default_rng(0).uniform(-1, 1, (500, 1, 28, 28)).astype(np.float32)
    bad = evaluate(noise, reference="mnist", features="mnist", metrics="fd,kid", kid_subsets=10)
    assert bad["fd"] > 50 * res["fd"] + 10 and bad["kid"] > 0.1
