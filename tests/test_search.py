"""Similarity search with diffusion features (noisecraft.search, `noisecraft index` / `noisecraft search`)."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from noisecraft.cli.main import main
from noisecraft.data import load_dataset
from noisecraft.data.images import to_uint8_image
from noisecraft.errors import NoisecraftError
from noisecraft.pipelines import load
from noisecraft.presets import get_preset
from noisecraft.search import (
    DiffusionEmbedder,
    PixelEmbedder,
    build_index,
    load_index,
    nearest_with_index,
    search,
    search_vectors,
)
from noisecraft.training.trainer import Trainer

faiss = pytest.importorskip("faiss")


def tiny_config(steps: int, seed: int = 0):
    c = get_preset("digits")
    c = replace(c, network=replace(c.network, base_channels=8, channel_mult=(1, 2), attention_levels=(1,),
                                   head_channels=8, norm_groups=4))
    return replace(c, data=replace(c.data, limit=64),
                   train=replace(c.train, batch_size=8, steps=steps, minutes=None, checkpoint_every=steps, threads=1,
                                            seed=seed))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("search") / "run"
    Trainer(tiny_config(3), out, progress=False).run()
    return out


@pytest.fixture(scope="module")
def run(run_dir):
    return load(run_dir)


@pytest.fixture(scope="module")
def images():
    return load_dataset("digits", split="train", limit=40).images  # (40, 1, 8, 8)


def write_png(t, path):
    from PIL import Image

    Image.fromarray(to_uint8_image(t)).save(path)
    return path


def test_embeddings_are_deterministic_and_batch_size_independent(run, images):
    a = DiffusionEmbedder(run, sigma=0.5, draws=2, batch_size=64)(images)
    b = DiffusionEmbedder(run, sigma=0.5, draws=2, batch_size=64)(images)
    c = DiffusionEmbedder(run, sigma=0.5, draws=2, batch_size=3)(images)
    single = DiffusionEmbedder(run, sigma=0.5, draws=2)(images[7:8])
    assert a.shape == (40, 16) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, c, atol=1e-5)
    np.testing.assert_allclose(a[7:8], single, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    other_seed = DiffusionEmbedder(run, sigma=0.5, draws=2, seed=5)(images)
    assert np.abs(other_seed - a).max() > 1e-4  # the noise really enters


def test_inversion_embeddings(run, images):
    """noise="inversion": x(sigma) is editing.img2img's ODE inversion of x0 over log-spaced levels sigma .. 0.02, 0;
    the embeddings are deterministic and batch-size independent, and an indexed image is its own nearest
    neighbour."""
    from noisecraft.editing.img2img import invert

    emb = DiffusionEmbedder(run, sigma=0.5, noise="inversion", inversion_steps=6)
    sigmas = torch.tensor([*np.geomspace(0.5, 0.02, 6), 0.0], dtype=torch.float64)
    ref = invert(run.denoiser, images[:6], sigmas, sampler="euler", final_iterations=5)
    torch.testing.assert_close(emb.noised(images[:6], 0), ref)
    assert (ref - images[:6]).abs().max() > 0.1  # it is not x0 itself
    a, b = emb(images[:10]), DiffusionEmbedder(run, sigma=0.5, noise="inversion", inversion_steps=6, batch_size=3)(
        images[:10])
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_array_equal(a, emb(images[:10]))
    scores, ids = search(build_index(emb, images[:10]), images[:10], 1, run=run)
    np.testing.assert_array_equal(ids[:, 0], np.arange(10))
    with pytest.raises(NoisecraftError, match="draws must be 1"):
        DiffusionEmbedder(run, noise="inversion", draws=2)


@pytest.mark.parametrize("layer, pool, dim", [("mid", 1, 16), ("down0", 2, 32), ("down1", 1, 16), ("up0", 1, 8),
                                              ("up1", 1, 16)])
def test_layers_and_pooling(run, images, layer, pool, dim):
    v = DiffusionEmbedder(run, layer=layer, pool=pool)(images[:4])
    assert v.shape == (4, dim) and np.isfinite(v).all()


def test_hook_records_the_block_output(run, images):
    """The embedding is the pooled output of the hooked block in an ordinary full forward pass."""
    emb = DiffusionEmbedder(run, sigma=0.3)
    got = []
    handle = run.denoiser.net.mid.register_forward_hook(lambda m, i, o: got.append(o))
    x = emb.noised(images[:5], 0)
    run.denoiser(x, torch.full((5,), 0.3, dtype=torch.float64))
    handle.remove()
    ref = got[0].mean(dim=(2, 3)).double().numpy()
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(emb(images[:5]), ref, atol=1e-5)


@pytest.mark.parametrize("kind", ["diffusion", "pixels"])
def test_an_indexed_image_is_its_own_nearest_neighbour(run, images, kind):
    emb = DiffusionEmbedder(run, sigma=0.2) if kind == "diffusion" else PixelEmbedder()
    index = build_index(emb, images, ids=np.arange(100, 140))
    scores, ids = search(index, images, k=3, run=run)
    assert scores.shape == ids.shape == (40, 3)
    np.testing.assert_array_equal(ids[:, 0], np.arange(100, 140))
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first


def test_faiss_equals_brute_force_cosine_top_k(run, images):
    emb = DiffusionEmbedder(run, sigma=1.0, pool=2)
    index = build_index(emb, images[:30])
    queries = load_dataset("digits", split="test", limit=12).images
    scores, ids = search(index, queries, k=5, run=run)
    keys = torch.nn.functional.normalize(torch.from_numpy(emb(images[:30])).double(), dim=1)
    q = torch.nn.functional.normalize(torch.from_numpy(emb(queries)).double(), dim=1)
    ref_scores, ref_ids = (q @ keys.T).topk(5, dim=1)
    np.testing.assert_array_equal(ids, ref_ids.numpy())
    np.testing.assert_allclose(scores, ref_scores.numpy(), atol=1e-5)


def test_index_round_trips_through_its_files(run, images, tmp_path):
    index = build_index(DiffusionEmbedder(run, layer="down1", pool=2, draws=2), images, labels=np.arange(40) % 10,
                        dataset={"name": "digits", "split": "train", "limit": 40})
    index.save(tmp_path / "idx")
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == ["index.faiss", "index.json"]
    meta = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert meta["embedder"]["layer"] == "down1" and meta["embedder"]["sigma"] == 0.5
    assert meta["embedder"]["run"] == str(run.path.resolve()) and meta["dataset"]["name"] == "digits"
    back = load_index(tmp_path / "idx")
    assert back.meta == index.meta and len(back) == 40
    q = images[:6]
    a, b = search(index, q, 4, run=run), search(back, q, 4)  # the reloaded index loads its run itself
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_allclose(a[0], b[0], atol=1e-6)


def test_memorization_can_use_the_index(run, images, tmp_path):
    build_index(DiffusionEmbedder(run), images).save(tmp_path / "idx")
    ids, dist = nearest_with_index(tmp_path / "idx", images[:5], k=2, run=run)
    np.testing.assert_array_equal(ids[:, 0], np.arange(5))
    np.testing.assert_allclose(dist[:, 0], 0.0, atol=5e-3)
    assert (dist[:, 1] >= dist[:, 0]).all()


def test_cli_index_and_search_write_files(run_dir, images, tmp_path, capsys):
    out = tmp_path / "idx"
    assert main(["index", "--checkpoint", str(run_dir), "--dataset", "digits", "--split", "train", "--limit", "40",
                 "--sigma", "0.5", "--layer", "mid", "--out", str(out)]) == 0
    assert (out / "index.faiss").is_file() and (out / "index.json").is_file()
    query = write_png(images[3], tmp_path / "q.png")
    grid = tmp_path / "grid.png"
    assert main(["search", "--index", str(out), "--image", str(query), "-k", "4", "--out", str(grid)]) == 0
    printed = capsys.readouterr().out
    assert "  1. id      3  score 1.0000" in printed and printed.count(" score ") == 4
    from PIL import Image

    with Image.open(grid) as img:
        info = json.loads(img.text["noisecraft"])
        assert img.size == (2 * (5 * 8 + 6 * 2), 2 * (8 + 2 * 2))  # 5 tiles in a row, scale 2
    assert info["ids"][0] == 3 and len(info["scores"]) == 4


def test_cli_pixel_index_needs_no_checkpoint(tmp_path, images, capsys):
    out = tmp_path / "pix"
    assert main(["index", "--features", "pixels", "--dataset", "digits", "--limit", "20", "--out", str(out)]) == 0
    q = write_png(images[11], tmp_path / "q.png")
    assert main(["search", "--index", str(out), "--image", str(q), "-k", "1"]) == 0
    assert "id     11  score 1.0000" in capsys.readouterr().out


def one_line_error(argv, capsys, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("noisecraft: error:") and needle in err, err


def test_bad_input_is_a_one_line_error(run_dir, run, images, tmp_path, capsys):
    out = tmp_path / "idx"
    assert main(["index", "--checkpoint", str(run_dir), "--dataset", "digits", "--limit", "20", "--out", str(out)]) == 0
    capsys.readouterr()
    big = write_png(torch.zeros(1, 16, 16), tmp_path / "big.png")
    one_line_error(["search", "--index", str(out), "--image", str(big)], capsys, "(1, 16, 16)")
    q = write_png(images[0], tmp_path / "q.png")
    one_line_error(["search", "--index", str(out), "--image", str(q), "-k", "0"], capsys, "k must be")
    one_line_error(["search", "--index", str(out), "--image", str(q), "-k", "21"], capsys, "[1, 20]")
    one_line_error(["search", "--index", str(tmp_path), "--image", str(q)], capsys, "not a search index")
    one_line_error(["index", "--dataset", "digits", "--out", str(tmp_path / "x")], capsys, "--checkpoint")
    one_line_error(["index", "--checkpoint", str(run_dir), "--dataset", "digits", "--layer", "up7",
                    "--out", str(tmp_path / "x")], capsys, "unknown layer 'up7'")
    index = load_index(out)
    with pytest.raises(NoisecraftError, match="k must be"):
        search_vectors(index, np.zeros((1, 16), np.float32), 0)
    with pytest.raises(NoisecraftError, match="resize them first"):
        search(index, torch.zeros(2, 3, 8, 8), 2, run=run)


def test_an_index_for_another_model_is_refused(run, images, tmp_path):
    other_dir = tmp_path / "other"
    Trainer(tiny_config(1, seed=1), other_dir, progress=False).run()
    index = build_index(DiffusionEmbedder(run), images[:10])
    with pytest.raises(NoisecraftError, match="built with another model") as e:
        search(index, images[:2], 2, run=load(other_dir))
    assert "\n" not in str(e.value)


def test_cli_inversion_index(run_dir, images, tmp_path, capsys):
    out = tmp_path / "inv"
    assert main(["index", "--checkpoint", str(run_dir), "--dataset", "digits", "--limit", "12", "--noise", "inversion",
                 "--inversion-steps", "3", "--layer", "down1", "--out", str(out)]) == 0
    spec = load_index(out).meta["embedder"]
    assert (spec["noise"], spec["inversion_steps"], spec["layer"]) == ("inversion", 3, "down1")
    q = write_png(images[5], tmp_path / "q.png")
    assert main(["search", "--index", str(out), "--image", str(q), "-k", "2"]) == 0
    assert "  1. id      5  score 1.0000" in capsys.readouterr().out
