"""EDM's zero centre-of-mass subspace (Hoogeboom et al. 2022, Sec. 3.2): the projection is exact and orthogonal,
the training noise lies in it, sampling stays in it; the loss counts real atoms only."""

import pytest
import torch

from noisecraft.conditions.atoms import mask_of_counts, zero_com
from noisecraft.core.losses import _mean_per_sample
from noisecraft.errors import NoisecraftError
from noisecraft.models.egnn import EGNN, EGNNConfig

N, C = 7, 8


def in_subspace(x: torch.Tensor, mask: torch.Tensor, atol: float = 1e-5) -> bool:
    mean = (x[:, :3] * mask[:, None]).sum(-1) / mask.sum(-1)[:, None]
    return bool(mean.abs().max() <= atol) and bool(torch.all(x[(mask == 0)[:, None].expand_as(x)] == 0))


def test_zero_com_is_the_orthogonal_projection_onto_the_subspace():
    g = torch.Generator().manual_seed(0)
    mask = mask_of_counts([7, 4, 1], N)
    x = torch.randn(3, C, N, generator=g, dtype=torch.float64)
    p = zero_com(x, mask)
    assert in_subspace(p, mask, 1e-12)
    torch.testing.assert_close(zero_com(p, mask), p, atol=1e-15, rtol=0)  # idempotent
    y = torch.randn(3, C, N, generator=g, dtype=torch.float64)
    # self-adjoint: <P x, y> = <x, P y>; with idempotence, the orthogonal projection
    torch.testing.assert_close((p * y).sum(), (x * zero_com(y, mask)).sum(), atol=1e-12, rtol=0)
    # a vector of the subspace is unchanged; a pure translation of the real atoms is removed
    t = torch.randn(3, 3, 1, generator=g, dtype=torch.float64) * mask[:, None]
    torch.testing.assert_close(zero_com(torch.cat([t.expand(3, 3, N) * mask[:, None], torch.zeros(3, 5, N,
                               dtype=torch.float64)], 1), mask), torch.zeros(3, C, N, dtype=torch.float64))
    assert torch.all(p[2, :3] == 0)  # one atom: its position is its centre of mass


def test_projected_noise_is_the_standard_normal_of_the_subspace():
    """P n for n ~ N(0, I) has covariance P (EDM eq. 4: the isotropic Gaussian on the (M - 1) x 3 dimensional
    subspace), checked on the positions of a 4-atom molecule: Cov = (I - 11^T / M) per axis."""
    m = 4
    mask = mask_of_counts([m], 5)
    n = torch.randn(200_000, C, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    p = zero_com(n, mask)[:, 0, :m]  # (S, M): the x-coordinates of the real atoms
    cov = p.T @ p / p.shape[0]
    want = torch.eye(m, dtype=torch.float64) - 1.0 / m
    torch.testing.assert_close(cov, want, atol=0.01, rtol=0)
    assert torch.all(zero_com(n[:8], mask)[:, :, m:] == 0)


def test_training_noise_lies_in_the_subspace(tmp_path):
    from noisecraft.config import from_dict, to_dict
    from noisecraft.presets import PRESETS
    from noisecraft.runconfig import RunConfig, apply_run_overrides
    from noisecraft.training.trainer import Trainer

    data = apply_run_overrides(to_dict(PRESETS["molecules"]), ["network.hidden=8", "network.layers=1",
                                                               "train.batch_size=6", "data.limit=12"])
    config = from_dict(RunConfig, data, "config")
    trainer = Trainer(config, tmp_path / "run", progress=False)
    x0, cond, sigma, noise = trainer.draw(0)
    mask = cond["atom_mask"]
    assert in_subspace(x0, mask) and in_subspace(noise, mask)
    assert noise[:, :3].abs().sum() > 0 and tuple(cond["loss_mask"].shape) == (6, 1, x0.shape[-1])


def test_loss_mask_averages_over_real_atoms_only():
    sq = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)
    mask = mask_of_counts([4, 2], 4).unsqueeze(1)
    got = _mean_per_sample(sq, {"loss_mask": mask})
    torch.testing.assert_close(got, torch.stack([sq[0].mean(), sq[1, :, :2].mean()]))
    torch.testing.assert_close(_mean_per_sample(sq, {}), sq.flatten(1).mean(1))


def test_sampling_keeps_every_state_in_the_subspace():
    from noisecraft.pipelines.generate import sample_batches

    torch.manual_seed(0)
    net = EGNN(EGNNConfig(channels=C, n_atoms=N, hidden=16, layers=2)).eval()
    counts = torch.tensor([7, 5, 3])
    cond = {"atom_mask": mask_of_counts(counts, N)}

    def denoiser(x, sigma, cond):  # EDM preconditioning (Karras et al. 2022), sigma_data 0.5
        s = torch.as_tensor(sigma).reshape(-1, 1, 1).to(x)
        c_skip, c_out, c_in = 0.25 / (s ** 2 + 0.25), s * 0.5 / (s ** 2 + 0.25).sqrt(), 1 / (s ** 2 + 0.25).sqrt()
        return c_skip * x + c_out * net(c_in * x, s.log().flatten() / 4, cond)

    seen = []

    def record(info):
        seen.append((info["x"].clone(), info["denoised"].clone()))

    sigmas = torch.tensor([80.0, 10.0, 1.0, 0.1, 0.0])
    project = lambda x, c: zero_com(x, c["atom_mask"].to(x.device))  # noqa: E731
    with torch.no_grad():
        out = sample_batches(denoiser, sigmas, (C, N), num=3, seed=0, sampler="heun", cond=cond, callback=record,
                             project=project)
    assert in_subspace(out, cond["atom_mask"]) and len(seen) == 4
    for x, d in seen:
        assert in_subspace(x, cond["atom_mask"], 1e-3) and in_subspace(d, cond["atom_mask"])


def test_atom_count_requests_are_checked():
    from noisecraft.conditions.atoms import AtomCondition
    from noisecraft.pipelines import Request

    c = AtomCondition.__new__(AtomCondition)
    c.name, c.image_shape, c.histogram = "atoms", (8, 10), {3: 1, 5: 4}
    c.check_request(Request(num=2, conditions={"atoms": [3, 10]}))
    for bad in (0, 11, [3, 4, 5], True, "5"):
        with pytest.raises(NoisecraftError, match="atom count"):
            c.check_request(Request(num=2, conditions={"atoms": bad}))
    assert c.draw_counts(3, 7) == c.draw_counts(3, 7) and set(c.draw_counts(50, 0)) == {3, 5}
