"""Layout-grounded conditioning (noisecraft.conditions.layout): exact box coverage, the map, the chunker on the
scene grammar and free text, the planner (learns the relation's direction from boxes), its file, and the U-Net's
concatenated-channels input."""

import hashlib
import itertools
from dataclasses import replace

import pytest
import torch

from noisecraft.conditions.layout import (
    BOXES,
    ChunkEncoder,
    Layout,
    box_coverage,
    chunks,
    layout_generators,
    layout_map,
    limit_phrases,
    load_planner,
    relation_holds,
    residual_bank,
    save_planner,
    split_phrases,
    structure_key,
    train_planner,
)
from noisecraft.data.scenes import COLOURS, RELATIONS, SHAPES, SIZES, SceneObject, SceneSpec, load_scenes
from noisecraft.errors import CheckpointError, NoisecraftError
from noisecraft.models.unet import UNet, UNetConfig


class HashEncoder:
    """A frozen stand-in encoder: each text's pooled vector is a fixed random vector seeded by its hash."""

    identity = "hash-test"
    pooled_dim = 32

    def encode(self, prompts, allow_empty=False):
        rows = [torch.randn(self.pooled_dim, generator=torch.Generator().manual_seed(
            int(hashlib.sha256(p.encode()).hexdigest()[:8], 16))) for p in prompts]
        return None, None, torch.stack(rows)


def test_box_coverage_is_the_exact_area_fraction():
    cov = box_coverage(torch.tensor([[[0.25, 0.25, 0.75, 0.75]]]), (4, 4))[0, 0]
    expected = torch.zeros(4, 4)
    expected[1:3, 1:3] = 1
    assert torch.equal(cov, expected)
    cov = box_coverage(torch.tensor([[[0.1, 0.0, 0.2, 1.0]]]), (2, 8))[0, 0]  # x: 0.1..0.2 on 8 columns
    torch.testing.assert_close(cov[0, :3], torch.tensor([0.2, 0.6, 0.0]), atol=1e-6, rtol=0)
    assert torch.equal(cov[0], cov[1])
    g = torch.Generator().manual_seed(0)
    lo = torch.rand(5, 3, 2, generator=g) * 0.5
    boxes = torch.cat([lo, lo + torch.rand(5, 3, 2, generator=g) * 0.5], -1)  # (x0, y0, x1, y1) inside [0, 1]
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    for size in ((8, 8), (5, 7)):
        cov = box_coverage(boxes, size)
        torch.testing.assert_close(cov.sum((-1, -2)) / (size[0] * size[1]), area, atol=1e-6, rtol=0)
        assert cov.min() >= 0 and cov.max() <= 1 + 1e-6


def test_layout_map_sums_embeddings_over_boxes_and_skips_invalid_slots():
    g = torch.Generator().manual_seed(1)
    boxes = torch.tensor([[[0.0, 0.0, 0.5, 1.0], [0.5, 0.0, 1.0, 1.0]],
                          [[0.2, 0.2, 0.6, 0.6], [float("nan")] * 4]])
    emb = torch.randn(2, 2, 6, generator=g)
    valid = torch.tensor([[True, True], [True, False]])
    m = layout_map(boxes, emb, valid, (4, 4))  # (2, 6, 4, 4)
    assert m.shape == (2, 6, 4, 4) and torch.isfinite(m).all()
    assert torch.equal(m[0, :, :, :2], emb[0, 0][:, None, None].expand(6, 4, 2))  # left half: object 0 alone
    assert torch.equal(m[0, :, :, 2:], emb[0, 1][:, None, None].expand(6, 4, 2))
    cov = box_coverage(boxes[1:, :1], (4, 4))[0, 0]
    torch.testing.assert_close(m[1], cov[None] * emb[1, 0][:, None, None], atol=1e-6, rtol=0)
    dropped = layout_map(boxes, emb, torch.zeros(2, 2, dtype=torch.bool), (4, 4))
    assert torch.equal(dropped, torch.zeros_like(dropped))


def test_chunks_and_chunk_encoder_find_the_objects_in_order():
    cs, seps = chunks("a small red circle left of a large blue square", 3)
    assert cs == ["a small red circle", "left of", "a large blue square"] and seps == [False, True, False]
    enc = ChunkEncoder(HashEncoder(), max_objects=2)
    v, sep, objects, valid = enc.encode(["a small red circle left of a large blue square", "a large green triangle"])
    pooled = HashEncoder().encode(["a small red circle", "left of", "a large blue square", "a large green triangle"])[2]
    assert torch.equal(v[0], pooled[:3]) and torch.equal(sep[0], torch.tensor([0.0, 1.0, 0.0]))
    assert torch.equal(objects[0], pooled[[0, 2]]) and valid[0].tolist() == [True, True]
    assert torch.equal(objects[1, 0], pooled[3]) and valid[1].tolist() == [True, False]
    assert torch.equal(objects[1, 1], torch.zeros(32)) and torch.equal(v[1, 1:], torch.zeros(2, 32))
    with pytest.raises(NoisecraftError, match="frozen text encoder"):
        ChunkEncoder(object(), 2)


def test_scene_boxes_match_the_drawn_objects():
    ds = load_scenes(split="test", limit=50)
    boxes, x, n = ds.attributes[BOXES], ds.attributes["x"], ds.attributes["num_objects"]
    assert boxes.shape == (50, 2, 4)
    torch.testing.assert_close((boxes[..., 0] + boxes[..., 2]) / 2 * 32, x, equal_nan=True)
    side = torch.where(ds.attributes["size"] == 0, 8.0, 13.0)  # SIZE_PX: small 8, large 13 pixels
    present = ds.attributes["size"] >= 0
    torch.testing.assert_close(((boxes[..., 2] - boxes[..., 0]) * 32)[present], side[present])
    torch.testing.assert_close(((boxes[..., 3] - boxes[..., 1]) * 32)[present], side[present])
    assert torch.isnan(boxes[n == 1, 1]).all() and not torch.isnan(boxes[:, 0]).any()
    for i in range(50):  # no pixel lit outside the objects' boxes
        lit = ds.images[i].max(0).values > -0.99
        cover = box_coverage(torch.nan_to_num(boxes[i:i + 1], nan=0.0), (32, 32))[0].sum(0)
        assert not (lit & (cover == 0)).any()


@pytest.fixture(scope="module")
def planner_fit():
    """A planner fitted on the scene set's training boxes with the hash encoder (its chunk vectors are a lookup)."""
    ds = load_scenes(split="train")
    enc = ChunkEncoder(HashEncoder(), 2)
    v, sep, _, _ = enc.encode(list(ds.captions))
    planner, info = train_planner(v, sep, ds.attributes[BOXES], steps=600, seed=0)
    return planner, info, enc


def test_planner_learns_the_direction_of_every_relation(planner_fit):
    planner, info, enc = planner_fit
    test = load_scenes(split="test")
    v, sep, _, _ = enc.encode(list(test.captions))
    with torch.no_grad():
        boxes = planner(v, sep)
    rel = test.attributes["relation"]
    two = (rel >= 0).nonzero().flatten()
    right = [relation_holds(boxes[i], RELATIONS[int(rel[i])]) for i in two]
    assert len(two) > 400 and sum(right) == len(right)  # every held-out two-object caption, every relation
    one = (rel < 0).nonzero().flatten()
    centres = (boxes[one, 0, :2] + boxes[one, 0, 2:]) / 2
    torch.testing.assert_close(centres.mean(0), torch.tensor([0.5, 0.5]), atol=0.05, rtol=0)  # one object: centre
    size = torch.tensor([8 / 32 if s == 0 else 13 / 32 for s in test.attributes["size"][one, 0].tolist()])
    torch.testing.assert_close(boxes[one, 0, 2] - boxes[one, 0, 0], size, atol=0.03, rtol=0)  # "small" vs "large"
    assert info["loss"] < 0.01


def test_planner_file_round_trip_and_errors(planner_fit, tmp_path):
    planner, info, _ = planner_fit
    save_planner(planner, tmp_path, info)
    loaded, info2, bank = load_planner(tmp_path)
    assert info2 == info and bank is None and all(torch.equal(a, b) for a, b in zip(planner.state_dict().values(),
                                                                                   loaded.state_dict().values()))
    layout = Layout(HashEncoder(), loaded)
    m = layout.map(["a small red circle above a large blue square"], (8, 8))
    boxes, objects, valid = layout.plan(["a small red circle above a large blue square"])
    assert torch.equal(m, layout_map(boxes, objects, valid, (8, 8)))
    assert relation_holds(boxes[0], "above") and m.abs().sum() > 0
    with pytest.raises(CheckpointError, match="has no layout_planner"):
        load_planner(tmp_path / "nowhere")
    path = tmp_path / "layout_planner.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_planner(tmp_path)


def test_unet_concat_input_zero_map_adds_nothing_and_shapes_are_checked():
    cfg = UNetConfig(in_channels=3, base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_levels=(),
                     mid_attention=False, concat_channels=5)
    torch.manual_seed(0)
    net = UNet(cfg)
    for p in net.parameters():  # leave the zero-initialised state so that inputs reach the output
        p.data.normal_(0, 0.1, generator=torch.Generator().manual_seed(p.numel()))
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([0.1, 0.5])
    plain = net(x, t)
    assert torch.equal(net(x, t, {"concat": torch.zeros(2, 5, 8, 8)}), plain)
    m = torch.randn(2, 5, 8, 8)
    painted = net(x, t, {"concat": m})
    assert not torch.allclose(painted, plain)
    # the layout input is exactly the map concatenated to x before the first convolution
    both = torch.nn.functional.conv2d(torch.cat([x, m], 1), torch.cat([net.conv_in.weight, net.concat_in.weight], 1),
                                      net.conv_in.bias, padding=1)
    torch.testing.assert_close(net.conv_in(x) + net.concat_in(m), both, atol=1e-6, rtol=0)
    with pytest.raises(NoisecraftError, match="spatial size"):
        net(x, t, {"concat": torch.zeros(2, 5, 4, 4)})
    with pytest.raises(NoisecraftError, match=r"cond\['concat'\]: expected a float tensor of shape \(2, 5, 8, 8\)"):
        net(x, t, {"concat": torch.zeros(2, 4, 8, 8)})
    off = UNet(replace(cfg, concat_channels=0))
    with pytest.raises(NoisecraftError, match="concat_channels is 0"):
        off(x, t, {"concat": torch.zeros(2, 5, 8, 8)})


def test_residual_bank_draws_layouts_that_keep_the_relation(planner_fit, tmp_path):
    from noisecraft.conditions.layout import corners_to_centre_size

    planner, info, enc = planner_fit
    ds = load_scenes(split="train", limit=3000)
    v, sep, _, _ = enc.encode(list(ds.captions))
    keys = [structure_key(c, 3) for c in ds.captions]
    assert structure_key("a small red circle left of a large blue square", 3) == "left of#2"
    bank = residual_bank(planner, v, sep, ds.attributes[BOXES], keys, limit=2000, seed=0)
    assert len(bank.key_index) == 2000 and sorted(bank.keys) == sorted({"#1", *(f"{r}#2" for r in RELATIONS)})
    keep = torch.randperm(3000, generator=torch.Generator().manual_seed(0))[:2000].sort().values
    with torch.no_grad():  # the offsets are exactly truth - mean of the kept rows (0 where absent)
        mean = corners_to_centre_size(planner(v[keep], sep[keep]))[..., :2]
    truth = corners_to_centre_size(ds.attributes[BOXES][keep])[..., :2]
    assert torch.equal(bank.present, ~torch.isnan(truth).any(-1))
    assert torch.equal(bank.offsets, torch.where(bank.present[..., None], truth - mean, 0.0))
    assert [bank.keys[int(k)] for k in bank.key_index] == [keys[i] for i in keep.tolist()]
    save_planner(planner, tmp_path, info, bank)
    _, _, loaded_bank = load_planner(tmp_path)
    assert loaded_bank.keys == bank.keys and torch.equal(loaded_bank.offsets, bank.offsets)
    layout = Layout(HashEncoder(), planner, bank=bank)
    test = load_scenes(split="test")
    prompts = list(test.captions)
    boxes = layout.plan(prompts, layout_generators(0, len(prompts)))[0]
    rel = test.attributes["relation"]
    right = [relation_holds(boxes[j], RELATIONS[int(rel[j])]) for j in range(len(prompts)) if rel[j] >= 0]
    assert sum(right) / len(right) > 0.99  # drawn layouts still stand in the prompted relation
    assert boxes.min() >= -1e-6 and boxes.max() <= 1 + 1e-6  # and inside the image
    one = [j for j in range(len(prompts)) if rel[j] < 0]
    centres = (boxes[one, 0, :2] + boxes[one, 0, 2:]) / 2
    assert centres.std(0).min() > 0.1  # one object: spread over the image, not all at the planner's mean
    again = layout.plan(prompts[5:7], layout_generators(5, 2))[0]
    torch.testing.assert_close(again, boxes[5:7], atol=1e-6, rtol=0)  # image i's layout: seed + i, not the batch
    assert not torch.equal(layout.plan(prompts[:50], layout_generators(1, 50))[0], boxes[:50])
    with torch.no_grad():
        mean_boxes = planner(*enc.encode(prompts[:3])[:2])
    torch.testing.assert_close(layout.plan(prompts[:3])[0], mean_boxes, atol=1e-6, rtol=0)  # no generators: mean


def test_every_scene_caption_splits_into_its_objects_and_relation():
    objects = [SceneObject(s, c, z) for s, c, z in itertools.product(SHAPES, COLOURS, SIZES)]
    for a in objects:
        assert split_phrases(SceneSpec((a,)).caption()) == [f"a {a.phrase()}"]
    for a, b, rel in itertools.product(objects[:6], objects[-6:], RELATIONS):
        assert split_phrases(SceneSpec((a, b), rel).caption()) == [f"a {a.phrase()}", rel, f"a {b.phrase()}"]


def test_split_phrases_free_text_rules():
    assert split_phrases("A Cat  ON TOP OF a table, oil painting") == ["A Cat", "ON TOP OF", "a table", "oil painting"]
    assert split_phrases("a dog to the left of a tree") == ["a dog", "to the left of", "a tree"]  # longest match
    assert split_phrases("an online shop beside the ocean") == ["an online shop", "beside", "the ocean"]  # whole words
    assert split_phrases("") == [] and split_phrases(" , ; ") == []
    assert split_phrases("red and blue", separators=("blue",)) == ["red and", "blue"]
    assert split_phrases("a  b c", separators=()) == ["a b c"]
    assert limit_phrases(["a", "b", "c", "d"], 2) == ["a", "b c d"] and limit_phrases(["a"], 3) == ["a"]
