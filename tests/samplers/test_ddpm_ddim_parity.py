"""DDPM and DDIM against diffusers' DDPMScheduler / DDIMScheduler loops: same network weights, same
timesteps, same noise (one generator drawn in the same order) -> outputs equal to <= 1e-5.

diffusers keeps its tables and does its step arithmetic in float32; over a 1000-step DDPM run that
alone moves its result by ~1.4e-5 from an exact float64 Algorithm 2 (ours in float32: ~7e-7). The
reference loop therefore runs diffusers' own step code in float64: betas by the same formula in float64,
a float64 copy of the network, and the noise drawn in float32 and cast (as ours is). We require <= 1e-5
for our float32 sampler (float32 network) and <= 1e-9 for our float64 sampler (float64 network)."""

import copy

import pytest
import torch

from noisecraft.core import Denoiser, Prediction, clamp_denoised, vp_to_ve
from noisecraft.samplers import get
from noisecraft.schedules import build_schedule, get_sigmas

diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    m = diffusers.UNet2DModel(
        sample_size=8, in_channels=2, out_channels=2, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4, attention_head_dim=8,
    )
    return m.eval()


class Model(torch.nn.Module):
    """A well-conditioned test network shared by both loops: the exact prediction for N(0, I) data
    (eps: sqrt(1 - abar) x_t; x0: sqrt(abar) x_t; v: 0) plus 0.1 x a random UNet. A raw random UNet makes
    x0 estimates of size ~1e2 and the comparison measures only float32 rounding."""

    def __init__(self, unet, alphas_cumprod, prediction):
        super().__init__()
        self.unet, self.abar, self.prediction = unet, alphas_cumprod, prediction

    def forward(self, x, t, cond=None):
        t = torch.as_tensor(t).reshape(-1)
        abar = self.abar[t.round().long()].to(x.dtype).reshape(-1, 1, 1, 1)
        base = {"eps": (1 - abar).sqrt() * x, "x0": abar.sqrt() * x, "v": 0 * x}[self.prediction]
        dtype = next(self.unet.parameters()).dtype
        return base.to(dtype) + 0.1 * self.unet(x.to(dtype), t.expand(x.shape[0])).sample


def float64_tables(scheduler, betas):
    """Replace diffusers' float32 tables by the same formulas evaluated in float64."""
    scheduler.betas = betas
    scheduler.alphas = 1.0 - betas
    scheduler.alphas_cumprod = torch.cumprod(scheduler.alphas, dim=0)
    scheduler.one = torch.tensor(1.0, dtype=torch.float64)
    scheduler.final_alpha_cumprod = scheduler.one
    return scheduler


@pytest.fixture(autouse=True)
def float32_noise(monkeypatch):
    """diffusers draws noise in the model's dtype; draw it in float32 and cast, as noisecraft does."""
    import diffusers.schedulers.scheduling_ddim as ddim_mod
    import diffusers.schedulers.scheduling_ddpm as ddpm_mod
    from diffusers.utils.torch_utils import randn_tensor

    def randn32(shape, generator=None, device=None, dtype=None, **kw):
        return randn_tensor(shape, generator=generator, device=device, dtype=torch.float32).to(dtype)

    monkeypatch.setattr(ddpm_mod, "randn_tensor", randn32)
    monkeypatch.setattr(ddim_mod, "randn_tensor", randn32)


def diffusers_loop(model, scheduler, steps, seed, **step_kw):
    """diffusers' sampling loop in float64 (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    model = copy.deepcopy(model).double()
    scheduler.set_timesteps(steps)
    x = torch.randn(3, 2, 8, 8, generator=g)
    x_T = x.clone()
    x = x.double()
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(model(x, t), t, x, generator=g, **step_kw).prev_sample
    return x_T, x


def check(model, schedule, prediction, sampler, sigmas, x_T, ref, seed, clip, **opts):
    out32 = ours(model, schedule, prediction, sampler, sigmas, x_T, seed, clip, **opts)
    out64 = ours(copy.deepcopy(model).double(), schedule, prediction, sampler, sigmas, x_T.double(), seed, clip,
                 **opts)
    assert out32.dtype == torch.float32 and out64.dtype == torch.float64
    assert (out32.double() - ref).abs().max() <= 1e-5
    assert (out64 - ref).abs().max() <= 1e-9


def ours(model, schedule, prediction, sampler, sigmas, x_T, seed, clip, **opts):
    g = torch.Generator().manual_seed(seed)
    torch.randn(3, 2, 8, 8, generator=g)  # advance past the initial noise, as the diffusers loop did
    D = Denoiser(model, schedule, Prediction(prediction))
    den = clamp_denoised(D) if clip else D
    x = vp_to_ve(x_T, sigmas[0])  # the same x_T in the VE view
    return get(sampler)(den, x, sigmas, generator=g, **opts)


@pytest.mark.parametrize("steps,spacing,clip", [(1000, "leading", False), (50, "leading", False),
                                               (50, "trailing", True), (7, "leading", True)])
def test_ddpm_matches_diffusers(unet, steps, spacing, clip):
    schedule = build_schedule("linear")
    sched = float64_tables(diffusers.DDPMScheduler(timestep_spacing=spacing, clip_sample=clip), schedule.betas)
    model = Model(unet, schedule.alphas_cumprod, "eps")
    x_T, ref = diffusers_loop(model, sched, steps, seed=1)
    check(model, schedule, "eps", "ddpm", get_sigmas(schedule, steps, spacing), x_T, ref, seed=1, clip=clip)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("prediction,beta_schedule,ours_schedule",
                         [("epsilon", "linear", "linear"), ("v_prediction", "scaled_linear", "scaled_linear"),
                          ("sample", "squaredcos_cap_v2", "cosine")])
def test_ddim_matches_diffusers(unet, eta, spacing, prediction, beta_schedule, ours_schedule):
    kw = {"beta_start": 0.00085, "beta_end": 0.012} if beta_schedule == "scaled_linear" else {}
    schedule = build_schedule(ours_schedule, **kw)
    sched = diffusers.DDIMScheduler(timestep_spacing=spacing, prediction_type=prediction, clip_sample=False,
                                    beta_schedule=beta_schedule, **kw)
    sched = float64_tables(sched, schedule.betas)
    pred = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}[prediction]
    model = Model(unet, schedule.alphas_cumprod, pred)
    x_T, ref = diffusers_loop(model, sched, 20, seed=2, eta=eta)
    check(model, schedule, pred, "ddim", get_sigmas(schedule, 20, spacing), x_T, ref, seed=2, clip=False, eta=eta)


def test_ddim_clip_sample_matches_diffusers(unet):
    """Clipping x0: we step along the line through x and the clipped x0, i.e. diffusers with
    use_clipped_model_output=True (its default keeps the unclipped eps, an inconsistent mix)."""
    schedule = build_schedule("linear")
    sched = float64_tables(diffusers.DDIMScheduler(clip_sample=True), schedule.betas)
    model = Model(unet, schedule.alphas_cumprod, "eps")
    x_T, ref = diffusers_loop(model, sched, 10, seed=3, eta=0.3, use_clipped_model_output=True)
    check(model, schedule, "eps", "ddim", get_sigmas(schedule, 10, "leading"), x_T, ref, seed=3, clip=True, eta=0.3)
