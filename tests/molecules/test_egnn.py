"""The EGNN denoiser's symmetries (Satorras et al. 2021; Hoogeboom et al. 2022): E(3) equivariance of the position
output, invariance of the type output, permutation equivariance, and padding that never reaches a real atom."""

import pytest
import torch

from noisecraft.errors import ConfigError, NoisecraftError
from noisecraft.models.egnn import EGNN, EGNNConfig

N, K, B = 9, 5, 3


def random_net(seed: int = 0, layers: int = 3) -> EGNN:
    """An EGNN whose weights are all drawn at a large scale (the default init makes position updates tiny, which
    would make an equivariance test nearly vacuous)."""
    torch.manual_seed(seed)
    net = EGNN(EGNNConfig(channels=3 + K, n_atoms=N, hidden=32, layers=layers, coord_range=3.0))
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.15)
    return net.eval()


def batch(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    counts = torch.tensor([N, 6, 4])
    mask = (torch.arange(N)[None] < counts[:, None]).float()  # (B, N)
    x = torch.randn(B, 3 + K, N, generator=g)
    x[:, 3:] = torch.nn.functional.one_hot(torch.randint(0, K, (B, N), generator=g), K).transpose(1, 2) * 0.25
    pos = x[:, :3] * mask[:, None]
    x[:, :3] = (pos - pos.sum(-1, keepdim=True) / mask.sum(-1)[:, None, None]) * mask[:, None]  # zero CoM
    x[:, 3:] *= mask[:, None]
    return x, mask, torch.randn(B, generator=g)


def random_orthogonal(seed: int, reflect: bool) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    if (torch.det(q) < 0) != reflect:
        q[:, 0] = -q[:, 0]
    return q.float()


def run(net, x, mask, c):
    with torch.no_grad():
        return net(x, c, {"atom_mask": mask})


@pytest.mark.parametrize("reflect", [False, True])
def test_positions_equivariant_and_types_invariant_under_rotations_reflections_translations(reflect):
    net, (x, mask, c) = random_net(), batch()
    out = run(net, x, mask, c)
    assert out[:, :3].abs().max() > 0.05 and out[:, 3:].abs().max() > 0.05  # not a trivial map
    for seed in range(3):
        q = random_orthogonal(seed, reflect)
        t = torch.randn(3, 1, generator=torch.Generator().manual_seed(10 + seed))
        y = x.clone()
        y[:, :3] = (torch.einsum("ij,bjn->bin", q, x[:, :3]) + t) * mask[:, None]  # rotate (reflect), translate
        got = run(net, y, mask, c)
        want = torch.einsum("ij,bjn->bin", q, out[:, :3])
        torch.testing.assert_close(got[:, :3], want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got[:, 3:], out[:, 3:], atol=1e-5, rtol=1e-5)


def test_permutation_equivariant():
    net, (x, mask, c) = random_net(), batch()
    out = run(net, x, mask, c)
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(3))
    got = run(net, x[:, :, perm], mask[:, perm], c)
    torch.testing.assert_close(got, out[:, :, perm], atol=1e-5, rtol=1e-5)


def test_position_output_has_zero_mean_and_padding_is_zero():
    net, (x, mask, c) = random_net(), batch()
    out = run(net, x, mask, c)
    pad = (mask == 0)[:, None].expand_as(out)
    assert torch.all(out[pad] == 0)
    mean = out[:, :3].sum(-1) / mask.sum(-1)[:, None]
    torch.testing.assert_close(mean, torch.zeros_like(mean), atol=1e-6, rtol=0)


def test_padding_never_influences_real_atoms():
    net, (x, mask, c) = random_net(), batch()
    out = run(net, x, mask, c)
    junk = x + 100.0 * torch.randn(x.shape, generator=torch.Generator().manual_seed(5)) * (1 - mask)[:, None]
    torch.testing.assert_close(run(net, junk, mask, c), out, atol=0, rtol=0)
    # and a molecule's output does not depend on the other molecules of the batch or on N
    wide = EGNN(EGNNConfig(channels=3 + K, n_atoms=N + 4, hidden=32, layers=3, coord_range=3.0))
    wide.load_state_dict(net.state_dict())
    xw = torch.cat([x, torch.zeros(B, 3 + K, 4)], -1)
    mw = torch.cat([mask, torch.zeros(B, 4)], -1)
    torch.testing.assert_close(run(wide.eval(), xw, mw, c)[..., :N], out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(run(net, x[1:2], mask[1:2], c[1:2]), out[1:2], atol=1e-5, rtol=1e-5)


def test_the_noise_level_changes_the_output():
    net, (x, mask, c) = random_net(), batch()
    assert not torch.allclose(run(net, x, mask, c), run(net, x, mask, c + 1.0))


def test_bad_inputs_and_configs_are_errors():
    net, (x, mask, c) = random_net(), batch()
    with pytest.raises(NoisecraftError, match="atom_mask"):
        net(x, c, {})
    with pytest.raises(NoisecraftError, match=r"expected \(B, 8, N\)"):
        net(x[:, :7], c, {"atom_mask": mask})
    with pytest.raises(ConfigError, match="hidden"):
        EGNNConfig(hidden=0)
    with pytest.raises(ConfigError, match="3 position rows"):
        EGNNConfig(channels=3)
    with pytest.raises(ConfigError, match="molecule tensors"):
        EGNNConfig().for_data((1, 28, 28))
