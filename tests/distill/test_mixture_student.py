"""Students distilled from the exact mixture denoiser approach the exact probability-flow ODE map.

Bounds (stated here, measured on this test bed with margin): the one-step student's RMS distance to the ODE map
is below 0.4 of one Euler step's (which returns D(x_T, sigma_max), about the data mean); its one-step samples put
each mixture component's mass within 0.06 (total variation) and its mean within 0.1 of what the teacher's 40-step
Heun samples give; the guided student at w = 2 is below 0.4 of the guided teacher's one Euler step.
"""

from __future__ import annotations

import pytest
import torch
from mixture_student import SIGMA_MAX, distil, mixture, student

from noisecraft import samplers
from noisecraft.guidance import ClassifierFreeGuidance
from noisecraft.schedules import get_sigmas
from noisecraft.schedules.training import build_schedule

F64 = torch.float64


@pytest.fixture(scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny MLP: one thread is fastest, and the CI machine has two cores
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cd_student(one_thread):
    mix = mixture()
    return mix, distil(student(), mix.denoise, mix, steps=1000)


def _x_T(n, seed=123):
    return SIGMA_MAX * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _rmse(a, b) -> float:
    return float((a.double() - b).square().sum(1).mean().sqrt())


def test_student_approaches_the_ode_map(cd_student):
    mix, f = cd_student
    x_T = _x_T(400)
    ode_map = samplers.get("ode")(mix.denoise, x_T, torch.tensor([SIGMA_MAX, 0.0], dtype=F64))
    with torch.no_grad():
        one_step = f(x_T.float(), SIGMA_MAX)
    euler = samplers.get("euler")(mix.denoise, x_T, torch.tensor([SIGMA_MAX, 0.0], dtype=F64))
    assert _rmse(one_step, ode_map) < 0.4 * _rmse(euler, ode_map)


def test_one_step_samples_match_the_mixture(cd_student):
    mix, f = cd_student
    x_T = _x_T(4000, seed=5)
    teacher = samplers.get("heun")(mix.denoise, x_T, get_sigmas(build_schedule("edm"), 40, "karras"))
    with torch.no_grad():
        one_step = samplers.get("consistency")(f, x_T.float(), torch.tensor([SIGMA_MAX, 0.0])).double()
    hist = {name: torch.bincount(mix.posterior(x, 0.0).argmax(1), minlength=4).double() / len(x)
            for name, x in (("teacher", teacher), ("student", one_step))}
    assert float((hist["student"] - mix.weights).abs().sum() / 2) <= \
        float((hist["teacher"] - mix.weights).abs().sum() / 2) + 0.06
    for k in range(4):
        mean = {name: x[mix.posterior(x, 0.0).argmax(1) == k].mean(0) for name, x in
                (("teacher", teacher), ("student", one_step))}
        assert float((mean["student"] - mix.means[k]).norm()) <= float((mean["teacher"] - mix.means[k]).norm()) + 0.1


def test_guided_student_matches_the_guided_teacher(one_thread):
    """LCM: the guidance scale is the student's input; at w = 2 one call approaches the guided ODE's solution."""
    mix = mixture(classes=[0, 0, 1, 1])
    teacher = mix.conditional_denoiser()
    f = distil(student(num_classes=2, guidance_width=16), teacher, mix, steps=800, guided=(1.0, 3.0))
    x_T, labels, w = _x_T(300), torch.arange(300) % 2, 2.0
    guided = ClassifierFreeGuidance(teacher, w)
    cond = {"class_labels": labels}
    reference = samplers.get("ode")(guided, x_T, torch.tensor([SIGMA_MAX, 0.0], dtype=F64), cond=cond)
    euler = samplers.get("euler")(guided, x_T, torch.tensor([SIGMA_MAX, 0.0], dtype=F64), cond=cond)
    with torch.no_grad():
        one_call = f(x_T.float(), SIGMA_MAX, {**cond, "guidance_scale": torch.tensor([w])})
    assert _rmse(one_call, reference) < 0.4 * _rmse(euler, reference)
