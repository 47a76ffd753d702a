"""The point transformer: permutation equivariance (random permutations, float32, to 1e-5), conditioning paths,
zero output at initialisation, registry and config errors."""

import pytest
import torch

from noisecraft.errors import ConfigError, NoisecraftError
from noisecraft.models import build_model
from noisecraft.models.point_transformer import PointTransformer, PointTransformerConfig


def _trained_like(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter redrawn (the zero-initialised gates and output would make equivariance trivial)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return net.eval()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_permutation_equivariance_class_text_and_concat(seed):
    cfg = PointTransformerConfig(n_points=50, hidden_size=32, depth=2, num_heads=4, freq_dim=32, num_classes=5,
                                 context_dim=12, pooled_dim=7, concat_channels=2)
    net = _trained_like(PointTransformer(cfg), seed)
    gen = torch.Generator().manual_seed(100 + seed)
    B, N = 3, 50
    x = torch.randn(B, 3, N, generator=gen)
    cond = {"class_labels": torch.tensor([0, 4, 5]), "text_tokens": torch.randn(B, 6, 12, generator=gen),
            "text_mask": torch.tensor([[True] * 6, [True] * 3 + [False] * 3, [False] * 6]),
            "text_pooled": torch.randn(B, 7, generator=gen), "concat": torch.randn(B, 2, N, generator=gen)}
    c_noise = torch.randn(B, generator=gen)
    out = net(x, c_noise, cond)
    assert out.shape == (B, 3, N) and out.abs().max() > 1e-2  # a non-trivial output
    for _ in range(3):
        perm = torch.randperm(N, generator=gen)
        permuted = dict(cond, concat=cond["concat"][:, :, perm])
        torch.testing.assert_close(net(x[:, :, perm], c_noise, permuted), out[:, :, perm], atol=1e-5, rtol=0)


def test_zero_at_init_and_registered():
    net = build_model("point-transformer", {"n_points": 16, "hidden_size": 16, "depth": 1, "num_heads": 2,
                                            "freq_dim": 16})
    assert isinstance(net, PointTransformer)
    out = net(torch.randn(2, 3, 16), torch.zeros(2))
    assert torch.equal(out, torch.zeros(2, 3, 16))


def test_conditioning_changes_the_output():
    net = _trained_like(PointTransformer(PointTransformerConfig(hidden_size=16, depth=1, num_heads=2, freq_dim=16,
                                                                num_classes=3)), 0)
    x = torch.randn(1, 3, 20)
    a = net(x, torch.zeros(1), {"class_labels": torch.tensor([0])})
    b = net(x, torch.zeros(1), {"class_labels": torch.tensor([3])})  # the null label
    assert (a - b).abs().max() > 1e-3
    torch.testing.assert_close(b, net(x, torch.zeros(1)))  # no labels = the null label


def test_config_and_input_errors():
    cfg = PointTransformerConfig()
    assert cfg.for_data((3, 77)).n_points == 77 and cfg.for_data((3, 77)).data_shape() == (3, 77)
    with pytest.raises(ConfigError, match="point clouds"):
        cfg.for_data((3, 8, 8))
    with pytest.raises(ConfigError, match="num_heads"):
        PointTransformerConfig(hidden_size=30, num_heads=4)
    net = PointTransformer(PointTransformerConfig(hidden_size=16, depth=1, num_heads=2, freq_dim=16))
    with pytest.raises(NoisecraftError, match=r"expected \(B, 3, N\)"):
        net(torch.randn(2, 4, 10), torch.zeros(2))
    with pytest.raises(NoisecraftError, match="class_labels"):
        net(torch.randn(2, 3, 10), torch.zeros(2), {"class_labels": torch.tensor([0, 1])})
