"""TrainingEvaluator: evaluates on schedule, logs and plots, tracks the best step, survives a resume."""

import json
import warnings

import pytest

from noisecraft.build import build_denoiser
from noisecraft.config import to_dict
from noisecraft.eval import EvalError
from noisecraft.presets import get_preset
from noisecraft.training.evaluation import TrainingEvaluator


@pytest.fixture
def config(tmp_path, monkeypatch):
    monkeypatch.setenv("NOISECRAFT_CACHE", str(tmp_path / "cache"))
    return get_preset("mnist-tiny")  # U-Net of ~50k parameters, data limited to 256 training digits


def test_samples_scores_logs_and_plots(config, tmp_path):
    import torch

    torch.manual_seed(0)
    denoiser = build_denoiser(config).eval()
    ev = TrainingEvaluator(to_dict(config), tmp_path / "run", metrics=("kid", "fd", "is"), every_n_steps=10,
                           num_samples=24, features="mnist", steps=2, batch_size=12)
    assert ev.maybe_evaluate(0, denoiser, (1, 28, 28)) is None
    assert ev.maybe_evaluate(5, denoiser, (1, 28, 28)) is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 24 samples < 128 feature dims: rank warning expected
        rec = ev.maybe_evaluate(10, denoiser.net, (1, 28, 28))  # a bare network is wrapped with the config's
    assert rec["step"] == 10 and rec["is_best"] and rec["num_samples"] == 24 and rec["features"] == "mnist"
    assert {"kid", "kid_std", "fd", "is", "is_std"} <= set(rec)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [10]
    assert (tmp_path / "run" / "metrics.png").stat().st_size > 0


def test_best_tracking_and_resume(config, tmp_path, monkeypatch):
    ev = TrainingEvaluator(config, tmp_path, metrics="fd,pr", every_n_steps=10, num_samples=8)
    values = iter([5.0, 7.0, 3.0, 4.0])
    monkeypatch.setattr(ev, "_generate", lambda denoiser, shape: None)
    monkeypatch.setattr(ev, "_score", lambda images: {"fd": next(values), "precision": 0.5, "recall": 0.5})
    best = [ev.maybe_evaluate(s, None, (1, 28, 28))["is_best"] for s in (10, 20, 30)]
    assert best == [True, False, True] and ev.best["step"] == 30
    again = ev.maybe_evaluate(20, None, (1, 28, 28))  # a resumed run re-evaluates step 20: later records go
    assert again["is_best"] and [r["step"] for r in ev.history()] == [10, 20] and ev.best["fd"] == 4.0


def test_bad_settings_are_clear_errors(tmp_path):
    with pytest.raises(EvalError, match="needs image data"):
        TrainingEvaluator(get_preset("toy2d"), tmp_path)
    with pytest.raises(EvalError, match="unknown metric.*'fid'.*allowed: fd, fd_inf, kid, pr, is, classes, mem"):
        TrainingEvaluator(get_preset("mnist-tiny"), tmp_path, metrics=("fid",))
    with pytest.raises(EvalError, match="every_n_steps must be an integer >= 1"):
        TrainingEvaluator(get_preset("mnist-tiny"), tmp_path, every_n_steps=0)
