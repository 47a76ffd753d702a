import pytest
import torch

from noisecraft.core import PREDICTIONS, Denoiser, Prediction, alpha_sigma_vp, ve_to_vp, vp_to_ve
from noisecraft.core.losses import denoising_loss, output_weight
from noisecraft.schedules import build_schedule


@pytest.mark.parametrize("kind", PREDICTIONS)
def test_target_is_consistent_with_scalings(kind, gen):
    p = Prediction(kind, sigma_data=0.7)
    x0 = torch.randn(64, 3, generator=gen, dtype=torch.float64)
    n = torch.randn(64, 3, generator=gen, dtype=torch.float64)
    sigma = torch.exp(torch.randn(64, 1, generator=gen, dtype=torch.float64) * 2)
    x = x0 + sigma * n
    c_skip, c_out = p.scalings(sigma)
    torch.testing.assert_close(p.target(x0, n, sigma), (x0 - c_skip * x) / c_out)
    torch.testing.assert_close(c_skip * x + c_out * p.target(x0, n, sigma), x0)  # perfect F gives D = x0


def test_v_and_flow_targets_match_their_papers(gen):
    x0 = torch.randn(100, generator=gen, dtype=torch.float64)
    n = torch.randn(100, generator=gen, dtype=torch.float64)
    sigma = torch.exp(torch.randn(100, generator=gen, dtype=torch.float64))
    alpha, sigma_vp = alpha_sigma_vp(sigma)
    torch.testing.assert_close(Prediction("v").target(x0, n, sigma), alpha * n - sigma_vp * x0)  # Salimans & Ho
    torch.testing.assert_close(Prediction("flow").target(x0, n, sigma), n - x0)


class _Oracle(torch.nn.Module):
    """A 'network' that knows x0 and n and returns the exact target for its prediction type."""

    def __init__(self, x0, n, pred):
        super().__init__()
        self.x0, self.n, self.pred = x0, n, pred
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen = None

    def forward(self, x_in, c_noise, cond=None):
        self.seen = (x_in, c_noise)
        return self.pred.target(self.x0, self.n, self.sigma)


@pytest.mark.parametrize("sched_name,kind", [("linear", "eps"), ("cosine", "v"), ("edm", "edm"), ("flow", "flow"),
                                             ("ve", "eps"), ("vp", "x0")])
def test_denoiser_recovers_x0_and_feeds_the_right_input(sched_name, kind, gen):
    sched = build_schedule(sched_name)
    pred = Prediction(kind)
    x0 = torch.randn(8, 2, 4, generator=gen, dtype=torch.float64)
    n = torch.randn(8, 2, 4, generator=gen, dtype=torch.float64)
    sigma = sched.sample_sigma(8, gen)
    net = _Oracle(x0, n, pred).double()
    net.sigma = sigma.reshape(-1, 1, 1)
    D = Denoiser(net, sched, pred)
    x = x0 + net.sigma * n
    torch.testing.assert_close(D(x, sigma), x0)
    x_in, _ = net.seen
    if sched_name in ("linear", "cosine", "vp"):  # VP networks see alpha_t x0 + sigma_t n
        torch.testing.assert_close(x_in, ve_to_vp(x, net.sigma))
        torch.testing.assert_close(vp_to_ve(x_in, net.sigma), x)


def test_discrete_c_noise_is_the_integer_timestep():
    sched = build_schedule("linear")
    seen = {}

    class Net(torch.nn.Module):
        def forward(self, x, t, cond=None):
            seen["t"] = t
            return torch.zeros_like(x)

    D = Denoiser(Net(), sched, Prediction("eps"))
    D(torch.zeros(3, 1), sched.sigmas[torch.tensor([0, 417, 999])])
    assert torch.equal(seen["t"], torch.tensor([0.0, 417.0, 999.0]))


def test_simple_eps_loss_is_ddpm_eq14(gen):
    """L_simple = ||eps - eps_theta(sqrt(abar) x0 + sqrt(1 - abar) eps, t)||^2 (Ho et al. 2020, Eq. 14)."""
    sched = build_schedule("linear")
    net = torch.nn.Sequential()  # placeholder replaced below

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(5, 5).double()

        def forward(self, x, t, cond=None):
            return self.lin(x) * torch.cos(t[:, None] / 100)

    net = Net()
    D = Denoiser(net, sched, Prediction("eps"))
    t = torch.randint(0, 1000, (16,), generator=gen)
    x0 = torch.randn(16, 5, generator=gen, dtype=torch.float64)
    eps = torch.randn(16, 5, generator=gen, dtype=torch.float64)
    abar = sched.alphas_cumprod[t][:, None]
    ref = (eps - net(abar.sqrt() * x0 + (1 - abar).sqrt() * eps, t.double())).square().mean(1)
    ours = denoising_loss(D, x0, sched.sigmas[t], eps)
    torch.testing.assert_close(ours, ref)


def test_min_snr_and_edm_weights():
    sigma = torch.tensor([0.05, 0.3, 1.0, 7.0], dtype=torch.float64)
    snr = sigma**-2
    for kind, expected in [("eps", torch.clamp(snr, max=5) / snr), ("v", torch.clamp(snr, max=5) / (snr + 1)),
                           ("x0", torch.clamp(snr, max=5))]:  # Hang et al. 2023
        _, c_out = Prediction(kind).scalings(sigma)
        torch.testing.assert_close(output_weight("min_snr", sigma, c_out, gamma=5.0), expected)
    _, c_out = Prediction("edm", sigma_data=0.5).scalings(sigma)
    torch.testing.assert_close(output_weight("edm", sigma, c_out, sigma_data=0.5), torch.ones_like(sigma))


def test_edm_loss_equals_karras_eq8(gen):
    """EDM: lambda(sigma) ||D(x0 + sigma n) - x0||^2 with lambda = (sigma^2 + sd^2) / (sigma sd)^2."""
    sched = build_schedule("edm")
    lin = torch.nn.Linear(4, 4).double()
    net = lambda x, c, cond=None: lin(x) * (1 + c[:, None])  # noqa: E731
    D = Denoiser(torch.nn.Module(), sched, Prediction("edm"))
    D.net = lin
    D.raw = lambda x, s, cond=None: net(D.schedule.c_in(s)[:, None] * x, D.schedule.c_noise(s))
    x0 = torch.randn(32, 4, generator=gen, dtype=torch.float64)
    n = torch.randn(32, 4, generator=gen, dtype=torch.float64)
    sigma = sched.sample_sigma(32, gen)
    c_skip, c_out = D.prediction.scalings(sigma)
    x = x0 + sigma[:, None] * n
    d = c_skip[:, None] * x + c_out[:, None] * D.raw(x, sigma)
    lam = (sigma**2 + 0.25) / (sigma * 0.5) ** 2
    ref = lam * (d - x0).square().mean(1)
    torch.testing.assert_close(denoising_loss(D, x0, sigma, n, weighting="edm"), ref)
