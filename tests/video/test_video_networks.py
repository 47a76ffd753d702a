"""Video U-Net (factorised space-time, inflation) and video DiT: exact properties."""

import pytest
import torch
from video_helpers import clips, randomise, tiny_video_unet

from noisecraft.errors import ConfigError, NoisecraftError
from noisecraft.models.unet import UNet
from noisecraft.models.video_dit import VideoDiT, VideoDiTConfig
from noisecraft.models.video_unet import TemporalLayers, fold_frames, inflate, unfold_frames


def test_fold_unfold_roundtrip():
    x = clips(n=3, t=5)
    f = fold_frames(x)
    assert torch.equal(f[1 * 5 + 2], x[1, :, 2])  # row b T + t is frame t of video b
    assert torch.equal(unfold_frames(f, 5), x)


@torch.no_grad()
def test_zero_temporal_layers_equal_the_image_unet_frame_by_frame():
    """The inflated model at initialisation (zero temporal layers) is the image U-Net on every frame, bit for bit;
    with class labels and concatenated channels (broadcast over time) too."""
    video = tiny_video_unet(num_classes=3, concat_channels=1)
    randomise(video.image)
    x, c_noise = clips(t=4), torch.tensor([0.3, -1.2])
    cond = {"class_labels": torch.tensor([0, 2]), "concat": torch.randn(2, 1, 1, 16, 16)}
    out = video(x, c_noise, cond)
    frame_cond = {"class_labels": cond["class_labels"].repeat_interleave(4),
                  "concat": cond["concat"].expand(-1, -1, 4, -1, -1).transpose(1, 2).reshape(8, 1, 16, 16)}
    ref = video.image(fold_frames(x), c_noise.repeat_interleave(4), frame_cond)
    assert torch.equal(out, unfold_frames(ref, 4))
    # one frame at a time: the same numbers up to float rounding of a different batch size
    per_frame = torch.stack([video.image(x[:, :, t], c_noise, {"class_labels": cond["class_labels"],
                                                                "concat": cond["concat"][:, :, 0]})
                             for t in range(4)], dim=2)
    torch.testing.assert_close(out, per_frame, rtol=0, atol=1e-6)


@torch.no_grad()
def test_temporal_layers_mix_frames_only_when_trained():
    video = tiny_video_unet()
    randomise(video.image)
    x = clips(t=4)
    x2 = x.clone()
    x2[:, :, 0] += 1.0
    c = torch.zeros(2)
    assert torch.equal(video(x, c)[:, :, 1:], video(x2, c)[:, :, 1:])  # zero temporal layers: frames independent
    randomise(video, seed=2)
    assert not torch.allclose(video(x, c)[:, :, 1:], video(x2, c)[:, :, 1:])


def test_inflate_loads_the_image_weights_and_freezes_them():
    video = tiny_video_unet()
    image = randomise(UNet(video.config.image_config()), seed=3)
    inflate(video, image.state_dict(), freeze=True)
    assert all(torch.equal(a, b) for a, b in zip(video.image.state_dict().values(), image.state_dict().values()))
    trainable = {n for n, p in video.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("temporal_") for n in trainable)
    x = clips(t=3)
    with torch.no_grad():
        assert torch.equal(video(x, torch.ones(2)), unfold_frames(image(fold_frames(x), torch.ones(6)), 3))
    with pytest.raises(ConfigError, match="does not match the video U-Net"):
        inflate(tiny_video_unet(base_channels=16, head_channels=16), image.state_dict())


@torch.no_grad()
def test_video_unet_takes_any_frame_count():
    video = randomise(tiny_video_unet())
    for t in (1, 3, 7):
        assert video(clips(t=t), torch.zeros(2)).shape == (2, 1, t, 16, 16)
    with pytest.raises(NoisecraftError, match=r"expected clips \(B, 1, T, H, W\)"):
        video(torch.zeros(2, 1, 16, 16), torch.zeros(2))


def test_relative_position_bias_is_shift_invariant():
    layer = TemporalLayers(8, tiny_video_unet().config)
    torch.nn.init.normal_(layer.bias.weight)
    from noisecraft.models.video_unet import relative_bias

    b = relative_bias(layer.bias, 6, layer.max_distance)  # (heads, 6, 6)
    assert torch.equal(b[:, 1:, 1:], b[:, :-1, :-1])


def tiny_dit(**changes):
    torch.manual_seed(0)
    return VideoDiT(VideoDiTConfig(**{**dict(in_channels=1, input_size=16, patch_size=4, hidden_size=32, depth=1,
                                              num_heads=2, frames=4, temporal_patch=2), **changes}))


@torch.no_grad()
def test_video_dit_is_zero_at_init_and_unpatchify_inverts_patching():
    dit = tiny_dit()
    x = clips(t=4)
    assert torch.equal(dit(x, torch.zeros(2)), torch.zeros_like(x))
    cfg = dit.config
    # tokens in (t, row, column) order holding (pt, p, p, C) values: the layout unpatchify reads
    n, g, p, pt = 2, 4, 4, 2
    tokens = x.reshape(2, 1, n, pt, g, p, g, p).permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(2, n * g * g, -1)
    assert cfg.num_tokens == n * g * g
    assert torch.equal(dit.unpatchify(tokens), x)


def test_video_dit_frame_count_is_fixed():
    with pytest.raises(NoisecraftError, match="trained on 4 frames of 16x16"):
        tiny_dit()(clips(t=6), torch.zeros(2))
    with pytest.raises(ConfigError, match="must divide frames"):
        tiny_dit(frames=5)
