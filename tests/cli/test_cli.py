"""The `noisecraft` command: runs, writes what it promises, and turns user errors into one line."""

import json
import subprocess
import sys

import pytest
from PIL import Image

from noisecraft.cli.main import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "--preset", "mnist-tiny", "--out", str(out), "--steps", "6", "train.log_every=2",
                 "data.limit=64", "train.batch_size=8", "sample.num=4"]) == 0
    return out


def test_train_writes_run_directory(run_dir):
    for name in ("checkpoint.safetensors", "config.json", "loss.png", "samples.png", "log.jsonl"):
        assert (run_dir / name).is_file(), name
    assert json.loads((run_dir / "config.json").read_text())["train"]["steps"] == 6


def test_sample_same_seed_same_bytes_and_metadata(run_dir, tmp_path):
    args = ["sample", "--checkpoint", str(run_dir), "--sampler", "DDIM", "--steps", "3", "--step-schedule", "karras",
            "--num", "4", "--seed", "7"]
    assert main([*args, "--out", str(tmp_path / "a.png")]) == 0
    assert main([*args, "--out", str(tmp_path / "b.png")]) == 0
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    info = Image.open(tmp_path / "a.png").text
    assert "Steps: 3, Sampler: ddim, Schedule type: karras, Seed: 7" in info["parameters"]
    meta = json.loads(info["noisecraft"])
    assert meta["seed"] == 7 and meta["sampler"] == "ddim" and meta["num"] == 4


def test_sample_individual_files_match_batch(run_dir, tmp_path):
    """Image i of a batch equals the same seed generated alone (per-sample generators)."""
    common = ["sample", "--checkpoint", str(run_dir), "--steps", "3", "--sampler", "euler_a"]
    assert main([*common, "--num", "3", "--seed", "10", "--out", str(tmp_path / "batch")]) == 0
    assert main([*common, "--num", "1", "--seed", "12", "--out", str(tmp_path / "alone")]) == 0
    a = Image.open(tmp_path / "batch" / "000012.png")
    b = Image.open(tmp_path / "alone" / "000012.png")
    assert a.tobytes() == b.tobytes()


def test_trajectory_and_forward(run_dir, tmp_path):
    assert main(["sample", "--checkpoint", str(run_dir), "--steps", "4", "--num", "2", "--out",
                 str(tmp_path / "s.png"), "--trajectory", str(tmp_path / "t.gif")]) == 0
    gif = Image.open(tmp_path / "t.gif")
    assert gif.n_frames == 4
    assert main(["forward", "--noise-schedule", "cosine", "--num", "5", "--out", str(tmp_path / "f.png")]) == 0
    assert Image.open(tmp_path / "f.png").width == 4 * (2 + 5 * 30)  # one row of 5 frames (28 px + pad) at 4x


def test_resume_via_cli(run_dir, tmp_path):
    import shutil

    d = tmp_path / "r"
    shutil.copytree(run_dir, d)
    assert main(["train", "--preset", "mnist-tiny", "--out", str(d), "--steps", "8", "--resume"]) == 0
    from noisecraft.checkpoint import load_checkpoint

    assert load_checkpoint(d).state["step"] == 8


@pytest.mark.parametrize("argv,needle", [
    (["sample", "--checkpoint", "{run}", "--sampler", "nope"], "unknown sampler 'nope'; allowed: consistency, ddim"),
    (["sample", "--checkpoint", "{run}", "--step-schedule", "wobbly"], "unknown step schedule 'wobbly'; allowed"),
    (["sample", "--checkpoint", "{run}", "--sampler", "heun", "--eta", "0.5"],
     "sampler 'heun' has no option 'eta'; allowed: s_churn (float, default 0, >= 0: EDM S_churn"),
    (["sample", "--checkpoint", "{run}", "--sampler", "heun", "--option", "churn=1"],
     "sampler 'heun' has no option 'churn'; allowed: s_churn (float, default 0, >= 0: EDM S_churn"),
    (["sample", "--checkpoint", "{run}", "--sampler", "euler_a", "--eta", "-1"],
     "sampler 'euler_a': option 'eta' must be in [0, 1]; got -1"),
    (["sample", "--checkpoint", "{run}", "--sampler", "heun", "--option", "s_churn=lots"],
     "sampler 'heun': option 's_churn' must be a number; got 'lots'"),
    (["sample", "--checkpoint", "{tmp}/none"], "checkpoint not found"),
    (["sample", "--checkpoint", "{tmp}"], "no checkpoint in"),
    (["sample", "--checkpoint", "{tmp}/corrupt.safetensors"], "corrupt"),
    (["train", "--preset", "mnist-tiny", "--out", "{tmp}/x", "train.lr=fast"], "train.lr: expected a number"),
    (["train", "--preset", "mnist-tiny", "--out", "{tmp}/x", "train.speed=3"], "unknown field(s) speed; allowed"),
    (["train", "--preset", "nosuch", "--out", "{tmp}/x"], "unknown preset 'nosuch'; allowed"),
    (["train", "--preset", "mnist-tiny", "--out", "{tmp}/x", "data.dataset=folder", "data.root={tmp}/empty"],
     "no images"),
    (["train", "--preset", "mnist-tiny", "--out", "{tmp}/x", "diffusion.schedule=quadratic"],
     "unknown schedule 'quadratic'"),
    (["train", "--config", "{tmp}/bad.toml", "--out", "{tmp}/x"], "could not be parsed"),
    (["forward", "--noise-schedule", "zigzag"], "unknown schedule 'zigzag'"),
])
def test_user_errors_are_one_line(argv, needle, run_dir, tmp_path, capsys):
    (tmp_path / "corrupt.safetensors").write_bytes(b"\x00" * 64)
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.toml").write_text("[train\nlr = ")
    argv = [a.replace("{run}", str(run_dir)).replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("noisecraft: error:") and needle in err and "\n" not in err


def test_sampler_options_reach_the_sampler(run_dir, tmp_path):
    """heun --option s_churn=0.5 runs EDM's stochastic Alg. 2: a different image than s_churn=0 (Alg. 1), which
    is the image of no option at all; the checked value is recorded in the metadata."""
    common = ["sample", "--checkpoint", str(run_dir), "--sampler", "heun", "--steps", "3", "--num", "2"]
    paths = {k: tmp_path / f"{k}.png" for k in ("churn", "zero", "none")}
    assert main([*common, "--option", "s_churn=0.5", "--option", "s_tmin=0", "--out", str(paths["churn"])]) == 0
    assert main([*common, "--option", "s_churn=0", "--out", str(paths["zero"])]) == 0
    assert main([*common, "--out", str(paths["none"])]) == 0
    churn, zero, none = (Image.open(paths[k]) for k in ("churn", "zero", "none"))
    assert churn.tobytes() != zero.tobytes() and zero.tobytes() == none.tobytes()
    assert json.loads(churn.text["noisecraft"])["options"] == {"s_churn": 0.5, "s_tmin": 0.0}


def test_eta_is_a_shorthand_for_the_option(run_dir, tmp_path):
    common = ["sample", "--checkpoint", str(run_dir), "--sampler", "ddim", "--steps", "3", "--num", "2"]
    assert main([*common, "--eta", "0.5", "--out", str(tmp_path / "a.png")]) == 0
    assert main([*common, "--option", "eta=0.5", "--out", str(tmp_path / "b.png")]) == 0
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_samplers_lists_every_sampler_with_aliases_and_options(capsys):
    from noisecraft import samplers

    assert main(["samplers"]) == 0
    out = capsys.readouterr().out
    for name in samplers.available():
        assert f"\n{name}: {samplers.DESCRIPTIONS[name]}\n" in out
    assert "aliases: k_heun, 'heun (edm)', edm" in out and "'dpm++ 2m'" in out
    assert "option s_churn (float, default 0, >= 0: EDM S_churn" in out
    assert "option order (int, default 4, one of 1, 2, 3, 4" in out  # lms
    with pytest.raises(SystemExit) as e:  # the same list, and no --checkpoint needed
        main(["sample", "--list-samplers"])
    assert e.value.code == 0 and capsys.readouterr().out == out


def test_old_schedule_spelling_still_works(run_dir, tmp_path):
    """--schedule is a hidden alias: of --step-schedule in sample, of --noise-schedule in forward."""
    common = ["sample", "--checkpoint", str(run_dir), "--steps", "2", "--num", "1"]
    assert main([*common, "--step-schedule", "karras", "--out", str(tmp_path / "new.png")]) == 0
    assert main([*common, "--schedule", "karras", "--out", str(tmp_path / "old.png")]) == 0
    assert (tmp_path / "new.png").read_bytes() == (tmp_path / "old.png").read_bytes()
    assert "Schedule type: karras" in Image.open(tmp_path / "new.png").text["parameters"]
    for flag, name in (("--noise-schedule", "new"), ("--schedule", "old")):
        assert main(["forward", flag, "edm", "--num", "3", "--out", str(tmp_path / f"f-{name}.png")]) == 0
    assert (tmp_path / "f-new.png").read_bytes() == (tmp_path / "f-old.png").read_bytes()
    assert json.loads(Image.open(tmp_path / "f-new.png").text["noisecraft"])["schedule"] == "edm"


def test_help_hides_the_old_spellings():
    from noisecraft.cli.main import build_parser

    sub = build_parser()._subparsers._group_actions[0].choices
    sample, forward = sub["sample"].format_help(), sub["forward"].format_help()
    assert "--step-schedule" in sample and "--schedule" not in sample.replace("--step-schedule", "")
    assert "--noise-schedule" in forward and "--schedule" not in forward.replace("--noise-schedule", "")
    assert "--list-samplers" in sample and "--option KEY=VALUE" in sample


def _label_columns(band, n):
    """The label band cut into n equal columns."""
    w = band.shape[1] // n
    return [band[:, i * w:(i + 1) * w] for i in range(n)]


def test_forward_frames_are_labelled_with_their_noise_level(tmp_path):
    import numpy as np

    from noisecraft.data import load_dataset
    from noisecraft.viz import to_uint8, upscale

    assert main(["forward", "--noise-schedule", "linear", "--num", "4", "--out", str(tmp_path / "f.png")]) == 0
    img = Image.open(tmp_path / "f.png")
    meta = json.loads(img.text["noisecraft"])
    assert meta["schedule"] == "linear" and len(meta["sigmas"]) == 4 and meta["timesteps"][-1] == 999
    arr, scale, pad = np.asarray(img), 4, 2  # MNIST 28 px shown at 112 px; grid_image's pad
    grid_h = (28 + 2 * pad) * scale
    x0 = upscale(to_uint8(load_dataset("mnist", limit=1).images[:1])[0], scale)[..., 0]
    assert np.array_equal(arr[pad * scale:(pad + 28) * scale, pad * scale:(pad + 28) * scale], x0)  # sigma = 0
    assert arr.shape[0] > grid_h and not arr[grid_h - pad * scale:grid_h].any()  # the picture, then the labels
    labels = _label_columns(arr[grid_h:], 4)
    assert all(c.max() > 128 for c in labels)
    assert all(not np.array_equal(a, b) for i, a in enumerate(labels) for b in labels[i + 1:])


def test_trajectory_frames_are_labelled_with_sigma(tmp_path):
    """PNG strip and GIF: each step's picture exactly as before (x_t above the x0 estimate), sigma below."""
    import numpy as np
    import torch

    from noisecraft.viz import grid_image, save_trajectory, upscale

    g = torch.Generator().manual_seed(0)
    frames = [(s, torch.randn(1, 8, 8, generator=g), torch.rand(1, 8, 8, generator=g) * 2 - 1) for s in (9.0, 2.0, 0.3)]
    pictures = [upscale(grid_image(torch.stack([x / (1 + s**2) ** 0.5, d]), nrow=1), 3) for s, x, d in frames]
    h = pictures[0].shape[0]
    save_trajectory(frames, tmp_path / "t.png")
    strip = np.asarray(Image.open(tmp_path / "t.png"))
    assert np.array_equal(strip[:h], np.concatenate(pictures, axis=1)[..., 0])
    labels = _label_columns(strip[h:], 3)
    assert all(c.max() > 128 for c in labels) and not np.array_equal(labels[0], labels[1])
    save_trajectory(frames, tmp_path / "t.gif")
    gif = Image.open(tmp_path / "t.gif")
    shown = []
    for i in range(gif.n_frames):
        gif.seek(i)
        shown.append(np.asarray(gif.convert("L")))
        assert np.array_equal(shown[-1][:h], pictures[i][..., 0])
    assert shown[0][h:].max() > 128 and not np.array_equal(shown[0][h:], shown[1][h:])


def test_every_command_is_in_the_table(capsys):
    from noisecraft.cli.main import COMMANDS

    assert main([]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS) and {"quickstart", "train", "sample", "samplers", "presets",
                                                      "forward", "schedule", "eval", "ema"} <= set(COMMANDS)


def test_steps_below_one_rejected(capsys):
    with pytest.raises(SystemExit) as e:
        main(["sample", "--checkpoint", "x", "--steps", "0"])
    assert e.value.code == 2 and "expected an integer >= 1" in capsys.readouterr().err


def test_help_does_not_import_torch():
    code = "import sys; from noisecraft.cli.main import build_parser; build_parser(); print('torch' in sys.modules)"
    # (build_parser imports every command module in COMMANDS: none may import torch at module level)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    code = "import sys, noisecraft; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_python_dash_m_works():
    r = subprocess.run([sys.executable, "-m", "noisecraft", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "quickstart" in r.stdout


def _toml_lines(table: dict, prefix: str = "") -> list[str]:
    """TOML for a config dict: its values (None left out), then each sub-dict as a [section.sub] table."""
    lines = [f"{k} = {json.dumps(v)}" for k, v in table.items() if v is not None and not isinstance(v, dict)]
    for k, v in table.items():
        if isinstance(v, dict):
            lines += [f"[{prefix}{k}]", *_toml_lines(v, f"{prefix}{k}.")]
    return lines


@pytest.mark.parametrize("fmt", ["json", "toml", "yaml"])
def test_train_from_config_file(run_dir, tmp_path, fmt):
    cfg = json.loads((run_dir / "config.json").read_text())
    cfg["train"]["steps"] = 2
    path = tmp_path / f"c.{fmt}"
    if fmt == "json":
        path.write_text(json.dumps(cfg))
    elif fmt == "yaml":
        import yaml

        path.write_text(yaml.safe_dump(cfg))
    else:
        path.write_text("\n".join(_toml_lines(cfg)) + "\n")
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "o")]) == 0
    assert json.loads((tmp_path / "o" / "config.json").read_text())["train"]["steps"] == 2
