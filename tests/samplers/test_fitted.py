"""Fitted non-stationary solvers (samplers.fitted, BNS): exact extraction of existing samplers, fitting that
lowers the error on held-out noise of an exact mixture, the JSON format and its errors, the NFE checks, and the
`schedule fit-solver` / `sample --solver` commands."""

import argparse
import json
import math
from dataclasses import replace

import pytest
import torch

from analytic import GaussianMixture
from noisecraft import samplers
from noisecraft.cli import schedule_cmd
from noisecraft.cli.main import main
from noisecraft.errors import NoisecraftError
from noisecraft.samplers.fitted import FittedSolver, extract, fit, load_solver, sample_fitted
from noisecraft.schedules.steps import karras_sigmas

MIX = GaussianMixture(torch.tensor([[1.0, 0.5, -0.5], [-1.0, 0.0, 0.5], [0.0, -1.0, 0.0]]), [0.3, 0.2, 0.25])
SIGMA_MIN, SIGMA_MAX = 0.02, 20.0


def noise(n, seed, sigma=SIGMA_MAX):
    return sigma * torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("name,opts,steps", [
    ("euler", {}, 6), ("ddim", {}, 6), ("heun", {}, 4), ("heun", {"final": "extrapolate"}, 4),
    ("dpm_solver_2", {}, 4), ("dpm_solver_3", {}, 3), ("dpmpp_2s", {}, 4), ("dpmpp_2m", {}, 6),
    ("dpmpp_3m", {"final": "extrapolate"}, 6), ("unipc", {"order": 3}, 6), ("unipc", {"variant": "bh1"}, 6),
    ("lms", {}, 6), ("deis", {"final": "extrapolate"}, 6), ("expint", {"order": 3}, 6),
])
def test_extraction_reproduces_the_sampler_exactly(name, opts, steps):
    """Unfitted, the extracted solver is the sampler: same output on a real (nonlinear) denoiser, float64."""
    sigmas = karras_sigmas(SIGMA_MIN, SIGMA_MAX, steps)
    solver = extract(name, sigmas, options=opts)
    x = noise(16, 0)
    want = samplers.get(name)(MIX.denoise, x, sigmas, **opts)
    got = solver.run(MIX.denoise, x)
    assert float((got - want).abs().max()) <= 1e-10
    assert solver.sigmas[0] == float(sigmas[0]) and solver.meta["base_sampler"] == name


def test_extracted_euler_coefficients_are_the_euler_steps():
    """Euler in the VE view: x_{k+1} = (s_{k+1} / s_k) x_k + (1 - s_{k+1} / s_k) D_k, unrolled."""
    sigmas = torch.tensor([4.0, 2.0, 1.0, 0.0], dtype=torch.float64)
    s = extract("euler", sigmas)
    assert s.sigmas == (4.0, 2.0, 1.0)
    assert s.a == pytest.approx((0.5, 0.25, 0.0), abs=1e-15)
    assert s.b[0] == pytest.approx((0.5,)) and s.b[1] == pytest.approx((0.25, 0.5))
    assert s.b[2] == pytest.approx((0.0, 0.0, 1.0), abs=1e-15)


@pytest.mark.parametrize("name,opts", [("euler_a", {}), ("dpmpp_2m_sde", {}), ("ode", {})])
def test_stochastic_and_adaptive_samplers_are_refused(name, opts):
    with pytest.raises(NoisecraftError, match="not linear|fixed-step|data"):
        extract(name, karras_sigmas(SIGMA_MIN, SIGMA_MAX, 4), options=opts)


def test_fitting_lowers_the_error_on_held_out_noise():
    """Fitted on one noise batch, the solver is closer to the exact ODE solution on another batch."""
    sigmas = karras_sigmas(SIGMA_MIN, SIGMA_MAX, 4)
    start = extract("euler", sigmas)
    x_fit, x_val, x_test = noise(96, 1), noise(32, 2), noise(128, 3)
    exact = lambda x: MIX.ode_solution(x, SIGMA_MAX, rtol=1e-9, atol=1e-9)  # noqa: E731
    result = fit(MIX.denoise, start, x_fit, exact(x_fit), sigma_min=SIGMA_MIN, iterations=60, lr=3e-2,
                 validation=(x_val, exact(x_val)))
    ref = exact(x_test)
    before = float((start.run(MIX.denoise, x_test) - ref).pow(2).mean().sqrt())
    after = float((result.solver.run(MIX.denoise, x_test) - ref).pow(2).mean().sqrt())
    assert result.rmse < result.initial_rmse and after < 0.7 * before
    assert result.model_calls >= 60 * 4 and result.solver.meta["fit"]["samples"] == 96
    assert result.solver.sigmas[0] == start.sigmas[0]  # the start level is kept
    assert all(SIGMA_MIN <= s <= SIGMA_MAX for s in result.solver.sigmas)


def test_no_iterations_returns_the_start():
    start = extract("dpmpp_2m", karras_sigmas(SIGMA_MIN, SIGMA_MAX, 3))
    x = noise(8, 4)
    result = fit(MIX.denoise, start, x, x * 0, sigma_min=SIGMA_MIN, iterations=0)
    assert result.solver == start


def test_json_round_trip_and_sampler(tmp_path):
    sigmas = karras_sigmas(SIGMA_MIN, SIGMA_MAX, 5)
    solver = extract("unipc", sigmas, options={"order": 2})
    path = solver.save(tmp_path / "s.json")
    loaded = load_solver(path)
    assert loaded == solver and loaded.meta == json.loads(json.dumps(solver.meta))
    x = noise(8, 5)
    out = sample_fitted(MIX.denoise, x, sigmas, solver=str(path))
    assert torch.equal(out, solver.run(MIX.denoise, x))
    seen = []
    sample_fitted(MIX.denoise, x, sigmas, solver=str(path), callback=seen.append)
    assert [i["sigma"] for i in seen] == pytest.approx(list(solver.sigmas)) and seen[-1]["sigma_next"] == 0.0
    assert samplers.get("fitted") is sample_fitted and samplers.options("fitted") == {"solver": ""}


def _write(tmp_path, data) -> str:
    path = tmp_path / "bad.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


GOOD = {"format": "noisecraft-fitted-solver", "version": 1, "nfe": 2, "sigmas": [10.0, 1.0], "a": [0.1, 0.0],
        "b": [[0.9], [0.0, 1.0]], "meta": {}}


@pytest.mark.parametrize("change,match", [
    ("{not json", "not valid JSON"),
    ([1, 2], "not a fitted solver"),
    ({"format": "other"}, "not a fitted solver"),
    ({"version": 7}, "version 7 is not supported"),
    ({"nfe": None, "_drop": "a"}, "missing key"),
    ({"nfe": 3}, "nfe is 3 but it lists 2 sigmas"),
    ({"b": [[0.9], [0.0]]}, r"row b\[1\] must hold 2 coefficients"),
    ({"a": [0.1]}, "needs 2 coefficients a"),
    ({"sigmas": [10.0, -1.0]}, "must be > 0"),
    ({"a": [0.1, "x"]}, "finite numbers"),
    ({"b": "no"}, "b a list of lists"),
])
def test_bad_files_are_refused_with_the_reason(tmp_path, change, match):
    if isinstance(change, dict):
        data = {**GOOD, **{k: v for k, v in change.items() if k != "_drop"}}
        data.pop(change.get("_drop", "-"), None)
    else:
        data = change
    with pytest.raises(NoisecraftError, match=match):
        load_solver(_write(tmp_path, data))


def test_nan_and_missing_files_are_refused(tmp_path):
    with pytest.raises(NoisecraftError, match="finite"):
        load_solver(_write(tmp_path, json.dumps(GOOD).replace("0.9", "NaN")))
    with pytest.raises(NoisecraftError, match="cannot read fitted solver"):
        load_solver(tmp_path / "missing.json")


def test_nfe_and_start_level_mismatches_are_errors(tmp_path):
    path = _write(tmp_path, GOOD)
    x = noise(2, 6, 10.0)
    with pytest.raises(NoisecraftError, match="takes 2 denoiser evaluations.*asked for 3 steps; use --steps 2"):
        sample_fitted(MIX.denoise, x, torch.tensor([10.0, 5.0, 1.0, 0.0]), solver=path)
    with pytest.raises(NoisecraftError, match="starts at sigma_max = 10"):
        sample_fitted(MIX.denoise, x, torch.tensor([12.0, 1.0, 0.0]), solver=path)
    with pytest.raises(NoisecraftError, match="needs option solver=FILE.json"):
        sample_fitted(MIX.denoise, x, torch.tensor([10.0, 1.0, 0.0]))
    out = sample_fitted(MIX.denoise, x, torch.tensor([10.0, 3.0, 0.0]), solver=path)  # inner levels: the file's
    d0 = MIX.denoise(x, 10.0)
    assert torch.allclose(out, MIX.denoise(0.1 * x + 0.9 * d0, 1.0))


def parse(argv):
    parser = argparse.ArgumentParser()
    schedule_cmd.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_fit_solver_on_a_mixture(tmp_path, capsys):
    out = tmp_path / "s.json"
    args = parse(["schedule", "fit-solver", "--mixture", "bench:3:3", "--nfe", "4", "--out", str(out), "--batch",
                  "48", "--iterations", "20", "--lr", "0.02"])
    assert schedule_cmd.run(args) == 0
    solver = load_solver(out)
    assert solver.nfe == 4 and solver.meta["base_sampler"] == "dpmpp_2m" and solver.meta["mixture"] == "bench:3:3"
    fitted = solver.meta["fit"]
    assert fitted["rmse"] <= fitted["initial_rmse"] and fitted["validation_samples"] == 12
    assert "fitting cost" in capsys.readouterr().out
    with pytest.raises(NoisecraftError, match="--init heun takes 3 evaluations with 2 steps, not --nfe 4"):
        schedule_cmd.run(parse(["schedule", "fit-solver", "--mixture", "bench:3:3", "--nfe", "4", "--init", "heun",
                                "--out", str(out)]))


def test_cli_fit_solver_and_sample_on_a_checkpoint(tmp_path, capsys):
    from noisecraft.presets import get_preset
    from noisecraft.training.trainer import Trainer

    cfg = get_preset("toy2d")
    run = tmp_path / "run"
    Trainer(replace(cfg, train=replace(cfg.train, steps=3, checkpoint_every=1000)), run, progress=False).run()
    solver = tmp_path / "s.json"
    assert main(["schedule", "fit-solver", "--checkpoint", str(run), "--nfe", "3", "--out", str(solver), "--batch",
                 "8", "--iterations", "3"]) == 0
    assert load_solver(solver).meta["checkpoint"] == str(run)
    png = tmp_path / "s.png"
    assert main(["sample", "--checkpoint", str(run), "--solver", str(solver), "--num", "4", "--out", str(png)]) == 0
    assert png.is_file()
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(run), "--solver", str(solver), "--steps", "5", "--out", str(png)]) == 2
    assert "takes 3 denoiser evaluations (NFE); got --steps 5; use --steps 3" in capsys.readouterr().err
    assert main(["sample", "--checkpoint", str(run), "--solver", str(solver), "--sampler", "euler",
                 "--out", str(png)]) == 2
    assert "--solver runs the sampler 'fitted'" in capsys.readouterr().err


def test_fitted_solver_rejects_bad_construction():
    with pytest.raises(NoisecraftError, match="at least one"):
        FittedSolver((), (), ())
    with pytest.raises(NoisecraftError, match="finite"):
        FittedSolver((1.0,), (math.inf,), ((1.0,),))
