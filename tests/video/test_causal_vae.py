"""The causal 3-D autoencoder: exact causality by perturbation, exact tiled decoding in time, clear errors."""

import pytest
import torch
from video_helpers import clips, randomise, tiny_vae

from noisecraft.errors import NoisecraftError
from noisecraft.models.causal_vae import latent_frames


@pytest.fixture(scope="module")
def vae():
    return randomise(tiny_vae(), std=0.2)


def perturbed_after(x, t, seed=5):
    y = x.clone()
    y[:, :, t + 1:] += torch.randn(y[:, :, t + 1:].shape, generator=torch.Generator().manual_seed(seed))
    return y


@torch.no_grad()
def test_latent_frame_j_depends_only_on_input_frames_up_to_4j(vae):
    x = clips(t=9)
    z = vae.encode(x)  # (2, 2, 3, 4, 4)
    assert z.shape[2] == 3
    for j in range(3):
        z2 = vae.encode(perturbed_after(x, 4 * j))
        assert torch.equal(z2[:, :, :j + 1], z[:, :, :j + 1])  # exact: the past is untouched
        if j < 2:
            assert not torch.equal(z2[:, :, j + 1:], z[:, :, j + 1:])  # and the future does change


@torch.no_grad()
def test_output_frame_t_never_depends_on_frames_after_its_group(vae):
    """Output frame t depends on input frames <= the end of its causal group (4 ceil(t / 4)); frame 0 on frame 0
    alone. Every perturbation point t: outputs 0 .. (last full group end <= t) are bit-identical."""
    x = clips(t=9)
    y = vae.decode(vae.encode(x))
    assert y.shape == x.shape
    for t in range(9):
        y2 = vae.decode(vae.encode(perturbed_after(x, t)))
        kept = 4 * (t // 4)  # frames 0..kept belong to groups that end at or before t
        assert torch.equal(y2[:, :, :kept + 1], y[:, :, :kept + 1])
        if t < 8:
            assert not torch.equal(y2[:, :, kept + 1:], y[:, :, kept + 1:])


@torch.no_grad()
def test_decoder_is_causal_in_latent_frames(vae):
    z = torch.randn(1, 2, 4, 4, 4, generator=torch.Generator().manual_seed(3))
    y = vae.decode(z)
    assert y.shape[2] == 13
    for j in range(3):
        y2 = vae.decode(perturbed_after(z, j))
        assert torch.equal(y2[:, :, :1 + 4 * j], y[:, :, :1 + 4 * j])


@torch.no_grad()
@pytest.mark.parametrize("tile", [1, 2, 3])
def test_tiled_decoding_in_time_is_exact(vae, tile):
    z = torch.randn(1, 2, 7, 4, 4, generator=torch.Generator().manual_seed(4))
    assert torch.equal(vae.tiled_decode_time(z, tile=tile), vae.decode(z))


@torch.no_grad()
def test_tiling_without_context_is_not_exact(vae):
    """The context frames matter: without them the tiles see a restarted history (the test above is not vacuous)."""
    z = torch.randn(1, 2, 7, 4, 4, generator=torch.Generator().manual_seed(4))
    assert not torch.equal(vae.tiled_decode_time(z, tile=2, context=0), vae.decode(z))


def test_frame_counts_must_be_one_plus_multiple_of_4(vae):
    assert [latent_frames(t, 4) for t in (1, 5, 9, 17)] == [1, 2, 3, 5]
    with pytest.raises(NoisecraftError, match=r"1 \+ 4 k frames \(1, 5, 9, 13.*got 8 frames"):
        vae.encode(clips(t=8))
    with pytest.raises(NoisecraftError, match="expected \\(B, 1, T, H, W\\) with H, W divisible by 4"):
        vae.encode(torch.zeros(1, 1, 5, 18, 18))
