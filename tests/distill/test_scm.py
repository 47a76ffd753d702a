"""sCM / sCD (Lu & Song 2024) as a distill method: the JVP tangent equals the central difference on a small MLP,
the normalised target is cos(t) df^-/dt along the teacher's ODE, a student distilled from the exact mixture
denoiser approaches the PF-ODE map, and `noisecraft distill --method scm` trains, resumes exactly and samples.

Bound (stated here, measured on this test bed with margin): after 800 sCD steps the one-step student's RMS
distance to the exact ODE map is below 0.45 of one Euler step's (measured about 0.2-0.3).
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from mixture_student import SIGMA_DATA, SIGMA_MAX, PointNet, mixture

from noisecraft import load, samplers
from noisecraft.checkpoint import load_checkpoint
from noisecraft.cli.main import main
from noisecraft.core.denoiser import Denoiser
from noisecraft.core.prediction import Prediction
from noisecraft.distill import trigflow as T
from noisecraft.distill.trainer import Distiller, check_teacher, student_config
from noisecraft.errors import ConfigError, NoisecraftError
from noisecraft.pipelines import Request, generate
from noisecraft.presets import get_preset
from noisecraft.schedules.training import build_schedule
from noisecraft.training.trainer import Trainer

F64 = torch.float64
SMALL = ("train.batch_size=32", "train.threads=1", "distill.scm_warmup_steps=2")


class _MLP(torch.nn.Module):
    """net(x, c_noise) = an MLP on [x, c_noise], all in its parameters' dtype (float64 for the tangent checks)."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp = torch.nn.Sequential(torch.nn.Linear(3, 64), torch.nn.SiLU(), torch.nn.Linear(64, 64),
                                       torch.nn.SiLU(), torch.nn.Linear(64, 2))

    def forward(self, x, c_noise, cond=None):
        return self.mlp(torch.cat([x, c_noise.reshape(-1, 1).to(x.dtype)], 1))


def _edm_student(dtype=torch.float32, seed=0, net=None) -> Denoiser:
    """A TrigFlow student: PointNet (or `net`) under plain EDM preconditioning (its boundary f(x, 0) = x at
    sigma = 0)."""
    torch.manual_seed(seed)
    net = (PointNet() if net is None else net).to(dtype)
    return Denoiser(net, build_schedule("edm", sigma_data=SIGMA_DATA), Prediction("edm", sigma_data=SIGMA_DATA))


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny MLP: one thread is fastest, and the CI machine has two cores
    yield
    torch.set_num_threads(threads)


def test_jvp_tangent_of_a_network_equals_the_central_difference():
    """dF/dt along (dx_t/dt, 1) of an MLP's F(x_t / sigma_d, t) (float64): forward-mode autodiff = the central
    difference, to its O(h^2) error."""
    f, mix = _edm_student(F64, net=_MLP()), mixture()
    gen = torch.Generator().manual_seed(4)
    t = 0.1 + 1.4 * torch.rand(64, generator=gen, dtype=F64)
    x_t = torch.randn(64, 2, generator=gen, dtype=F64)
    dxdt = T.teacher_velocity(mix.denoise, x_t, t, SIGMA_DATA)

    def F(x, tt):
        return T.network_F(f, x, tt)

    F_jvp, d_jvp = T.time_tangent(F, x_t, t, dxdt, "jvp")
    F_fd, d_fd = T.time_tangent(F, x_t, t, dxdt, "fd", h=1e-5)
    torch.testing.assert_close(F_jvp, F_fd, rtol=0, atol=0)
    torch.testing.assert_close(d_jvp, d_fd, rtol=1e-6, atol=1e-6)
    assert float(d_jvp.abs().mean()) > 1e-2  # a real tangent, not zero


def test_target_is_cos_t_times_the_consistency_functions_derivative():
    """The unnormalised sCM target (r = 1) is cos(t) d/dt f^-(x_t, t) along the teacher's PF-ODE (Lu & Song 2024,
    Sec. 4.1); normalised (c = 0) it is that derivative's direction."""
    f, mix = _edm_student(F64, seed=1, net=_MLP()), mixture()
    gen = torch.Generator().manual_seed(5)
    t = 0.2 + 1.2 * torch.rand(32, generator=gen, dtype=F64)
    x_t = torch.randn(32, 2, generator=gen, dtype=F64)
    dxdt = T.teacher_velocity(mix.denoise, x_t, t, SIGMA_DATA)

    def F(x, tt):
        return T.network_F(f, x, tt)

    F_m, dF = T.time_tangent(F, x_t, t, dxdt, "jvp")
    g = T.scm_target(F_m, dF, x_t, dxdt, t, SIGMA_DATA, r=1.0, c=0.0)
    h = 1e-5
    with torch.no_grad():
        hi = T.consistency_fn(lambda x, tt, c: F(x * SIGMA_DATA, tt), x_t + h * dxdt, t + h, SIGMA_DATA)
        lo = T.consistency_fn(lambda x, tt, c: F(x * SIGMA_DATA, tt), x_t - h * dxdt, t - h, SIGMA_DATA)
    want = torch.cos(t)[:, None] * (hi - lo) / (2 * h)
    torch.testing.assert_close(g, want / want.norm(dim=1, keepdim=True), rtol=1e-5, atol=1e-6)


def test_scd_student_approaches_the_ode_map(one_thread):
    """800 sCD steps (JVP tangent, warm-up over 100 steps, normalisation c = 0.1) from the exact mixture
    denoiser: one call from sigma_max lands much nearer the exact PF-ODE solution than one Euler step."""
    mix, f = mixture(), _edm_student()
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(f.net.parameters(), lr=2e-3)
    steps = 800
    for k in range(steps):
        x0, z = mix.sample(256, gen).float(), torch.randn(256, 2, generator=gen)
        t = T.sample_t(256, gen, SIGMA_DATA)
        loss = T.scd_loss(f, mix.denoise, x0, z, t, r=min(1.0, k / 100), tangent="jvp").mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        for group in opt.param_groups:  # a cosine decay steadies the last steps
            group["lr"] = 2e-3 * 0.5 * (1 + math.cos(math.pi * (k + 1) / steps))
    x_T = SIGMA_MAX * torch.randn(400, 2, generator=torch.Generator().manual_seed(123), dtype=F64)
    levels = torch.tensor([SIGMA_MAX, 0.0], dtype=F64)
    ode_map = samplers.get("ode")(mix.denoise, x_T, levels)
    euler = samplers.get("euler")(mix.denoise, x_T, levels)
    with torch.no_grad():
        one_call = samplers.get("consistency")(f, x_T.float(), levels.float()).double()

    def rmse(a):
        return float((a - ode_map).square().sum(1).mean().sqrt())

    assert rmse(one_call) < 0.45 * rmse(euler)


# ------------------------------------------------------------------------------------------ noisecraft distill
def _distil(teacher, out, steps, *overrides, resume=False):
    config = student_config(teacher, "scm", steps=steps, overrides=SMALL + overrides)
    distiller = Distiller(config, out, resume=resume, progress=False)
    distiller.run()
    return distiller


@pytest.mark.parametrize("adaptive", [False, True])
def test_scm_student_resumes_exactly_and_samples(teacher, tmp_path, adaptive):
    extra = ("train.checkpoint_every=2", f"distill.scm_adaptive={str(adaptive).lower()}")
    a = _distil(teacher, tmp_path / "straight", 4, *extra)
    assert a.tangent == "jvp" and a.target is None  # the MLP has forward-mode rules; F^- is stopgrad(theta)
    assert (a.weight is not None) == adaptive
    _distil(teacher, tmp_path / "resumed", 2, *extra)
    _distil(teacher, tmp_path / "resumed", 4, *extra, resume=True)
    s, r = load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "resumed")
    for part in ("model", "ema", "optim"):
        x, y = getattr(s, part), getattr(r, part)
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), part
    if adaptive:  # w_phi(t), kept in slot "0", trained (it starts at 0) and resumed exactly
        x, y = s.phema["0"], r.phema["0"]
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
        assert float(x["linear.weight"].abs().max()) > 0
    else:
        assert not s.phema
    run = load(tmp_path / "straight")
    assert run.config.distill.method == "scm" and run.config.sample.sampler == "consistency"
    assert run.denoiser.prediction.boundary_sigma is None  # TrigFlow: the boundary is at sigma = 0
    x = torch.randn(8, 2)
    with torch.no_grad():  # c_skip -> 1, c_out -> 0 as sigma -> 0
        assert float((run.denoiser(x, 1e-6) - x).abs().max()) < 1e-5
    for steps in (1, 2, 4):
        out = generate(run, Request(sampler="consistency", steps=steps, num=16, seed=3))
        assert out.images.shape == (16, 2) and torch.isfinite(out.images).all()
    with pytest.raises(NoisecraftError, match="distill method 'scm'.*samples with consistency"):
        generate(run, Request(sampler="heun", num=2))


def test_adaptive_weight_minimiser_is_minus_log_mse():
    """e^w mse - w (Lu & Song 2024, Eq. 9) is least at w = -ln(mse): the learned weight tracks the loss scale."""
    F, g = torch.randn(6, 4, generator=torch.Generator().manual_seed(2)), torch.zeros(6, 4)
    mse = F.square().mean(1)
    w = (-mse.log()).requires_grad_(True)
    T.scm_loss(F, torch.zeros_like(F), g, w).sum().backward()
    torch.testing.assert_close(w.grad, torch.zeros(6), rtol=0, atol=1e-6)
    net = T.AdaptiveWeight()
    assert torch.equal(net(torch.tensor([0.3, 1.2], dtype=F64)), torch.zeros(2))  # zero-initialised: w = 0


def test_scm_loss_is_the_same_with_jvp_and_fd_tangents(teacher, tmp_path):
    """The Distiller's first-step loss with the JVP and the central-difference tangent agree (float32)."""
    losses = {}
    for kind in ("jvp", "fd"):
        config = student_config(teacher, "scm", steps=1, overrides=SMALL + (f"distill.scm_tangent={kind}",))
        distiller = Distiller(config, tmp_path / kind, progress=False)
        losses[kind] = float(distiller.loss(0).detach())
    assert losses["jvp"] == pytest.approx(losses["fd"], rel=1e-3)


def test_cli_scm_on_a_unet_falls_back_to_the_central_difference(tmp_path, capsys):
    """The channels-last U-Net has no CPU forward-mode rule for its group norm: auto takes the central
    difference; an explicit jvp names the option to use."""
    config = get_preset("mnist-tiny")
    config = replace(config, data=replace(config.data, limit=32),
                     train=replace(config.train, steps=2, batch_size=8, threads=1, minutes=None, checkpoint_every=2))
    Trainer(config, tmp_path / "teacher", progress=False).run()
    out = tmp_path / "scm"
    assert main(["distill", "--teacher", str(tmp_path / "teacher"), "--method", "scm", "--steps", "2", "--out",
                 str(out), "train.batch_size=8", "train.threads=1", "sample.num=4"]) == 0
    assert main(["sample", "--checkpoint", str(out), "--sampler", "consistency", "--steps", "2", "--num", "2",
                 "--out", str(tmp_path / "s.png")]) == 0
    capsys.readouterr()
    student = student_config(tmp_path / "teacher", "scm", steps=1,
                             overrides=("train.batch_size=8", "train.threads=1", "distill.scm_tangent=jvp"))
    with pytest.raises(NoisecraftError, match="forward-mode.*distill.scm_tangent=fd"):
        Distiller(student, tmp_path / "jvp", progress=False).run()


def test_scm_bad_input_names_the_options(teacher):
    tcfg = get_preset("toy2d")
    for prediction, schedule in (("eps", "edm"), ("edm", "linear"), ("flow", "flow")):
        bad = replace(tcfg, diffusion=replace(tcfg.diffusion, prediction=prediction, schedule=schedule))
        with pytest.raises(NoisecraftError, match=f"'scm' needs an EDM-parameterised teacher .*{prediction!r} on "
                                                  f"schedule {schedule!r}; use cd, ect or reflow"):
            check_teacher(bad, "scm", "runs/x")
    with pytest.raises(ConfigError, match="distill.scm_tangent: unknown tangent 'forward'; allowed: auto, jvp, fd"):
        student_config(teacher, "scm", steps=1, overrides=("distill.scm_tangent=forward",))
    with pytest.raises(ConfigError, match="distill.scm_norm_c: must be >= 0"):
        student_config(teacher, "scm", steps=1, overrides=("distill.scm_norm_c=-1",))
