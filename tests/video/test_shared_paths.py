"""Video and image runs share the schedules, the loss and the samplers: a clip (B, C, T, H, W) is just a tensor to
them. Exact: the same numbers laid out as images (B, C T, H, W) give bit-identical results with every sampler."""

import pytest
import torch
from torch import nn
from video_helpers import tiny_video_unet

from noisecraft import samplers
from noisecraft.core.denoiser import Denoiser
from noisecraft.core.losses import denoising_loss
from noisecraft.core.prediction import Prediction
from noisecraft.core.random import make_generators, randn_like
from noisecraft.schedules import get_sigmas
from noisecraft.schedules.training import build_schedule


class Zero(nn.Module):
    """F = 0: the EDM denoiser is then c_skip x, the exact denoiser of N(0, sigma_data^2) data, for any shape."""

    def forward(self, x, c_noise, cond=None):
        return torch.zeros_like(x)


def exact_gaussian_denoiser():
    return Denoiser(Zero(), build_schedule("edm"), Prediction("edm", sigma_data=0.5))


def draw(shape, sigma0):
    gens = make_generators(7, shape[0])
    return randn_like(torch.empty(shape), gens) * sigma0, make_generators(8, shape[0])


@pytest.mark.parametrize("name", sorted(samplers.SAMPLERS))
def test_every_sampler_runs_a_clip_exactly_as_the_same_numbers_shaped_as_images(name, tmp_path):
    d = exact_gaussian_denoiser()
    sigmas = get_sigmas(d.schedule, 4, "karras")
    fn = samplers.get(name)
    if name == "fitted":  # its coefficients come from a file: Euler's, extracted exactly
        from functools import partial

        from noisecraft.samplers.fitted import extract

        fn = partial(fn, solver=str(extract("euler", sigmas).save(tmp_path / "euler.json")))
    xv, gv = draw((2, 1, 4, 6, 6), float(sigmas[0]))  # clips
    xi, gi = draw((2, 4, 6, 6), float(sigmas[0]))  # the same draws as 4-channel images
    assert torch.equal(xv.reshape(xi.shape), xi)
    out_v, out_i = fn(d, xv, sigmas, generator=gv), fn(d, xi, sigmas, generator=gi)
    assert out_v.shape == xv.shape
    assert torch.equal(out_v.reshape(out_i.shape), out_i)


def test_the_training_loss_is_the_same_function_for_clips_and_images():
    d = exact_gaussian_denoiser()
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 1, 4, 6, 6, generator=g), torch.randn(3, 1, 4, 6, 6, generator=g)
    sigma = d.schedule.sample_sigma(3, g)
    video = denoising_loss(d, x0, sigma, noise, None)
    image = denoising_loss(d, x0.reshape(3, 4, 6, 6), sigma, noise.reshape(3, 4, 6, 6), None)
    assert video.shape == (3,) and torch.equal(video, image)


@torch.no_grad()
def test_generate_on_a_video_run_is_the_registered_sampler_on_its_denoiser():
    from noisecraft.build import adapt_config
    from noisecraft.conditions import ConditionSet
    from noisecraft.pipelines import Request, Run, generate
    from noisecraft.presets import get_preset

    net = tiny_video_unet()
    for p in net.temporal_up.parameters():
        nn.init.normal_(p, std=0.05)
    config = adapt_config(get_preset("moving-mnist-tiny"), (1, 4, 16, 16))
    d = Denoiser(net, build_schedule("edm"), Prediction("edm", sigma_data=0.5)).eval()
    run = Run(d, config, (1, 4, 16, 16), ConditionSet([]))
    out = generate(run, Request(num=2, seed=3, sampler="heun", steps=3, step_schedule="karras"))
    sigmas = get_sigmas(d.schedule, 3, "karras")
    gens = make_generators(3, 2)
    x = randn_like(torch.empty(2, 1, 4, 16, 16), gens) * float(sigmas[0])
    assert torch.equal(out.images, samplers.get("heun")(d, x, sigmas, generator=gens))
