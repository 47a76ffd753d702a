"""Step schedules (uniform, Karras, log-SNR, exponential, AYS, JSON files), the schedule optimiser and the
`noisecraft schedule` command."""

import argparse
import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from analytic import GaussianMixture
from noisecraft.cli import schedule_cmd
from noisecraft.errors import NoisecraftError
from noisecraft.samplers import get
from noisecraft.samplers.mixture import GaussianMixture as PackageMixture
from noisecraft.samplers.mixture import benchmark_mixture, load_mixture
from noisecraft.schedules import build_schedule, get_sigmas
from noisecraft.schedules.optimize import load_sigmas, optimize_sigmas, reference_solution
from noisecraft.schedules.steps import AYS_SD15, STEP_SCHEDULES

SD = build_schedule("scaled_linear", beta_start=0.00085, beta_end=0.012)
KINDS = [k for k in STEP_SCHEDULES]


@settings(max_examples=25, deadline=None)
@given(kind=st.sampled_from(KINDS), steps=st.integers(1, 60),
       schedule=st.sampled_from(["sd", "linear", "cosine", "edm", "vp", "ve", "flow"]))
def test_every_schedule_decreases_to_zero(kind, steps, schedule):
    s = SD if schedule == "sd" else build_schedule(schedule)
    if kind in ("leading", "trailing", "linspace") and schedule in ("edm", "vp", "ve", "flow"):
        with pytest.raises(NoisecraftError, match="needs a discrete schedule"):
            get_sigmas(s, steps, kind)
        return
    sig = get_sigmas(s, steps, kind)
    assert sig.dtype == torch.float64 and len(sig) == steps + 1 and sig[-1] == 0
    assert (sig[1:] < sig[:-1]).all()


def test_logsnr_is_uniform_in_log_sigma():
    sig = get_sigmas(SD, 8, "logsnr")
    torch.testing.assert_close(sig, get_sigmas(SD, 8, "exponential"))
    steps = torch.diff(sig[:-1].log())
    torch.testing.assert_close(steps, steps[0].expand_as(steps))


def test_ays_reproduces_the_published_sd15_schedule():
    sig = get_sigmas(SD, 10, "ays")
    torch.testing.assert_close(sig[:-1], torch.tensor(AYS_SD15[:-1], dtype=torch.float64), rtol=2e-3, atol=0)
    assert sig[-1] == 0 and len(get_sigmas(SD, 4, "ays")) == 5


def test_karras_matches_eq5():
    sig = get_sigmas(SD, 5, "karras", rho=7.0)
    lo, hi = SD.sigma_min ** (1 / 7), SD.sigma_max ** (1 / 7)
    expected = [(hi + i / 4 * (lo - hi)) ** 7 for i in range(5)] + [0.0]
    torch.testing.assert_close(sig, torch.tensor(expected, dtype=torch.float64))


def test_unknown_kind_lists_the_allowed():
    with pytest.raises(NoisecraftError, match="json.*karras"):
        get_sigmas(SD, 5, "fancy")


def test_package_mixture_equals_the_test_oracle():
    m = benchmark_mixture(3, 4, seed=1)
    oracle = GaussianMixture(m.means, m.stds, m.weights)
    x = 2 * torch.randn(16, 3, dtype=torch.float64)
    for sigma in (0.01, 0.5, 10.0):
        torch.testing.assert_close(m.denoise(x, sigma), oracle.denoise(x, sigma))


# --------------------------------------------------------------------------------------------- optimiser


@pytest.fixture(scope="module")
def small_problem():
    mix = PackageMixture([[1.0, 0.5], [-1.0, 0.0], [0.2, -1.2]], [0.2, 0.3, 0.25])
    x_T = SD.sigma_max * torch.randn(256, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return mix, x_T, reference_solution(mix.denoise, x_T, SD.sigma_max, rtol=1e-9, atol=1e-9)


def test_reference_solution_is_the_exact_flow(small_problem):
    mix, x_T, ref = small_problem
    oracle = GaussianMixture(mix.means, mix.stds, mix.weights)
    torch.testing.assert_close(ref, oracle.ode_solution(x_T, SD.sigma_max, 0.0), rtol=0, atol=1e-6)


def test_optimiser_lowers_the_error_and_keeps_the_schedule_valid(small_problem, tmp_path):
    mix, x_T, ref = small_problem
    init = get_sigmas(SD, 4, "karras")
    res = optimize_sigmas(mix.denoise, get("dpmpp_2m"), init, x_T, ref, sigma_min=SD.sigma_min,
                          max_evaluations=120)
    assert res.loss < 0.7 * res.initial_loss and res.evaluations <= 120
    sig = torch.tensor(res.sigmas, dtype=torch.float64)
    assert sig[0] == pytest.approx(SD.sigma_max) and sig[-1] == 0 and (sig[1:] < sig[:-1]).all()
    assert sig[-2] >= SD.sigma_min
    out = get("dpmpp_2m")(mix.denoise, x_T, sig)
    assert float((out - ref).pow(2).mean()) == pytest.approx(res.loss, rel=1e-9)
    path = tmp_path / "s.json"
    res.save(path)
    torch.testing.assert_close(load_sigmas(path), sig)
    torch.testing.assert_close(get_sigmas(SD, 4, str(path)), sig)
    interp = get_sigmas(SD, 8, str(path))  # another step count: log-linear interpolation of the levels
    assert len(interp) == 9 and interp[0] == sig[0] and interp[-2] == pytest.approx(float(sig[-2]))


def test_optimiser_multistart_keeps_the_best(small_problem):
    mix, x_T, ref = small_problem
    inits = [get_sigmas(SD, 3, k) for k in ("karras", "uniform")]
    res = optimize_sigmas(mix.denoise, get("euler"), inits, x_T, ref, sigma_min=SD.sigma_min, method="pattern",
                          max_evaluations=60)
    single = [optimize_sigmas(mix.denoise, get("euler"), s, x_T, ref, sigma_min=SD.sigma_min, method="pattern",
                              max_evaluations=30) for s in inits]
    assert res.loss == min(r.loss for r in single)


def test_differential_evolution_is_seeded_and_beats_its_starts(small_problem):
    mix, x_T, ref = small_problem
    inits = [get_sigmas(SD, 5, k) for k in ("karras", "exponential")]
    runs = [optimize_sigmas(mix.denoise, get("expint"), inits, x_T, ref, sigma_min=SD.sigma_min, max_evaluations=150,
                            seed=3) for _ in range(2)]
    assert runs[0].sigmas == runs[1].sigmas and runs[0].evaluations <= 150
    assert runs[0].loss < runs[0].initial_loss
    with pytest.raises(NoisecraftError, match="de, pattern"):
        optimize_sigmas(mix.denoise, get("euler"), inits[0], x_T, ref, sigma_min=SD.sigma_min, method="bfgs")


def test_bad_schedule_files_raise(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"sigmas": [1.0, 2.0, 0.0]}))
    with pytest.raises(NoisecraftError, match="decrease"):
        load_sigmas(bad)
    with pytest.raises(NoisecraftError, match="cannot read"):
        load_sigmas(tmp_path / "missing.json")


# ----------------------------------------------------------------------------------------------- the CLI


def parse(argv):
    parser = argparse.ArgumentParser()
    schedule_cmd.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_optimise_on_a_mixture(tmp_path, capsys):
    out = tmp_path / "euler4.json"
    args = parse(["schedule", "optimise", "--mixture", "bench:2:3", "--sampler", "Euler", "--steps", "4",
                  "--out", str(out), "--batch", "64", "--max-evals", "40", "--init", "karras"])
    assert schedule_cmd.run(args) == 0
    data = json.loads(out.read_text())
    assert data["sampler"] == "euler" and len(data["sigmas"]) == 5 and data["loss"] <= data["initial_loss"]
    assert data["meta"]["mixture"] == "bench:2:3"
    assert "RMSE" in capsys.readouterr().out
    assert schedule_cmd.run(parse(["schedule", "show", "--kind", str(out), "--steps", "4"])) == 0


def test_cli_rejects_bad_input(tmp_path):
    base = ["schedule", "optimize", "--mixture", "bench:2:3", "--steps", "4", "--out", str(tmp_path / "x.json")]
    with pytest.raises(NoisecraftError, match="unknown sampler"):
        schedule_cmd.run(parse(base + ["--sampler", "nope"]))
    with pytest.raises(NoisecraftError, match="no option.*allowed"):
        schedule_cmd.run(parse(base + ["--sampler", "euler", "--option", "order=2"]))
    with pytest.raises(NoisecraftError, match="mixture"):
        schedule_cmd.run(parse(base[:3] + ["nowhere.json"] + base[4:] + ["--sampler", "euler"]))
    with pytest.raises(SystemExit):
        parse(["schedule", "optimise", "--sampler", "euler", "--steps", "4", "--out", "x.json"])  # no source


def test_cli_optimise_on_a_checkpoint(tmp_path):
    """--checkpoint: the run's own denoiser, schedule (sigma range) and data shape, via pipelines.load."""
    from dataclasses import replace

    from noisecraft.presets import get_preset
    from noisecraft.training.trainer import Trainer

    cfg = get_preset("toy2d")
    Trainer(replace(cfg, train=replace(cfg.train, steps=3, checkpoint_every=1000)), tmp_path / "run",
            progress=False).run()
    out = tmp_path / "s.json"
    args = parse(["schedule", "optimise", "--checkpoint", str(tmp_path / "run"), "--sampler", "DPM++ 2M",
                  "--steps", "3", "--out", str(out), "--batch", "16", "--max-evals", "20"])
    assert schedule_cmd.run(args) == 0
    data = json.loads(out.read_text())
    assert len(data["sigmas"]) == 4 and data["sampler"] == "dpmpp_2m" and data["meta"]["checkpoint"]


def test_cli_checkpoint_errors_are_user_errors(tmp_path):
    args = parse(["schedule", "optimise", "--checkpoint", str(tmp_path / "missing"), "--sampler", "unipc",
                  "--steps", "5", "--out", str(tmp_path / "x.json")])
    with pytest.raises(NoisecraftError):
        schedule_cmd.run(args)


def test_load_mixture_specs(tmp_path):
    assert load_mixture("bench:3:2:5").dim == 3
    path = tmp_path / "m.json"
    path.write_text(json.dumps(benchmark_mixture(2, 2).to_json()))
    assert load_mixture(str(path)).means.shape == (2, 2)
    with pytest.raises(NoisecraftError):
        load_mixture("bench:x")
    assert math.isclose(float(load_mixture(str(path)).weights.sum()), 1.0)


@pytest.mark.parametrize("steps,offset", [(6, 1), (50, 1), (7, 3), (1000, 0)])
def test_leading_offset_is_diffusers_steps_offset(steps, offset):
    """get_sigmas(..., "leading", offset=k): diffusers' leading timesteps with steps_offset k; offset 0 (or None on a
    schedule without steps_offset) is the old schedule; other spacings ignore it; out of range is an error."""
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                    timestep_spacing="leading", steps_offset=offset)
    sched.set_timesteps(steps)
    sig = get_sigmas(SD, steps, "leading", offset=offset)
    torch.testing.assert_close(sig[:-1], SD.sigmas[sched.timesteps], rtol=0, atol=0)
    assert sig[-1] == 0
    torch.testing.assert_close(get_sigmas(SD, steps, "leading", offset=0), get_sigmas(SD, steps, "leading"),
                               rtol=0, atol=0)
    torch.testing.assert_close(get_sigmas(SD, steps, "trailing", offset=offset), get_sigmas(SD, steps, "trailing"),
                               rtol=0, atol=0)
    limit = 1000 - (steps - 1) * (1000 // steps)
    with pytest.raises(NoisecraftError, match=r"leading step offset must be an integer in \[0, "):
        get_sigmas(SD, steps, "leading", offset=limit)
