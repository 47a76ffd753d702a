"""A pickle with a __reduce__ payload is refused by every loader in noisecraft, without side effects (the
payload would create a marker file), and every torch.load in the source uses weights_only=True."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from noisecraft.cli.main import main
from noisecraft.errors import NoisecraftError

ROOT = Path(__file__).resolve().parents[2]
CODE = [ROOT / "src", ROOT / "benchmarks", ROOT / "scripts"]


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def evil(tmp_path):
    """Pickle files under the names loaders look for; returns (factory, marker)."""
    marker = tmp_path / "PWNED"

    def make(name: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model.weight": Payload(marker), "state_dict": {"w": Payload(marker)}}, path)
        return path

    return make, marker


def _call(fn, *args, **kwargs):
    """fn must raise a noisecraft error (or, for a CLI call, exit 2)."""
    try:
        result = fn(*args, **kwargs)
    except NoisecraftError:
        return
    assert result == 2, f"{fn.__name__} accepted a pickle (returned {result!r})"


def _loaders():
    from noisecraft.checkpoint import load_checkpoint
    from noisecraft.pipelines import load as load_denoiser
    from noisecraft.training.posthoc_ema import reconstruct

    yield "load_checkpoint(.pt)", lambda mk: _call(load_checkpoint, mk("evil.pt"))
    yield "load_checkpoint(.ckpt)", lambda mk: _call(load_checkpoint, mk("evil.ckpt"))
    yield "load_checkpoint(disguised .safetensors)", lambda mk: _call(load_checkpoint, mk("evil.safetensors"))
    yield "load_checkpoint(run dir)", lambda mk: _call(load_checkpoint, mk("run/checkpoint.safetensors").parent)
    yield "load_denoiser(.bin)", lambda mk: _call(load_denoiser, mk("evil.bin"))
    yield "load_denoiser(run dir)", lambda mk: _call(load_denoiser, mk("run/checkpoint.safetensors").parent)
    yield "posthoc reconstruct(snapshot)", lambda mk: _call(
        reconstruct, mk("run/phema/phema-000000010.safetensors").parent.parent, 0.1)
    for command in ("sample", "ema", "eval"):
        extra = {"ema": ["--sigma-rel", "0.1"], "eval": ["--num", "2"], "sample": []}[command]
        yield f"cli {command}", lambda mk, c=command, e=extra: _call(
            main, [c, "--checkpoint", str(mk("evil.pt")), *e])
        yield f"cli {command} (run dir)", lambda mk, c=command, e=extra: _call(
            main, [c, "--checkpoint", str(mk("run/checkpoint.safetensors").parent), *e])
    yield "cli train --resume", lambda mk: _call(
        main, ["train", "--preset", "toy2d", "--out", str(mk("run/checkpoint.safetensors").parent), "--resume",
               "--steps", "1"])
    yield "eval weights file", lambda mk: _call(_effnet_load, mk("weights.pth"))
    yield "inception weights", lambda mk: _call(_inception_load, mk("pt_inception.pth"))
    yield "mnist classifier", lambda mk: _call(_mnist_load, mk("mnist.safetensors"))
    yield "scene classifier", lambda mk: _call(_scene_load, mk("scene.safetensors"))
    yield "noisy classifier", lambda mk: _call(_noisy_classifier_load, mk("clf/classifier.safetensors").parent)
    yield "autoencoder", lambda mk: _call(_autoencoder_load, mk("ae/checkpoint.safetensors").parent)
    yield "eval images .npy", lambda mk: _call(_npy_load, mk("images.npy"))
    yield "reference cache", _reference_cache


def _effnet_load(path):
    from noisecraft.eval.effnet import load_state_dict_file

    return load_state_dict_file(path)


def _inception_load(path):
    from noisecraft.eval.inception import load_inception

    return load_inception(path)


def _mnist_load(path):
    from noisecraft.eval.mnist_net import load_mnist_classifier

    return load_mnist_classifier(path)


def _scene_load(path):
    adherence = pytest.importorskip("noisecraft.eval.adherence")
    return adherence.load_scene_classifier(path)


def _noisy_classifier_load(path):
    classifier = pytest.importorskip("noisecraft.guidance.classifier")
    return classifier.load_noisy_classifier(path)


def _autoencoder_load(path):
    autoencoder = pytest.importorskip("noisecraft.autoencoder")
    return autoencoder.load_autoencoder(path)


def _npy_load(path):
    from noisecraft.eval.image_io import load_images

    np.save(path, np.array([Payload(path.parent / "PWNED")], dtype=object), allow_pickle=True)
    return load_images(path)


def _reference_cache(mk):
    """A poisoned reference-statistics cache is treated as unreadable (recomputed), never unpickled."""
    from noisecraft.eval import reference

    with pytest.warns(UserWarning, match="unreadable"):
        assert reference._read(mk("ref.safetensors"), {}) is None


LOADERS = dict(_loaders())


@pytest.mark.parametrize("name", list(LOADERS))
def test_pickle_payload_is_rejected_without_side_effect(name, evil, capsys):
    make, marker = evil
    LOADERS[name](make)
    assert not marker.exists(), f"{name}: the pickle payload ran"


def test_every_torch_load_uses_weights_only():
    """src/, benchmarks/ and scripts/: every torch.load( call passes weights_only=True."""
    calls = []
    for path in (p for folder in CODE for p in folder.rglob("*.py")):
        text = path.read_text()
        for m in re.finditer(r"torch\.load\(", text):
            depth, i = 1, m.end()
            while depth and i < len(text):  # the call's full argument list
                depth += {"(": 1, ")": -1}.get(text[i], 0)
                i += 1
            calls.append((path.relative_to(ROOT), text[m.start():i]))
    code_calls = [(p, c) for p, c in calls if not c.startswith("torch.load(weights_only")]
    assert code_calls, "expected at least one torch.load call to check"
    bad = [(str(p), c) for p, c in code_calls if not re.search(r"weights_only\s*=\s*True", c)]
    assert not bad, f"torch.load without weights_only=True: {bad}"
