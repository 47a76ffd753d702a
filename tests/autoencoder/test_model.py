"""The autoencoder network: the KL term against its closed form, shapes for every factor, tiled decoding,
configuration and input errors."""

import pytest
import torch

from noisecraft.errors import ConfigError, NoisecraftError
from noisecraft.models.autoencoder import (
    Autoencoder,
    AutoencoderConfig,
    DiagonalGaussian,
    blend_weights_1d,
    tiled_apply,
)


def small(levels: int = 3, **kw) -> AutoencoderConfig:
    return AutoencoderConfig(block_channels=(8,) + (16,) * (levels - 1), latent_channels=kw.pop("latent_channels", 3),
                             norm_groups=4, **kw)


def test_kl_matches_closed_form_and_torch_distributions(gen):
    mean = torch.randn(4, 3, 5, 6, generator=gen, dtype=torch.float64)
    logvar = torch.randn(4, 3, 5, 6, generator=gen, dtype=torch.float64)
    post = DiagonalGaussian(torch.cat([mean, logvar], dim=1))
    closed = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).flatten(1).sum(1)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mean, (0.5 * logvar).exp()),
                                            torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean)))
    torch.testing.assert_close(post.kl(), closed, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(post.kl(), ref.flatten(1).sum(1), rtol=1e-10, atol=1e-10)
    # KL vanishes exactly at the prior and the clamp keeps extreme log-variances finite
    prior = DiagonalGaussian(torch.zeros(2, 4, 3, 3))
    assert torch.equal(prior.kl(), torch.zeros(2))
    assert torch.isfinite(DiagonalGaussian(torch.full((1, 2, 1, 1), 1e4)).kl()).all()


def test_posterior_sample_moments():
    logvar = 2 * torch.log(torch.tensor(0.3))
    moments = torch.cat([torch.full((20000, 1, 1, 1), 1.5), torch.full((20000, 1, 1, 1), float(logvar))], dim=1)
    z = DiagonalGaussian(moments).sample(torch.Generator().manual_seed(1))
    assert abs(float(z.mean()) - 1.5) < 0.01 and abs(float(z.std()) - 0.3) < 0.01


@pytest.mark.parametrize("levels, f", [(1, 1), (2, 2), (3, 4), (4, 8), (5, 16)])
@pytest.mark.parametrize("kind", ["kl", "deterministic"])
def test_shapes_for_every_factor(levels, f, kind):
    ae = Autoencoder(small(levels, kind=kind, latent_channels=5))
    assert ae.factor == f
    x = torch.randn(2, 3, 32, 48)
    z = ae.encode(x)
    assert z.shape == (2, 5, 32 // f, 48 // f)
    assert ae.decode(z).shape == x.shape
    x_hat, post = ae(x, torch.Generator().manual_seed(0))
    assert x_hat.shape == x.shape and (post is None) == (kind == "deterministic")


def test_encode_is_the_posterior_mean():
    ae = Autoencoder(small())
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(ae.encode(x), ae.posterior(x).mean)


def test_scaling_round_trip():
    ae = Autoencoder(small(), scaling_factor=0.3, shift_factor=0.2)
    z = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(ae.from_diffusion(ae.to_diffusion(z)), z)


def test_bad_input_errors():
    ae = Autoencoder(small())  # f = 4, 3 latent channels
    with pytest.raises(NoisecraftError, match="not divisible .* f=4"):
        ae.encode(torch.randn(1, 3, 30, 32))
    with pytest.raises(NoisecraftError, match=r"latent must have shape \(B, 3, h, w\)"):
        ae.decode(torch.randn(1, 4, 8, 8))
    with pytest.raises(NoisecraftError, match=r"\(B, 3, H, W\)"):
        ae.encode(torch.randn(1, 1, 32, 32))
    with pytest.raises(NoisecraftError, match="tile"):
        ae.tiled_decode(torch.randn(1, 3, 8, 8), tile=4, overlap=4)


def test_config_validation():
    with pytest.raises(NoisecraftError, match="unknown autoencoder kind 'vq'; allowed: deterministic, kl"):
        AutoencoderConfig(kind="vq")
    with pytest.raises(ConfigError, match="norm_groups"):
        AutoencoderConfig(block_channels=(12, 16), norm_groups=8)
    with pytest.raises(ConfigError, match="latent_channels"):
        AutoencoderConfig(latent_channels=0)


# ------------------------------------------------------------------------------------------ tiling
@pytest.mark.parametrize("size, tile, overlap", [(10, 4, 1), (15, 8, 2), (64, 16, 4), (7, 8, 2), (33, 9, 4),
                                                 (20, 5, 0)])
def test_blend_weights_sum_to_one(size, tile, overlap):
    total = torch.zeros(size, dtype=torch.float64)
    raw = blend_weights_1d(size, tile, overlap)
    for s, w in raw:
        total[s:s + len(w)] += w
    assert (total > 0).all()
    z = torch.zeros(1, 1, size, size, dtype=torch.float64)
    ones = tiled_apply(lambda t: torch.ones_like(t), z, scale=1, tile=tile, overlap=overlap, out_channels=1)
    torch.testing.assert_close(ones, torch.ones_like(ones), rtol=0, atol=1e-12)
    assert raw[0][0] == 0 and raw[-1][0] + len(raw[-1][1]) == size  # the tiles cover [0, size)


def test_tiled_apply_is_exact_for_a_pointwise_decoder(gen):
    """A decoder without spatial context (nearest upsampling of a pointwise map) must come out exactly: only the
    tiling and blending are tested."""
    z = torch.randn(2, 3, 21, 13, generator=gen, dtype=torch.float64)

    def fn(t):
        return torch.nn.functional.interpolate(torch.tanh(t[:, :2] * 2 + t[:, 2:]), scale_factor=4, mode="nearest")

    out = tiled_apply(fn, z, scale=4, tile=8, overlap=3, out_channels=2)
    torch.testing.assert_close(out, fn(z), rtol=0, atol=1e-12)


def test_tiled_decode_equals_decode_on_one_tile():
    ae = Autoencoder(small()).eval()
    z = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(ae.tiled_decode(z, tile=8, overlap=2), ae.decode(z), rtol=0, atol=1e-6)
        torch.testing.assert_close(ae.tiled_decode(z, tile=16, overlap=4), ae.decode(z), rtol=0, atol=1e-6)


def test_tiled_decode_with_overlap_gets_closer_with_more_overlap(gen):
    """Tiles see no context beyond their borders and their GroupNorm statistics are per tile (as in every tiled
    VAE decoder), so a multi-tile decode is not exact; the linear blend must make the error fall as the overlap
    grows (no seams at the tile borders)."""
    torch.manual_seed(0)
    ae = Autoencoder(small(mid_attention=False, layers_per_block=1)).eval()
    z = torch.randn(1, 3, 40, 40, generator=gen)
    with torch.no_grad():
        full = ae.decode(z)
        diff = {o: (ae.tiled_decode(z, tile=20, overlap=o) - full).abs() for o in (0, 6, 14)}
    means = [float(diff[o].mean()) for o in (0, 6, 14)]
    maxes = [float(diff[o].max()) for o in (0, 6, 14)]
    assert means[0] > means[1] > means[2] and maxes[0] > maxes[1] > maxes[2]
    assert means[2] < 0.2 * float(full.abs().mean())
