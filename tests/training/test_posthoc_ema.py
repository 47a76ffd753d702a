"""Post-hoc EMA (Karras et al. 2024, EDM2): the closed forms, the discrete update, the least-squares
reconstruction, and `noisecraft ema` end to end."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from noisecraft.checkpoint import load_checkpoint
from noisecraft.cli.main import main
from noisecraft.presets import get_preset
from noisecraft.training.posthoc_ema import (
    PowerEMA,
    gamma_to_sigma_rel,
    list_snapshots,
    profile,
    profile_dot,
    reconstruct,
    sigma_rel_to_gamma,
    solve_coefficients,
)
from noisecraft.training.trainer import Trainer

G05, G10 = sigma_rel_to_gamma(0.05), sigma_rel_to_gamma(0.10)


def test_gamma_of_sigma_rel_matches_the_paper_and_inverts():
    assert G05 == pytest.approx(16.97, abs=0.005) and G10 == pytest.approx(6.94, abs=0.005)  # EDM2 sec. 3.1
    for s in (0.01, 0.05, 0.1, 0.2, 0.28):
        assert gamma_to_sigma_rel(sigma_rel_to_gamma(s)) == pytest.approx(s, rel=1e-12)


@pytest.mark.parametrize("gamma", [0.5, G10, G05])
def test_profile_is_a_density_with_relative_std_sigma_rel(gamma):
    t = 7.0
    mass = quad(lambda u: profile(t, gamma, u), 0, t)[0]
    mean = quad(lambda u: u * profile(t, gamma, u), 0, t)[0]
    second = quad(lambda u: u * u * profile(t, gamma, u), 0, t)[0]
    assert mass == pytest.approx(1.0, rel=1e-9)
    assert np.sqrt(second - mean**2) / t == pytest.approx(gamma_to_sigma_rel(gamma), rel=1e-7)


@pytest.mark.parametrize("ta,ga,tb,gb", [(3.0, G05, 5.0, G10), (5.0, G10, 3.0, G05), (4.0, 2.0, 4.0, 9.0)])
def test_profile_inner_product_closed_form(ta, ga, tb, gb):
    numeric = quad(lambda u: profile(ta, ga, u) * profile(tb, gb, u), 0, min(ta, tb), epsabs=0, epsrel=1e-12)[0]
    assert float(profile_dot(ta, ga, tb, gb)) == pytest.approx(numeric, rel=1e-9)


def test_discrete_update_weights_each_step_by_the_profile_integral():
    """beta_t = (1 - 1/t)^(gamma+1) gives step i the weight int_{i-1}^{i} p_{T,gamma} exactly, so a net
    whose weight at step i is theta_i ends at sum_i theta_i (i^(g+1) - (i-1)^(g+1)) / T^(g+1)."""
    net = torch.nn.Linear(1, 1, bias=False).double()
    ema = PowerEMA(net, [0.05, 0.1])
    T, theta = 40, np.sin(np.arange(1, 41))  # any trajectory
    for i in range(1, T + 1):
        net.weight.data.fill_(theta[i - 1])
        ema.update(net, i)
    i = np.arange(1, T + 1)
    for gamma, model in zip(ema.gammas, ema.models):
        w = (i ** (gamma + 1) - (i - 1) ** (gamma + 1)) / T ** (gamma + 1)
        assert float(model.weight) == pytest.approx(float(w @ theta), rel=1e-10)


def test_solution_fits_the_target_profile():
    """Snapshots of sigma_rel 0.05 and 0.10 every 50 of 1000 steps: a tracked (sigma_rel, t) is recovered
    as that snapshot alone; an intermediate sigma_rel is fitted with a small L2 error (checked on a grid,
    independently of the closed-form Gram matrix) and averages a linear trajectory like the target."""
    ts = np.repeat(np.arange(1, 21) * 50.0, 2)
    gs = np.tile([G05, G10], 20)
    x = solve_coefficients(ts, gs, 1000.0, G10)
    np.testing.assert_allclose(x, np.eye(40)[-1], atol=1e-9)
    g = sigma_rel_to_gamma(0.07)
    x = solve_coefficients(ts, gs, 1000.0, g)
    tau = np.linspace(0, 1000, 200_001)
    fit = sum(c * profile(t, gi, tau) for c, t, gi in zip(x, ts, gs))
    target = profile(1000.0, g, tau)
    err = np.sqrt(np.trapezoid((fit - target) ** 2, tau) / np.trapezoid(target**2, tau))
    assert err < 0.01
    mean_fit = np.sum(x * (gs + 1) / (gs + 2) * ts)  # int p_{t,gamma}(tau) tau dtau = t (gamma+1)/(gamma+2)
    assert mean_fit == pytest.approx(1000.0 * (g + 1) / (g + 2), rel=1e-4)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("phema")
    cfg = get_preset("toy2d")
    cfg = replace(cfg, data=replace(cfg.data, limit=256),
                  train=replace(cfg.train, steps=30, batch_size=32, warmup_steps=5, checkpoint_every=1000,
                                phema_sigma_rels=(0.05, 0.1), phema_every=10))
    Trainer(cfg, out, progress=False).run()
    return out


def test_snapshots_written_and_tracked_profile_reconstructed(run):
    assert [s for s, _ in list_snapshots(run)] == [10, 20, 30]
    ckpt = load_checkpoint(run)
    for k, sigma_rel in enumerate((0.05, 0.1)):
        state, info = reconstruct(run, sigma_rel)
        assert info["step"] == 30
        for name, v in ckpt.phema[str(k)].items():
            torch.testing.assert_close(state[name], v, rtol=0, atol=1e-6)


def test_resume_keeps_the_power_emas_exact(run, tmp_path):
    cfg = load_checkpoint(run).config
    from noisecraft.config import from_dict
    from noisecraft.runconfig import RunConfig

    cfg = from_dict(RunConfig, cfg)
    part = Trainer(replace(cfg, train=replace(cfg.train, steps=17)), tmp_path, progress=False)
    part.run()
    Trainer(cfg, tmp_path, resume=True, progress=False).run()
    a, b = load_checkpoint(run).phema, load_checkpoint(tmp_path).phema
    for k in a:
        for name in a[k]:
            assert torch.equal(a[k][name], b[k][name])


def test_ema_command_writes_a_loadable_checkpoint(run, tmp_path, capsys):
    from noisecraft.pipelines import load as load_denoiser

    out = tmp_path / "ema07"
    assert main(["ema", "--checkpoint", str(run), "--sigma-rel", "0.07", "--out", str(out)]) == 0
    assert "sigma_rel=0.07" in capsys.readouterr().out
    ckpt = load_checkpoint(out)
    info = ckpt.state["posthoc_ema"]
    assert info["step"] == 30 and sum(s["coefficient"] for s in info["snapshots"]) == pytest.approx(1.0)
    expected, _ = reconstruct(run, 0.07)
    loaded = load_denoiser(out)
    for name, v in loaded.denoiser.net.state_dict().items():
        torch.testing.assert_close(v, expected[name])
    assert main(["ema", "--checkpoint", str(run), "--sigma-rel", "0.07", "--step", "5", "--out",
                 str(tmp_path / "x")]) == 2  # no snapshot at or before step 5: a one-line error
    assert "no post-hoc EMA snapshots" in capsys.readouterr().err


def test_train_ema_sigma_rel_is_the_power_function_ema(tmp_path):
    """train.ema_sigma_rel makes the sampling EMA the power-function EMA of that width: the same weights as the
    tracked post-hoc profile with that sigma_rel, update for update."""
    cfg = get_preset("toy2d")
    cfg = replace(cfg, data=replace(cfg.data, limit=256),
                  train=replace(cfg.train, steps=25, batch_size=32, warmup_steps=5, checkpoint_every=1000,
                                ema_sigma_rel=0.1, phema_sigma_rels=(0.1,)))
    trainer = Trainer(cfg, tmp_path, progress=False)
    trainer.run()
    assert trainer.ema_decay_at(0) == 0.0 and trainer.ema_decay_at(9) == pytest.approx(0.9 ** (G10 + 1))
    for a, b in zip(trainer.ema.parameters(), trainer.phema.models[0].parameters()):
        assert torch.equal(a, b)
    with pytest.raises(Exception, match="train.ema_sigma_rel"):
        replace(cfg.train, ema_sigma_rel=0.3)
