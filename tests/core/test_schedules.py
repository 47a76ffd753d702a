import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from noisecraft.errors import NoisecraftError
from noisecraft.schedules import (
    build_schedule,
    discrete_timesteps,
    get_sigmas,
    karras_sigmas,
    make_betas,
)

diffusers = pytest.importorskip("diffusers")

DIFFUSERS_NAMES = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2",
                   "sigmoid": "sigmoid"}


@pytest.mark.parametrize("name", list(DIFFUSERS_NAMES))
@pytest.mark.parametrize("T,b0,b1", [(1000, 1e-4, 0.02), (1000, 0.00085, 0.012), (200, 1e-3, 0.05)])
def test_alphas_cumprod_match_diffusers(name, T, b0, b1):
    ref = diffusers.DDPMScheduler(num_train_timesteps=T, beta_start=b0, beta_end=b1,
                                  beta_schedule=DIFFUSERS_NAMES[name])
    ours = build_schedule(name, num_timesteps=T, beta_start=b0, beta_end=b1)
    # diffusers accumulates in float32; ours in float64. Identical up to float32 rounding.
    torch.testing.assert_close(ours.betas.float(), ref.betas, rtol=2e-6, atol=1e-9)
    torch.testing.assert_close(ours.alphas_cumprod.float(), ref.alphas_cumprod, rtol=2e-5, atol=1e-9)


def test_betas_closed_forms():
    T = 1000
    lin = make_betas("linear", T)
    assert lin[0] == 1e-4 and abs(lin[-1] - 0.02) < 1e-15
    np.testing.assert_allclose(np.diff(lin.numpy()), (0.02 - 1e-4) / (T - 1), rtol=1e-9)
    sl = make_betas("scaled_linear", T, 0.00085, 0.012)
    np.testing.assert_allclose(np.diff(sl.sqrt().numpy()), (0.012**0.5 - 0.00085**0.5) / (T - 1), rtol=1e-9)
    # cosine: abar_t = f(t)/f(0), f(t) = cos^2((t/T + s)/(1 + s) pi/2)  (Nichol & Dhariwal 2021, Eq. 17)
    cos = build_schedule("cosine", num_timesteps=T)
    f = lambda t: math.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    expected = torch.tensor([f(t + 1) / f(0) for t in range(T)], dtype=torch.float64)
    unclipped = cos.betas < 0.999
    first_clip = int(unclipped.logical_not().nonzero()[0]) if (~unclipped).any() else T
    torch.testing.assert_close(cos.alphas_cumprod[:first_clip], expected[:first_clip], rtol=1e-12, atol=1e-15)
    assert cos.betas.max() <= 0.999
    sig = make_betas("sigmoid", T, 1e-4, 0.02)
    # sigmoid(-u) = 1 - sigmoid(u): beta_i + beta_{T-1-i} = beta_start + beta_end
    torch.testing.assert_close(sig + sig.flip(0), torch.full_like(sig, 1e-4 + 0.02))
    assert (sig.diff() > 0).all()


def test_discrete_sigma_t_roundtrip():
    s = build_schedule("linear")
    t = torch.arange(1000, dtype=torch.float64)
    assert torch.equal(s.sigma_to_t(s.sigmas), t)  # integers come back exactly
    frac = torch.tensor([0.5, 10.25, 998.9])
    torch.testing.assert_close(s.sigma_to_t(s.t_to_sigma(frac)), frac.double(), rtol=0, atol=1e-9)
    torch.testing.assert_close(s.sigmas, ((1 - s.alphas_cumprod) / s.alphas_cumprod).sqrt())


def test_continuous_schedules_closed_forms(gen):
    vp = build_schedule("vp")
    t = torch.linspace(1e-3, 1, 50, dtype=torch.float64)
    abar = torch.exp(-0.1 * t - 0.5 * (20 - 0.1) * t**2)  # Song et al. 2021, Eq. 33
    torch.testing.assert_close(vp.sigma(t), ((1 - abar) / abar).sqrt())
    torch.testing.assert_close(vp.t_of_sigma(vp.sigma(t)), t)
    ve = build_schedule("ve", sigma_min=0.01, sigma_max=50.0)
    ls = ve.sample_sigma(200_000, gen).log()
    assert abs(ls.min() - math.log(0.01)) < 1e-3 and abs(ls.max() - math.log(50)) < 1e-3
    assert abs(ls.mean() - 0.5 * (math.log(0.01) + math.log(50))) < 0.02  # log-uniform
    edm = build_schedule("edm")
    ls = edm.sample_sigma(200_000, gen).log()
    assert abs(ls.mean() + 1.2) < 0.01 and abs(ls.std() - 1.2) < 0.01  # ln sigma ~ N(-1.2, 1.2^2)
    fl = build_schedule("flow")
    sig = fl.sample_sigma(200_000, gen)
    logit_t = torch.logit(sig / (1 + sig))
    assert abs(logit_t.mean()) < 0.01 and abs(logit_t.std() - 1.0) < 0.01
    # flow input scaling: c_in x = (1 - t) x0 + t n
    x0, n, sigma = torch.randn(3, generator=gen, dtype=torch.float64)
    tt = sigma.abs() / (1 + sigma.abs())
    torch.testing.assert_close(fl.c_in(sigma.abs()) * (x0 + sigma.abs() * n), (1 - tt) * x0 + tt * n)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("steps", [1, 7, 50, 1000])
def test_timesteps_match_diffusers(spacing, steps):
    ref = diffusers.DDIMScheduler(timestep_spacing=spacing)
    ref.set_timesteps(steps)
    assert np.array_equal(discrete_timesteps(1000, steps, spacing), ref.timesteps.numpy())


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_timesteps_all_step_counts(spacing):
    """Every step count 1..1000: exactly n distinct decreasing timesteps in [0, 999], equal to diffusers'
    wherever diffusers returns n of them. diffusers' trailing spacing (np.arange with a float step) returns
    n + 1 values ending in timestep -1 for some n (e.g. 233): we keep n and record those counts here."""
    diffusers_extra = []
    for n in range(1, 1001):
        ts = discrete_timesteps(1000, n, spacing)
        assert len(ts) == n and ts.min() >= 0 and ts.max() <= 999 and (np.diff(ts) < 0).all(), n
        ref = diffusers.DDIMScheduler(timestep_spacing=spacing)
        ref.set_timesteps(n)
        theirs = ref.timesteps.numpy()
        if len(theirs) == n + 1:
            assert theirs[-1] == -1 and np.array_equal(theirs[:-1], ts), n
            diffusers_extra.append(n)
        else:
            assert np.array_equal(theirs, ts), n
    assert diffusers_extra == ([] if spacing != "trailing" else diffusers_extra)
    if spacing == "trailing":
        assert 233 in diffusers_extra


def test_karras_closed_form():
    s = karras_sigmas(0.002, 80.0, 10, rho=7.0)
    i = torch.arange(10, dtype=torch.float64)
    expected = (80 ** (1 / 7) + i / 9 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    torch.testing.assert_close(s[:-1], expected)
    assert s[-1] == 0


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(["linear", "cosine", "vp", "ve", "edm", "flow"]),
       kind=st.sampled_from(["trailing", "leading", "linspace", "karras", "exponential", "uniform"]),
       steps=st.integers(1, 300))
def test_step_schedules_properties(name, kind, steps):
    sched = build_schedule(name)
    if kind in ("trailing", "leading", "linspace") and name not in ("linear", "cosine"):
        with pytest.raises(NoisecraftError, match="discrete"):
            get_sigmas(sched, steps, kind)
        return
    sig = get_sigmas(sched, steps, kind)
    assert sig.dtype == torch.float64 and len(sig) == steps + 1
    assert sig[-1] == 0 and (sig[:-1] > 0).all() and (sig.diff() < 0).all()
    assert sig[0] <= sched.sigma_max * (1 + 1e-9)


def test_bad_step_inputs():
    s = build_schedule("linear")
    for bad in (0, -3, 2.5, True):
        with pytest.raises(NoisecraftError, match="steps"):
            get_sigmas(s, bad)
    with pytest.raises(NoisecraftError, match="allowed: .*karras"):
        get_sigmas(s, 10, "fancy")
    with pytest.raises(NoisecraftError, match="allowed: .*cosine"):
        build_schedule("quadratic")


def test_edm_training_sigma_distribution_comes_from_the_run_config():
    """diffusion.p_mean / p_std reach the EDM schedule: ln sigma ~ N(p_mean, p_std^2) (Karras et al. 2022)."""
    from noisecraft.build import build_denoiser
    from noisecraft.errors import ConfigError
    from noisecraft.runconfig import DiffusionConfig, RunConfig

    config = RunConfig(model="mlp", diffusion=DiffusionConfig(schedule="edm", prediction="edm", p_mean=0.4,
                                                              p_std=0.5))
    schedule = build_denoiser(config).schedule
    assert (schedule.p_mean, schedule.p_std) == (0.4, 0.5)
    log_sigma = schedule.sample_sigma(200_000, torch.Generator().manual_seed(0)).double().log()
    n = log_sigma.numel()
    assert abs(log_sigma.mean().item() - 0.4) < 4 * 0.5 / math.sqrt(n)
    assert abs(log_sigma.std().item() - 0.5) < 4 * 0.5 / math.sqrt(2 * n)
    default = build_denoiser(RunConfig(model="mlp", diffusion=DiffusionConfig(schedule="edm", prediction="edm")))
    assert (default.schedule.p_mean, default.schedule.p_std) == (-1.2, 1.2)
    with pytest.raises(ConfigError, match="diffusion.p_std"):
        DiffusionConfig(schedule="edm", p_std=0.0)
