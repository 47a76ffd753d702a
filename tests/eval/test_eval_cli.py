"""`noisecraft eval` through its own parser: checkpoint and image inputs, the table, the flat JSON, errors."""

import argparse
import json

import numpy as np
import pytest

from noisecraft.cli import eval_cmd
from noisecraft.errors import NoisecraftError


def _run(argv) -> int:
    parser = argparse.ArgumentParser(prog="noisecraft")
    eval_cmd.add_parser(parser.add_subparsers(dest="command"))
    return eval_cmd.run(parser.parse_args(["eval", *argv]))


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NOISECRAFT_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from noisecraft.cli.main import main

    out = tmp_path_factory.mktemp("run")
    assert main(["train", "--preset", "mnist-tiny", "--out", str(out), "--steps", "2", "data.limit=160",
                 "train.batch_size=8", "sample.num=4"]) == 0
    return out


def test_eval_checkpoint_writes_flat_json_and_neighbours(run_dir, tmp_path, capsys):
    out = tmp_path / "scores.json"
    assert _run(["--checkpoint", str(run_dir), "--num", "20", "--steps", "2", "--metrics", "fd,kid,pr,is",
                 "--features", "mnist", "--json", str(out), "--memorization-png", str(tmp_path / "nn.png")]) == 0
    result = json.loads(out.read_text())
    assert {"fd", "kid", "kid_std", "precision", "recall", "is", "is_std", "near_copies"} <= set(result)
    assert all(not isinstance(v, dict | list) for v in result.values())  # flat
    assert result["reference"] == "mnist/train" and result["num_reference"] == 160 and result["num_samples"] == 20
    text = capsys.readouterr().out
    assert "20 samples vs mnist/train (160 images), features mnist" in text and "KID" in text
    assert (tmp_path / "nn.png").is_file()


def test_eval_images_npy(tmp_path, capsys):
    from noisecraft.data import load_dataset

    imgs = load_dataset("mnist", split="test").images.numpy()[::5]  # 100 digits, all classes
    np.save(tmp_path / "x.npy", imgs)
    assert _run(["--images", str(tmp_path / "x.npy"), "--reference", "mnist", "--split", "test",
                 "--metrics", "fd,pr,fd_inf", "--json", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["features"] == "mnist" and result["reference"] == "mnist/test" and result["precision"] > 0.9
    assert result["fd_inf"] < result["fd"]  # the 1/n extrapolation removes part of the small-sample bias
    assert "noisecraft: warning: gaussian_stats: 100 samples for 128 feature dimensions" in capsys.readouterr().err


def test_eval_errors_name_the_problem(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((4, 1, 28, 28), np.uint8))
    with pytest.raises(NoisecraftError, match="--images needs --reference DATASET; allowed: .*mnist"):
        _run(["--images", str(tmp_path / "x.npy")])
    with pytest.raises(NoisecraftError, match="--inception-weights"):
        _run(["--images", str(tmp_path / "x.npy"), "--reference", "mnist", "--features", "inception"])
    with pytest.raises(NoisecraftError, match="unknown metric"):
        _run(["--images", str(tmp_path / "x.npy"), "--reference", "mnist", "--metrics", "fid"])
