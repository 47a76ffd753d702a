"""A small consistency student of the exact mixture denoiser (tests/analytic.py), trained with the objectives of
`noisecraft.distill.objectives` alone: the test bed for the distillation mathematics."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from analytic import GaussianMixture
from noisecraft.core.denoiser import Denoiser
from noisecraft.core.prediction import Prediction
from noisecraft.distill import objectives as O
from noisecraft.distill.guided import GUIDANCE_KEY, GuidanceScaleInput, GuidedTeacher
from noisecraft.schedules.training import build_schedule

EPS, SIGMA_MAX, SIGMA_DATA = 0.002, 80.0, 0.5


def mixture(classes=None) -> GaussianMixture:
    """Four well-separated components in 2-D (weights unequal), optionally in classes."""
    means = [[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]]
    return GaussianMixture(means, [0.15, 0.2, 0.1, 0.15], [1.0, 2.0, 1.5, 1.0], classes=classes)


class PointNet(nn.Module):
    """net(x, c_noise, cond) for 2-D points: an MLP on [x, sinusoid(c_noise), one-hot class, cond["vector"]]."""

    def __init__(self, num_classes: int = 0, vector_dim: int = 0, hidden: int = 128, embed: int = 32) -> None:
        super().__init__()
        self.num_classes, self.vector_dim, self.embed = num_classes, vector_dim, embed
        width = 2 + embed + (num_classes + 1 if num_classes else 0) + vector_dim
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 2))

    def forward(self, x, c_noise, cond=None):
        cond = cond or {}
        half = self.embed // 2
        freqs = torch.exp(-math.log(1000.0) * torch.arange(half, dtype=torch.float32) / half)
        arg = c_noise.float().reshape(-1, 1) * 10 * freqs[None]
        parts = [x, torch.cos(arg), torch.sin(arg)]
        if self.num_classes:
            labels = cond.get("class_labels", torch.full((x.shape[0],), self.num_classes))
            parts.append(nn.functional.one_hot(labels, self.num_classes + 1).float())
        if self.vector_dim:
            parts.append(cond["vector"].float())
        return self.mlp(torch.cat(parts, 1))


def student(num_classes: int = 0, guidance_width: int = 0) -> Denoiser:
    """A consistency student: PointNet under EDM preconditioning with the boundary at EPS."""
    net = PointNet(num_classes, guidance_width)
    if guidance_width:
        net = GuidanceScaleInput(net, guidance_width)
    return Denoiser(net, build_schedule("edm", sigma_data=SIGMA_DATA),
                    Prediction("edm", sigma_data=SIGMA_DATA, boundary_sigma=EPS))


def distil(f: Denoiser, teacher, mix: GaussianMixture, *, steps: int, batch: int = 256, seed: int = 0,
           guided: tuple[float, float] | None = None, lr: float = 2e-3, mu: float = 0.95) -> Denoiser:
    """Consistency distillation (Song et al. 2023, Alg. 2) of `teacher` into f; with guided = (w_lo, w_hi) the
    LCM objective with the classifier-free-guided teacher at w ~ U[w_lo, w_hi] (labels drawn per sample)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    target = copy.deepcopy(f).requires_grad_(False)
    opt = torch.optim.Adam(f.net.parameters(), lr=lr)
    levels = O.karras_levels(EPS, SIGMA_MAX, 18)
    for k in range(steps):
        cond, step_teacher = None, teacher
        if guided is None:
            x0 = mix.sample(batch, gen).float()
        else:
            labels = torch.randint(0, mix.num_classes, (batch,), generator=gen)
            x0 = torch.empty(batch, mix.dim)
            for y in range(mix.num_classes):
                x0[labels == y] = mix.sample_class(int((labels == y).sum()), y, gen).float()
            w = guided[0] + (guided[1] - guided[0]) * torch.rand(batch, generator=gen)
            cond = {"class_labels": labels, GUIDANCE_KEY: w}
            step_teacher = GuidedTeacher(teacher, {"class_labels": torch.full((batch,), mix.num_classes)})
        n = torch.randint(0, len(levels) - 1, (batch,), generator=gen)
        s_lo, s_hi = levels[n], levels[n + 1]
        x_hi = x0 + O.bcast(s_hi, x0) * torch.randn(x0.shape, generator=gen)
        with torch.no_grad():
            x_lo = O.teacher_step(step_teacher, x_hi, s_hi, s_lo, cond, "heun")
        loss = O.consistency_pair_loss(f, target, x_hi, s_hi, x_lo, s_lo, cond).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        for lr_group in opt.param_groups:  # a cosine decay steadies the last steps
            lr_group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * (k + 1) / steps))
        with torch.no_grad():
            for p_t, p in zip(target.parameters(), f.parameters()):
                p_t.lerp_(p, 1 - mu)
    return f.eval()
