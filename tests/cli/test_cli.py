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
    args = ["sample", "--checkpoint", str(run_dir), "--sampler", "DDIM", "--steps", "3", "--schedule", "karras",
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
    assert main(["forward", "--schedule", "cosine", "--num", "5", "--out", str(tmp_path / "f.png")]) == 0
    assert Image.open(tmp_path / "f.png").width > 4 * Image.open(tmp_path / "f.png").height


def test_resume_via_cli(run_dir, tmp_path):
    import shutil

    d = tmp_path / "r"
    shutil.copytree(run_dir, d)
    assert main(["train", "--preset", "mnist-tiny", "--out", str(d), "--steps", "8", "--resume"]) == 0
    from noisecraft.training.checkpoint import load_checkpoint

    assert load_checkpoint(d).state["step"] == 8


@pytest.mark.parametrize("argv,needle", [
    (["sample", "--checkpoint", "{run}", "--sampler", "nope"], "unknown sampler 'nope'; allowed: ddim"),
    (["sample", "--checkpoint", "{run}", "--schedule", "wobbly"], "unknown step schedule 'wobbly'; allowed"),
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
    (["forward", "--schedule", "zigzag"], "unknown schedule 'zigzag'"),
])
def test_user_errors_are_one_line(argv, needle, run_dir, tmp_path, capsys):
    (tmp_path / "corrupt.safetensors").write_bytes(b"\x00" * 64)
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.toml").write_text("[train\nlr = ")
    argv = [a.replace("{run}", str(run_dir)).replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("noisecraft: error:") and needle in err and "\n" not in err


def test_steps_below_one_rejected(capsys):
    with pytest.raises(SystemExit) as e:
        main(["sample", "--checkpoint", "x", "--steps", "0"])
    assert e.value.code == 2 and "expected an integer >= 1" in capsys.readouterr().err


def test_help_does_not_import_torch():
    code = "import sys; from noisecraft.cli.main import build_parser; build_parser(); print('torch' in sys.modules)"
    # (build_parser imports every plug-in command module: none may import torch at module level)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    code = "import sys, noisecraft; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_python_dash_m_works():
    r = subprocess.run([sys.executable, "-m", "noisecraft", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "quickstart" in r.stdout


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
        lines = []
        for section, fields in cfg.items():
            if not isinstance(fields, dict):
                lines.insert(0, f"{section} = {json.dumps(fields)}")
                continue
            lines.append(f"[{section}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in fields.items() if v is not None]
        path.write_text("\n".join(lines) + "\n")
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "o")]) == 0
    assert json.loads((tmp_path / "o" / "config.json").read_text())["train"]["steps"] == 2
