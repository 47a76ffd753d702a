"""PLY round trips (ours and trimesh's reader), bad clouds refused before anything is written, the shapes
dataset, and end to end: noisecraft train --preset points-shapes (tiny), then sample to .ply and .png."""

import numpy as np
import pytest
import torch

from noisecraft.cli.main import main
from noisecraft.data import load_dataset
from noisecraft.errors import DataError
from noisecraft.points.io import PointCloudError, ply_bytes, read_ply, save_ply
from noisecraft.points.shapes import KINDS, generate, sample_surface

TINY = ["data.count=60", "train.batch_size=8", "network.hidden_size=16", "network.depth=1", "network.num_heads=2",
        "network.freq_dim=16", "sample.steps=2", "sample.num=2"]


def test_ply_round_trip_several_clouds_and_trimesh_reads_it(tmp_path):
    import trimesh

    clouds = np.random.default_rng(0).normal(size=(3, 3, 17)).astype(np.float32)
    path = save_ply(clouds, tmp_path / "c.ply", n_points=17, comments=["seed 1"])
    assert np.array_equal(read_ply(path), clouds.astype(np.float64))
    loaded = trimesh.load(path)
    assert np.array_equal(np.asarray(loaded.vertices), clouds.transpose(0, 2, 1).reshape(-1, 3))


def test_read_ascii_ply_without_cloud_property(tmp_path):
    text = "ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\n" \
           "property uchar red\nend_header\n1 2 3 255\n4 5 6 0\n"
    (tmp_path / "a.ply").write_text(text)
    assert np.array_equal(read_ply(tmp_path / "a.ply"), np.array([[[1.0, 4.0], [2.0, 5.0], [3.0, 6.0]]]))
    (tmp_path / "b.ply").write_text("not a ply")
    with pytest.raises(PointCloudError, match="not a PLY file"):
        read_ply(tmp_path / "b.ply")


def test_wrong_point_count_and_nan_are_errors_and_nothing_is_written(tmp_path):
    out = tmp_path / "bad.ply"
    with pytest.raises(PointCloudError, match="16 points per cloud, but the model's clouds have 17"):
        save_ply(np.zeros((2, 3, 16)), out, n_points=17)
    bad = np.zeros((2, 3, 17))
    bad[1, 2, 5] = np.nan
    with pytest.raises(PointCloudError, match="1 coordinate.* NaN or inf"):
        save_ply(bad, out, n_points=17)
    with pytest.raises(PointCloudError, match=r"expected shape \(K, 3, N\)"):
        ply_bytes(np.zeros((2, 4, 17)))
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_surface_sampling_is_uniform_on_a_square():
    vertices = np.array([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    pts = sample_surface(vertices, faces, 20000, np.random.default_rng(0))
    assert np.all((pts[:, :2] >= 0) & (pts[:, :2] <= 1)) and np.all(pts[:, 2] == 0)
    hist, _, _ = np.histogram2d(pts[:, 0], pts[:, 1], bins=4, range=((0, 1), (0, 1)))
    assert np.abs(hist / 20000 - 1 / 16).max() < 0.01  # uniform to sampling error (sd ~ 0.0017)


def test_shapes_are_deterministic_normalised_and_labelled():
    a, labels, captions = generate(12, seed=3)
    b, _, _ = generate(12, seed=3)
    assert np.array_equal(a, b) and a.shape == (12, 3, 128)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1).max(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(a.mean(2), 0.0, atol=1e-6)
    assert labels.tolist() == [i % len(KINDS) for i in range(12)]
    assert all(c.startswith("a ") and c.split()[-1] == KINDS[k] for c, k in zip(captions, labels, strict=True))


def test_dataset_splits_are_disjoint_and_balanced():
    train = load_dataset("shapes-points", split="train", count=60)
    test = load_dataset("shapes-points", split="test", count=60)
    assert len(train) == 54 and len(test) == 6 and sorted(test.labels.tolist()) == list(range(6))
    assert train.data_shape == (3, 128) and train.class_names == KINDS
    assert not any(torch.equal(t, s) for t in test.images for s in train.images)
    with pytest.raises(DataError, match="takes no root"):
        load_dataset("shapes-points", resolution=32)


@pytest.fixture(scope="module")
def points_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pts")
    assert main(["train", "--preset", "points-shapes", "--steps", "2", "--out", str(out), "--device", "cpu",
                 *TINY]) == 0
    return out


def test_train_then_sample_ply_and_png(points_run, tmp_path):
    assert (points_run / "samples.png").is_file()  # train's preview: the rendered clouds
    assert main(["sample", "--checkpoint", str(points_run), "--num", "3", "--steps", "2", "--class", "2",
                 "--guidance", "2", "--out", str(tmp_path / "cloud.ply")]) == 0
    clouds = read_ply(tmp_path / "cloud.ply")
    assert clouds.shape == (3, 3, 128) and np.isfinite(clouds).all()
    assert main(["sample", "--checkpoint", str(points_run), "--num", "2", "--steps", "2", "--sampler", "euler",
                 "--out", str(tmp_path / "clouds.png")]) == 0
    from PIL import Image

    with Image.open(tmp_path / "clouds.png") as im:
        assert im.size[0] > 100


def test_bad_extension_is_a_one_line_error(points_run, tmp_path, capsys):
    assert main(["sample", "--checkpoint", str(points_run), "--out", str(tmp_path / "x.obj")]) != 0
    err = capsys.readouterr().err
    assert "a point-clouds model writes .ply, .png; got '.obj'" in err and "Traceback" not in err
    assert not (tmp_path / "x.obj").exists()


def test_every_sampler_with_guidance_gives_finite_clouds(points_run):
    from noisecraft.pipelines import Request, generate, load
    from noisecraft.samplers import SAMPLERS

    run = load(points_run)
    for name in sorted(set(SAMPLERS) - {"fitted"}):  # "fitted" runs a solver file fitted to one model
        out = generate(run, Request(sampler=name, steps=2, num=2, class_ids=(1,), guidance=1.5))
        assert out.images.shape == (2, 3, 128) and torch.isfinite(out.images).all(), name


def test_flow_parameterisation_trains_and_samples(tmp_path):
    assert main(["train", "--preset", "points-shapes", "--steps", "2", "--out", str(tmp_path), "--device", "cpu",
                 *TINY, "diffusion.schedule=flow", "diffusion.prediction=flow", "sample.sampler=euler",
                 "sample.step_schedule=uniform"]) == 0
    assert main(["sample", "--checkpoint", str(tmp_path), "--num", "2", "--steps", "3",
                 "--out", str(tmp_path / "flow.ply")]) == 0
    assert read_ply(tmp_path / "flow.ply").shape == (2, 3, 128)


def test_text_to_point_cloud_preset_trains_and_samples_a_prompt(tmp_path):
    assert main(["train", "--preset", "points-shapes-text", "--steps", "2", "--out", str(tmp_path), "--device",
                 "cpu", *TINY]) == 0
    assert main(["sample", "--checkpoint", str(tmp_path), "--num", "2", "--steps", "2", "--prompt", "a tall cone",
                 "--guidance", "3", "--out", str(tmp_path / "cone.ply")]) == 0
    assert read_ply(tmp_path / "cone.ply").shape == (2, 3, 128)
