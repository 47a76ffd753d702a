"""Near-copy detection: exact nearest neighbours and the distance-ratio rule."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from noisecraft.eval import EvalError
from noisecraft.eval.memorization import distance_ratio, memorization_report, nearest_neighbours, save_neighbours_png


def test_nearest_neighbours_match_brute_force():
    rng = np.random.default_rng(0)
    q, keys = rng.standard_normal((30, 6)), rng.standard_normal((50, 6))
    idx, dist = nearest_neighbours(q, keys, k=3)
    d = np.linalg.norm(q[:, None] - keys[None], axis=2)
    np.testing.assert_array_equal(idx, np.argsort(d, axis=1)[:, :3])
    np.testing.assert_allclose(dist, np.sort(d, axis=1)[:, :3], rtol=1e-10)


def test_copies_are_flagged_and_new_samples_are_not(tmp_path):
    gen = torch.Generator().manual_seed(1)
    train = torch.rand(40, 1, 8, 8, generator=gen) * 2 - 1
    copies = train[:5] + 0.01 * torch.randn(5, 1, 8, 8, generator=gen)  # near-copies of training images
    fresh = torch.rand(15, 1, 8, 8, generator=gen) * 2 - 1              # independent draws
    samples = torch.cat([copies, fresh])
    report = memorization_report(samples, train, sample_features=samples.flatten(1).numpy(),
                                 train_features=train.flatten(1).numpy())
    np.testing.assert_array_equal(report.pixel_index[:5, 0], np.arange(5))
    assert report.near_copies == pytest.approx(5 / 20)
    assert report.near_copies_features == pytest.approx(5 / 20)
    save_neighbours_png(samples, train, report, tmp_path / "nn.png", num=6, scale=1)
    img = Image.open(tmp_path / "nn.png")
    info = json.loads(img.text["noisecraft"])
    assert sorted(info["rows"][:5]) == [0, 1, 2, 3, 4] and "1/3" not in info["rule"]
    assert img.size == (5 * 10 + 2, 6 * 10 + 2)  # sample + 3 pixel NN + 1 feature NN per row


def test_ratio_of_duplicated_training_image_is_zero():
    assert distance_ratio(np.array([[0.0, 0.0], [1.0, 4.0]])).tolist() == [0.0, 0.25]


def test_shape_mismatch_is_an_error():
    with pytest.raises(EvalError, match="differ in shape"):
        memorization_report(torch.zeros(2, 1, 8, 8), torch.zeros(5, 1, 9, 9))
