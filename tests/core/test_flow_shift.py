"""SD3's timestep shift on the rectified-flow schedule (Esser et al. 2024, Eq. 23): the map and its inverse,
its place in the training draw and the "uniform" step schedule, the identity at s = 1 (old configs), and
the diffusion config's options reaching the schedule."""

import math

import pytest
import torch

from noisecraft.build import build_denoiser
from noisecraft.config import from_dict, to_dict
from noisecraft.errors import ConfigError
from noisecraft.runconfig import DiffusionConfig, RunConfig
from noisecraft.schedules.steps import get_sigmas
from noisecraft.schedules.training import FlowSchedule, build_schedule, resolution_shift


def test_shift_map_is_eq_23_and_its_inverse():
    s = FlowSchedule(shift=3.0)
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    torch.testing.assert_close(s.shift_t(t), 3 * t / (1 + 2 * t))
    assert float(s.shift_t(torch.tensor(0.5))) == pytest.approx(0.75)
    torch.testing.assert_close(s.unshift_t(s.shift_t(t)), t)
    assert torch.equal(FlowSchedule().shift_t(t), t)  # s = 1: the identity


def test_resolution_shift_is_sqrt_of_the_pixel_ratio():
    assert resolution_shift(1024 ** 2, 256 ** 2) == 4.0
    assert resolution_shift(64 * 64, 64 * 64) == 1.0
    with pytest.raises(ConfigError, match="pixel counts must be > 0"):
        resolution_shift(0, 10)


def test_training_draw_is_the_shifted_logit_normal():
    """Same generator: the shifted schedule's t is exactly shift(t) of the unshifted draw (before clamping)."""
    plain, shifted = FlowSchedule(logit_mean=0.3, logit_std=0.8), FlowSchedule(logit_mean=0.3, logit_std=0.8, shift=3)
    sig0 = plain.sample_sigma(4000, torch.Generator().manual_seed(0))
    sig1 = shifted.sample_sigma(4000, torch.Generator().manual_seed(0))
    t0, t1 = sig0 / (1 + sig0), sig1 / (1 + sig1)
    inside = (t0 > 0.01) & (t0 < 0.99)
    torch.testing.assert_close(t1[inside], shifted.shift_t(t0[inside]))
    assert t1.median() > t0.median()  # s > 1 moves training towards noise


def test_uniform_steps_are_shifted_uniform_times_with_the_same_ends():
    s = FlowSchedule(shift=3.0)
    sig = get_sigmas(s, 8, "uniform")
    t = sig[:-1] / (1 + sig[:-1])
    assert sig[-1] == 0 and bool((sig[1:] < sig[:-1]).all())
    assert float(t[0]) == pytest.approx(s.t_max) and float(t[-1]) == pytest.approx(s.t_min)
    u = s.unshift_t(t)
    torch.testing.assert_close(u[1:] - u[:-1], (u[1:] - u[:-1]).mean().expand(7), rtol=1e-9, atol=1e-12)
    old = torch.linspace(0.999, 1e-3, 8, dtype=torch.float64)  # s = 1: the schedule as before the shift existed
    assert torch.equal(get_sigmas(FlowSchedule(), 8, "uniform")[:-1], old / (1 - old))


def test_diffusion_config_options_reach_the_schedule_and_old_configs_load():
    d = DiffusionConfig(schedule="flow", prediction="flow", flow_logit_mean=-0.5, flow_logit_std=0.7, flow_shift=2.5)
    assert d.schedule_options() == {"logit_mean": -0.5, "logit_std": 0.7, "shift": 2.5}
    sched = build_denoiser(RunConfig(diffusion=d)).schedule
    assert (sched.logit_mean, sched.logit_std, sched.shift) == (-0.5, 0.7, 2.5)
    old = to_dict(RunConfig(diffusion=DiffusionConfig(schedule="flow", prediction="flow")))
    for key in ("flow_logit_mean", "flow_logit_std", "flow_shift"):
        del old["diffusion"][key]  # a config written before these fields
    loaded = from_dict(RunConfig, old, "config")
    fresh = build_schedule("flow", **loaded.diffusion.schedule_options())
    assert (fresh.logit_mean, fresh.logit_std, fresh.shift) == (0.0, 1.0, 1.0)
    with pytest.raises(ConfigError, match=r"diffusion.flow_shift: must be > 0 \(1 = no shift\), got 0"):
        DiffusionConfig(flow_shift=0.0)
    assert math.isfinite(fresh.sigma_max)
