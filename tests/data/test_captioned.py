"""Captioned datasets: glyphs (fonts) and scenes (procedural shapes), and ImageDataset's captions/attributes."""

import numpy as np
import pytest
import torch

from noisecraft.data import load_dataset
from noisecraft.data.base import ImageDataset
from noisecraft.data.glyphs import CHARACTERS, FAMILIES, FONTS, STYLES, VARIANTS, WEIGHTS, caption, render_glyph
from noisecraft.data.scenes import (
    COLOURS,
    GAP,
    MAX_OFFSET,
    RELATIONS,
    RGB,
    SHAPES,
    SIDE,
    SIZE_PX,
    SceneObject,
    SceneSpec,
    generate_scenes,
    parse_caption,
    spec_at,
)
from noisecraft.errors import DataError


# --------------------------------------------------------------------------------------------- glyphs
@pytest.fixture(scope="module")
def glyphs():
    return load_dataset("glyphs")


def test_glyphs_size_captions_and_attributes(glyphs):
    assert len(glyphs) == VARIANTS * len(FONTS) * len(CHARACTERS)
    assert glyphs.data_shape == (1, 32, 32) and glyphs.class_names == CHARACTERS
    a = glyphs.attributes
    assert torch.equal(a["character"], glyphs.labels)
    for i in range(0, len(glyphs), 97):  # the caption is a function of the stored attributes
        expected = caption(CHARACTERS[int(a["character"][i])], FAMILIES[int(a["family"][i])],
                           WEIGHTS[int(a["weight"][i])], STYLES[int(a["style"][i])])
        assert glyphs.captions[i] == expected
    assert caption("G", "serif", "bold", "upright") == "bold serif capital letter G"
    assert caption("g", "sans", "regular", "italic") == "italic sans small letter g"
    assert caption("7", "mono", "regular", "upright") == "mono digit 7"


def test_glyphs_keep_the_baseline_and_stay_inside(glyphs):
    x = glyphs.images[:, 0]  # (N, H, W) in [-1, 1]
    assert float(x[:, 0, :].max()) == -1  # nothing touches the top row; at most faint anti-aliasing at the sides
    assert float(x[:, :, 0].max()) < -0.8 and float(x[:, :, -1].max()) < -0.8
    ink_rows = (x > 0).any(dim=2)  # (N, H)
    lowest = torch.where(ink_rows, torch.arange(32), -1).amax(dim=1)
    letters = torch.tensor([CHARACTERS.index(c) for c in "gjpqy"])
    flat = torch.tensor([CHARACTERS.index(c) for c in "acemnorsuvwxz"])
    is_desc, is_flat = torch.isin(glyphs.labels, letters), torch.isin(glyphs.labels, flat)
    assert lowest[is_desc].float().mean() > lowest[is_flat].float().mean() + 3  # descenders go below the line


def test_glyphs_splits_and_determinism(glyphs):
    train, test = load_dataset("glyphs", split="train"), load_dataset("glyphs", split="test")
    assert len(train) + len(test) == len(glyphs)
    assert len(test) == len(CHARACTERS) * (VARIANTS * len(FONTS) // 10)
    again = load_dataset("glyphs", limit=10)
    assert torch.equal(again.images, glyphs.images[:10]) and again.captions == glyphs.captions[:10]


@pytest.mark.parametrize("font", [FONTS[0][0], FONTS[5][0], FONTS[-1][0]])
def test_glyphs_render_natively_at_a_larger_side(font):
    """side=64 is the same layout drawn at twice the size (not an upsampled 32-px image): its 2x2 means are the
    32-px glyph up to anti-aliasing, and it has edges no 2x upsampling of the 32-px image has."""
    for ch, scale, shift in (("G", 1.0, (0.0, 0.0)), ("g", 0.9, (1.2, -0.7)), ("W", 0.95, (-1.5, 1.5))):
        small = render_glyph(font, ch, scale, shift).astype(np.float64)
        big = render_glyph(font, ch, scale, shift, side=64).astype(np.float64)
        assert big.shape == (64, 64) and small.shape == (32, 32)
        pooled = big.reshape(32, 2, 32, 2).mean(axis=(1, 3))
        assert np.abs(pooled - small).mean() < 6.0  # of 255: font-size rounding, hinting and anti-aliasing
        assert np.abs(pooled - small).max() < 128
        assert np.abs(big - np.kron(small, np.ones((2, 2)))).mean() > 1.0  # finer detail than upsampling


def test_glyphs_resolution_is_checked():
    for bad in (4, 2000, 64.0, True, "64"):
        with pytest.raises(DataError, match="resolution"):
            load_dataset("glyphs", resolution=bad)


# --------------------------------------------------------------------------------------------- scenes
def test_scene_captions_round_trip_and_errors():
    spec = SceneSpec((SceneObject("circle", "red", "small"), SceneObject("square", "blue", "large")), "left of")
    assert spec.caption() == "a small red circle left of a large blue square"
    assert parse_caption(spec.caption()) == spec
    assert parse_caption("a large green triangle") == SceneSpec((SceneObject("triangle", "green", "large"),))
    for bad in ("a small red hexagon", "a red circle", "a small red circle beside a large blue square", ""):
        with pytest.raises(DataError):
            parse_caption(bad)


def test_scenes_attributes_geometry_and_pixels():
    pixels, specs, centres = generate_scenes(600, seed=3)
    ds = load_dataset("scenes", limit=600, seed=3)
    assert ds.data_shape == (3, 32, 32) and ds.captions == tuple(s.caption() for s in specs)
    assert {s.relation for s in specs} == {None, *RELATIONS}
    for i, spec in enumerate(specs):
        assert spec_at(ds.attributes, i) == spec and parse_caption(ds.captions[i]) == spec
        for k, obj in enumerate(spec.objects):  # the pixel at each centre has the object's exact colour
            cx, cy = centres[i, k]
            half = SIZE_PX[obj.size] / 2
            assert half + 1 <= cx <= SIDE - 1 - half and half + 1 <= cy <= SIDE - 1 - half
            assert tuple(pixels[i, int(cy), int(cx)]) == RGB[obj.colour]
        if spec.relation is not None:
            (xa, ya), (xb, yb) = centres[i]
            along, across = (xb - xa, yb - ya) if spec.relation in ("left of", "right of") else (yb - ya, xb - xa)
            sign = 1 if spec.relation in ("left of", "above") else -1  # "A left of B": B's x is larger
            need = (SIZE_PX[spec.objects[0].size] + SIZE_PX[spec.objects[1].size]) / 2 + GAP
            assert sign * along >= need - 1e-4 and abs(across) <= MAX_OFFSET + 1e-4
    assert pixels[:, 0].max() == 0 and pixels[:, :, 0].max() == 0  # black border row/column


def test_scenes_deterministic_prefix_and_splits():
    a = load_dataset("scenes", limit=40, seed=1)
    b = load_dataset("scenes", limit=80, seed=1)
    c = load_dataset("scenes", limit=40, seed=2)
    assert torch.equal(a.images, b.images[:40]) and a.captions == b.captions[:40]
    assert not torch.equal(a.images, c.images)
    test = load_dataset("scenes", split="test", limit=5)
    full = load_dataset("scenes", limit=7205)
    assert torch.equal(test.images, full.images[7200:7205]) and test.captions == full.captions[7200:]
    assert load_dataset("scenes", limit=4, channels=1, resolution=16).data_shape == (1, 16, 16)
    with pytest.raises(DataError, match="root"):
        load_dataset("scenes", root="/tmp")
    assert set(SHAPES) and set(COLOURS) == set(RGB)


def test_scenes_count_adds_training_draws_and_keeps_the_test_split():
    default_test = load_dataset("scenes", split="test")
    big_test = load_dataset("scenes", split="test", count=8010)
    assert torch.equal(big_test.images, default_test.images) and big_test.captions == default_test.captions
    train = load_dataset("scenes", split="train", count=8010)
    assert len(train) == 7200 + 10  # draws 0..7199, then 8000..8009
    extra = load_dataset("scenes", split="all", count=8010).subset(slice(8000, 8010))
    assert torch.equal(train.images[7200:], extra.images) and train.captions[7200:] == extra.captions
    assert torch.equal(train.images[:7200], load_dataset("scenes", split="train").images)
    small = load_dataset("scenes", split="test", count=100)  # a smaller set: its own last 10%
    assert torch.equal(small.images, load_dataset("scenes", limit=100).images[90:])
    with pytest.raises(DataError, match=r"data.count applies to the generated datasets \(scenes, .*'mnist'"):
        load_dataset("mnist", count=10)
    with pytest.raises(DataError, match="count must be an integer >= 1"):
        load_dataset("scenes", count=0)


# ---------------------------------------------------------------------------------------- ImageDataset
def test_subset_keeps_captions_and_attributes_aligned():
    ds = ImageDataset("x", torch.arange(5.0).view(5, 1), captions=tuple("abcde"),
                      attributes={"k": torch.arange(5) * 10})
    for index in (slice(1, 4), torch.tensor([4, 0, 2]), np.array([3, 3])):
        sub = ds.subset(index)
        assert [int(v) for v in sub.images[:, 0]] == [int(v) // 10 for v in sub.attributes["k"]]
        assert sub.captions == tuple("abcde"[int(v)] for v in sub.images[:, 0])
    with pytest.raises(DataError, match="captions"):
        ImageDataset("x", torch.zeros(3, 2), captions=("a",))
    with pytest.raises(DataError, match="attribute 'k'"):
        ImageDataset("x", torch.zeros(3, 2), attributes={"k": torch.zeros(2)})
