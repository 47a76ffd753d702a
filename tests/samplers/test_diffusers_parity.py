"""noisecraft samplers against the diffusers schedulers that implement the same algorithm.

Same model (the exact Gaussian-mixture denoiser, given to diffusers as an eps-prediction VP model), same
start, same noise, same noise levels: we run diffusers' own loop (`set_timesteps`, `scale_model_input`,
`step`), read the sigmas it actually used (float32 tables cast to float64 so both sides do float64
arithmetic) and hand those to our sampler. The model is told the scheduler's own sigma for each call
(a timestep-conditioned model would add the t <-> sigma interpolation of the discrete table, which is not
the algorithm under test; `test_step_schedules_match_diffusers` checks the schedules themselves).

Documented differences rather than hidden ones:
- diffusers' DPM++ 3M (like k-diffusion's and the DPM-Solver reference) uses half the third-order
  coefficient; `legacy_3m=True` reproduces it (our default is the third-order one).
- diffusers' DEIS never reaches sigma = 0: its last level is sigma_min (duplicated for Karras sigmas), so
  we compare at that level.
- diffusers' UniPC/DPM/DEIS `lower_order_final` lowers the order near the end; our UniPC does the same
  (`lower_order_final=True`), for DPM++ 3M and DEIS the test uses >= 15 steps where diffusers does not.
"""

import inspect

import pytest
import torch

from analytic import GaussianMixture
from noisecraft.core import vp_to_ve
from noisecraft.samplers import get
from noisecraft.schedules import build_schedule, get_sigmas

diffusers = pytest.importorskip("diffusers")

BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
TOL = 2e-6  # diffusers upcasts some steps to float32 (e.g. Euler's `sample.to(torch.float32)`)
MIX = GaussianMixture([[0.8, -0.3, 0.1, 0.5], [-0.6, 0.4, -0.2, 0.0], [0.1, 0.9, 0.7, -0.8]], [0.3, 0.2, 0.4])


def eps_model(scheduler):
    """The exact mixture denoiser as an eps-prediction VP model at the scheduler's current sigma."""

    def model(x_t, t):
        i = scheduler.step_index if getattr(scheduler, "step_index", None) is not None else 0
        sigma = float(scheduler.sigmas[i])
        x = vp_to_ve(x_t, sigma)
        return (x - MIX.denoise(x, sigma)) / sigma

    return model


@pytest.fixture(autouse=True)
def float32_noise(monkeypatch):
    """diffusers draws noise in the model's dtype; draw it in float32 and cast, as noisecraft does."""
    import diffusers.schedulers.scheduling_dpmsolver_multistep as dpm_mod
    import diffusers.schedulers.scheduling_euler_ancestral_discrete as ea_mod
    from diffusers.utils.torch_utils import randn_tensor

    def randn32(shape, generator=None, device=None, dtype=None, **kw):
        return randn_tensor(shape, generator=generator, device=device, dtype=torch.float32).to(dtype)

    monkeypatch.setattr(ea_mod, "randn_tensor", randn32)
    monkeypatch.setattr(dpm_mod, "randn_tensor", randn32)


def diffusers_run(scheduler, steps, seed=0):
    """diffusers' loop in float64; returns (start x in the VE view, the sigmas used, the result in VE)."""
    scheduler.set_timesteps(steps)
    scheduler.sigmas = scheduler.sigmas.double()
    z = torch.randn(8, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = z * float(scheduler.init_noise_sigma)
    vp = float(scheduler.init_noise_sigma) == 1.0  # DPM/UniPC/DEIS keep x in the VP scale
    sigmas = torch.unique_consecutive(scheduler.sigmas)  # Heun repeats each inner level
    x_start = vp_to_ve(x, float(sigmas[0])) if vp else x
    model, g = eps_model(scheduler), torch.Generator().manual_seed(seed + 1)
    kw = {"generator": g} if "generator" in inspect.signature(scheduler.step).parameters else {}
    for t in scheduler.timesteps:
        x_in = scheduler.scale_model_input(x, t)
        x = scheduler.step(model(x_in, t), t, x, **kw).prev_sample
    out = vp_to_ve(x, float(sigmas[-1])) if vp else x
    return x_start, sigmas, out


def ours(name, x_start, sigmas, seed=0, at_sigma=None, **options):
    if sigmas[-1] != 0:
        sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
    seen = {}
    out = get(name)(MIX.denoise, x_start, sigmas, generator=torch.Generator().manual_seed(seed + 1),
                    callback=lambda info: seen.__setitem__(info["sigma"], info["x"]), **options)
    return out if at_sigma is None else seen[at_sigma]


CASES = [
    ("euler", diffusers.EulerDiscreteScheduler, {}, {}),
    ("euler", diffusers.EulerDiscreteScheduler, {"use_karras_sigmas": True}, {}),
    ("euler", diffusers.EulerDiscreteScheduler, {"timestep_spacing": "trailing"}, {}),
    ("euler_a", diffusers.EulerAncestralDiscreteScheduler, {}, {}),
    ("heun", diffusers.HeunDiscreteScheduler, {}, {}),
    ("heun", diffusers.HeunDiscreteScheduler, {"use_karras_sigmas": True}, {}),
    ("lms", diffusers.LMSDiscreteScheduler, {}, {}),
    ("lms", diffusers.LMSDiscreteScheduler, {"use_karras_sigmas": True}, {}),
    ("dpmpp_2m", diffusers.DPMSolverMultistepScheduler, {}, {}),
    ("dpmpp_2m", diffusers.DPMSolverMultistepScheduler, {"use_karras_sigmas": True}, {}),
    ("dpmpp_2m", diffusers.DPMSolverMultistepScheduler, {"solver_type": "heun"}, {"solver_type": "heun"}),
    ("dpmpp_3m", diffusers.DPMSolverMultistepScheduler, {"solver_order": 3, "lower_order_final": False},
     {"legacy_3m": True}),
    ("dpmpp_2m_sde", diffusers.DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++"}, {}),
    ("unipc", diffusers.UniPCMultistepScheduler, {}, {"order": 2}),
    ("unipc", diffusers.UniPCMultistepScheduler, {"solver_order": 3}, {"order": 3}),
    ("unipc", diffusers.UniPCMultistepScheduler, {"solver_order": 1}, {"order": 1}),
    ("unipc", diffusers.UniPCMultistepScheduler, {"use_karras_sigmas": True}, {"order": 2}),
]


@pytest.mark.parametrize("steps", [6, 16])
@pytest.mark.parametrize("name,cls,config,options", CASES, ids=lambda v: str(v) if isinstance(v, (str, dict)) else "")
def test_matches_diffusers(name, cls, config, options, steps):
    if name == "dpmpp_3m" and steps < 15:
        pytest.skip("diffusers lowers the order of the second-to-last step below 15 steps")
    x_start, sigmas, ref = diffusers_run(cls(**BETAS, **config), steps)
    out = ours(name, x_start, sigmas, **options)
    assert (out - ref).abs().max() <= TOL * (1 + ref.abs().max())


@pytest.mark.parametrize("order", [2, 3])
def test_unipc_bh1_matches_diffusers(order):
    """diffusers' UniPC bh1 returns NaN with final_sigmas_type="zero" (B(h) = h = -inf times a zero
    correction on the last step), so compare on its "sigma_min" schedule, at sigma_min."""
    sched = diffusers.UniPCMultistepScheduler(**BETAS, solver_order=order, solver_type="bh1",
                                              final_sigmas_type="sigma_min", lower_order_final=False)
    x_start, sigmas, ref = diffusers_run(sched, 8)
    out = ours("unipc", x_start, sigmas, at_sigma=float(sigmas[-1]), order=order, variant="bh1",
               lower_order_final=False)
    assert (out - ref).abs().max() <= TOL * (1 + ref.abs().max())


def test_deis_matches_diffusers_at_its_last_level():
    x_start, sigmas, ref = diffusers_run(diffusers.DEISMultistepScheduler(**BETAS, solver_order=3), 16)
    out = ours("deis", x_start, sigmas, at_sigma=float(sigmas[-1]), order=3)
    assert (out - ref).abs().max() <= TOL * (1 + ref.abs().max())


@pytest.mark.parametrize("config,kind", [({}, "linspace_float"), ({"use_karras_sigmas": True}, "karras"),
                                         ({"timestep_spacing": "trailing"}, "trailing"),
                                         ({"timestep_spacing": "leading", "steps_offset": 1}, "leading")])
@pytest.mark.parametrize("steps", [5, 10, 25])
def test_step_schedules_match_diffusers(config, kind, steps):
    """Our step schedules on SD's discrete table equal diffusers' EulerDiscreteScheduler sigmas (float32)."""
    schedule = build_schedule("scaled_linear", beta_start=0.00085, beta_end=0.012)
    sched = diffusers.EulerDiscreteScheduler(**BETAS, **config)
    sched.alphas_cumprod = schedule.alphas_cumprod  # diffusers' float32 table is off by ~1e-4 at t = 0
    sched.set_timesteps(steps)
    if kind == "linspace_float":
        pytest.skip("diffusers' Euler 'linspace' interpolates sigma linearly at fractional t; ours is "
                    "log-linear (exact at integers); see benchmarks/samplers.md")
    ref = sched.sigmas.double()
    ours_ = get_sigmas(schedule, steps, kind) if kind != "leading" else _leading_offset(schedule, steps)
    assert torch.allclose(ours_, ref, rtol=1e-7, atol=0)  # diffusers stores sigmas in float32


def _leading_offset(schedule, steps):
    from noisecraft.schedules.steps import discrete_timesteps

    ts = discrete_timesteps(schedule.num_timesteps, steps, "leading", offset=1)
    return torch.cat([schedule.sigmas[torch.from_numpy(ts.copy())], torch.zeros(1, dtype=torch.float64)])
