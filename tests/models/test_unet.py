"""U-Net and MLP denoiser networks: shapes, initialisation, gradients, conditioning, validation,
attention and time embedding against their closed forms, and diffusers' UNet2DModel as a peer."""

import math
import re
from dataclasses import replace

import pytest
import torch

from noisecraft.errors import ConfigError, NoisecraftError
from noisecraft.models import MODELS, build_model
from noisecraft.models.mlp import MLP_PRESETS, MLPConfig, MLPDenoiserNet
from noisecraft.models.unet import (
    UNET_PRESETS,
    AttentionBlock,
    ConcatSkip,
    UNet,
    UNetConfig,
    Upsample,
    timestep_embedding,
)

TINY = UNET_PRESETS["tiny"]


def _randomize(model: torch.nn.Module, seed: int = 0, std: float = 0.1) -> torch.nn.Module:
    """Overwrite every parameter with non-zero noise (undoing the zero initialisation)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def _input(cfg: UNetConfig, batch: int = 2, size: int | None = None, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    size = size or 2 ** len(cfg.channel_mult)
    x = torch.randn(batch, cfg.in_channels, *([size] * cfg.dims), generator=g)
    return x, torch.rand(batch, generator=g) * 999


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("channels_last", [True, False])
def test_output_shape_all_dims(dims, channels_last):
    cfg = replace(TINY, dims=dims, in_channels=2, out_channels=3, channels_last=channels_last)
    x, t = _input(cfg, size=8)
    out = _randomize(UNet(cfg))(x, t)
    assert out.shape == (2, 3, *([8] * dims))
    assert torch.isfinite(out).all() and out.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(UNET_PRESETS))
def test_each_preset_shape_shrunk(name):
    """Each preset's level structure, attention and conditioning, at a tiny width for speed."""
    cfg = replace(UNET_PRESETS[name], base_channels=8, norm_groups=4, head_channels=8, num_res_blocks=1)
    x, t = _input(cfg)
    assert UNet(cfg)(x, t).shape == x.shape


def test_preset_sizes():
    counts = {k: sum(p.numel() for p in UNet(c).parameters()) for k, c in UNET_PRESETS.items()
              if k in ("tiny", "mnist")}
    assert counts["tiny"] < 50_000
    assert 500_000 <= counts["mnist"] <= 2_000_000
    assert 7 in [28 // 2**lv for lv in UNET_PRESETS["mnist"].attention_levels]  # attention at 7x7


def test_zero_init_output_exactly_zero():
    cfg = replace(TINY, num_classes=3)
    x, t = _input(cfg)
    out = UNet(cfg)(x, t, {"class_labels": torch.tensor([0, 2])})
    assert torch.equal(out, torch.zeros_like(out))


def test_gradient_reaches_every_parameter():
    cfg = replace(TINY, num_classes=3, scale_shift_norm=True)
    model = _randomize(UNet(cfg))
    x, t = _input(cfg)
    model(x, t, {"class_labels": torch.tensor([1, 3])}).square().sum().backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert dead == []
    assert model.class_emb.weight.grad[[1, 3]].abs().sum(dim=1).min() > 0


def test_class_conditioning_changes_output_and_missing_label_is_null():
    cfg = replace(TINY, num_classes=4)
    model = _randomize(UNet(cfg)).eval()
    x, t = _input(cfg)
    out = {c: model(x, t, {"class_labels": torch.full((2,), c)}) for c in range(5)}
    for a in range(5):
        for b in range(a + 1, 5):
            assert (out[a] - out[b]).abs().max() > 1e-4
    assert torch.equal(model(x, t), out[4])  # no labels -> the null label num_classes


def test_channels_last_changes_layout_not_numbers():
    a = _randomize(UNet(replace(TINY, channels_last=True)))
    b = UNet(replace(TINY, channels_last=False))
    b.load_state_dict(a.state_dict())
    x, t = _input(TINY, size=8)
    torch.testing.assert_close(a(x, t), b(x, t), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("field, value", [
    ("dims", 4), ("dims", 0), ("in_channels", 0), ("out_channels", 0), ("base_channels", 0),
    ("channel_mult", ()), ("channel_mult", (1, 0)), ("attention_levels", (2,)),
    ("attention_levels", (-1,)), ("attention_levels", (1, 1)), ("head_channels", 3),
    ("dropout", 1.0), ("dropout", -0.1), ("norm_groups", 0), ("norm_groups", 3), ("num_classes", -1),
    ("num_res_blocks", 0), ("scale_shift_norm", 1), ("dims", 2.0), ("channel_mult", [1, 2]),
    ("concat_channels", -1), ("concat_channels", 1.0), ("refiner", {"kernel": 3}),
])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ConfigError, match=rf"UNetConfig\.{field}"):
        replace(TINY, **{field: value})


def test_config_error_lists_allowed_values():
    with pytest.raises(ConfigError, match=r"UNetConfig\.norm_groups: 4 must divide .*base_channels"):
        replace(TINY, base_channels=6)
    with pytest.raises(ConfigError, match="one of 1, 2, 3"):
        UNetConfig(dims=5)
    with pytest.raises(ConfigError, match=r"0\.\.2"):
        UNetConfig(attention_levels=(3,))


@pytest.mark.parametrize("shape", [(2, 2, 8, 8), (2, 1, 8), (2, 1, 8, 8, 8), (2, 1, 7, 8)])
def test_wrong_input_shape(shape):
    model = UNet(TINY)  # 1 input channel, 2 levels -> spatial sizes must be even
    with pytest.raises(NoisecraftError, match=r"expected shape \(B, 1, S, S\).*got " + re.escape(str(shape))):
        model(torch.randn(shape), torch.zeros(shape[0]))


def test_wrong_c_noise_and_label_shapes():
    model = UNet(replace(TINY, num_classes=2))
    x = torch.randn(2, 1, 8, 8)
    with pytest.raises(NoisecraftError, match=r"c_noise: expected shape \(2,\), got \(3,\)"):
        model(x, torch.zeros(3))
    with pytest.raises(NoisecraftError, match="class_labels"):
        model(x, torch.zeros(2), {"class_labels": torch.zeros(3, dtype=torch.long)})
    with pytest.raises(NoisecraftError, match="num_classes is 0"):
        UNet(TINY)(x, torch.zeros(2), {"class_labels": torch.zeros(2, dtype=torch.long)})


def _naive_attention(block: AttentionBlock, x: torch.Tensor) -> torch.Tensor:
    """x + W_o concat_h softmax(Q_h K_h^T / sqrt(d)) V_h, written out with explicit loops."""
    B, C = x.shape[:2]
    h = torch.nn.functional.group_norm(x, block.norm.num_groups, block.norm.weight, block.norm.bias, 1e-5)
    tokens = h.reshape(B, C, -1).transpose(1, 2)  # (B, L, C)
    q, k, v = (tokens @ block.qkv.weight.T + block.qkv.bias).split(C, dim=-1)
    d = C // block.heads
    heads = []
    for i in range(block.heads):
        s = slice(i * d, (i + 1) * d)
        weights = torch.softmax(q[..., s] @ k[..., s].transpose(1, 2) / math.sqrt(d), dim=-1)
        heads.append(weights @ v[..., s])
    out = torch.cat(heads, dim=-1) @ block.proj.weight.T + block.proj.bias  # (B, L, C)
    return x + out.transpose(1, 2).reshape(x.shape)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_attention_matches_naive_softmax(dims):
    cfg = replace(TINY, dims=dims, base_channels=16, head_channels=4)  # 4 heads at level 0
    block = _randomize(AttentionBlock(16, cfg), std=0.3).double()
    x = torch.randn(2, 16, *([4] * dims), dtype=torch.float64)
    expected = _naive_attention(block, x)
    torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)
    if dims > 1:
        x_cl = x.contiguous(memory_format=torch.channels_last if dims == 2 else torch.channels_last_3d)
        torch.testing.assert_close(block(x_cl), expected, rtol=1e-5, atol=1e-5)


def test_attention_is_permutation_equivariant():
    """Attention has no positional term: shuffling the positions shuffles the output alike."""
    cfg = replace(TINY, base_channels=16, head_channels=8)
    block = _randomize(AttentionBlock(16, cfg), std=0.3)
    x = torch.randn(2, 16, 4, 4)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    shuffle = lambda z: z.flatten(2)[..., perm].reshape(z.shape)  # noqa: E731
    torch.testing.assert_close(block(shuffle(x)), shuffle(block(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_upsample_equals_nearest_then_conv(dims):
    """The stride-2 transposed convolution is the same linear map as nearest 2x upsampling + 3x3 conv."""
    up = Upsample(6, replace(TINY, dims=dims)).double()
    x = torch.randn(2, 6, *([5] * dims), dtype=torch.float64, requires_grad=True)
    expected = up.conv(torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"))
    out = up(x)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, [x, up.conv.weight, up.conv.bias], g)
    grads_ref = torch.autograd.grad(expected, [x, up.conv.weight, up.conv.bias], g)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_concat_skip_gradients_are_dense_and_exact():
    cl = torch.channels_last
    h = torch.randn(2, 3, 4, 4).contiguous(memory_format=cl).requires_grad_()
    s = torch.randn(2, 5, 4, 4).contiguous(memory_format=cl).requires_grad_()
    out = ConcatSkip.apply(h, s, cl)
    torch.testing.assert_close(out, torch.cat([h, s], dim=1), rtol=0, atol=0)
    g = torch.randn(2, 8, 4, 4).contiguous(memory_format=cl)
    gh, gs = torch.autograd.grad(out, [h, s], g)
    assert torch.equal(gh, g[:, :3]) and torch.equal(gs, g[:, 3:])
    assert gh.is_contiguous(memory_format=cl) and gs.is_contiguous(memory_format=cl)


def test_scalar_c_noise_is_broadcast():
    model = _randomize(UNet(TINY))
    x, _ = _input(TINY)
    torch.testing.assert_close(model(x, torch.tensor(3.0)), model(x, torch.full((2,), 3.0)))


@pytest.mark.parametrize("dim", [8, 9, 32])
def test_timestep_embedding_closed_form(dim):
    c = torch.tensor([0.0, 1.0, 17.5, 999.0, -0.73])
    half = dim // 2
    expected = torch.zeros(len(c), dim, dtype=torch.float64)
    for b, cb in enumerate(c.tolist()):
        for i in range(half):
            f = 10000.0 ** (-i / half)
            expected[b, i], expected[b, half + i] = math.cos(cb * f), math.sin(cb * f)
    torch.testing.assert_close(timestep_embedding(c, dim).double(), expected, rtol=0, atol=2e-4)


# ----------------------------------------------------------------------------------------------
# Peer: diffusers' UNet2DModel with the same weights computes the same function.


def _diffusers_twin(cfg: UNetConfig):
    diffusers = pytest.importorskip("diffusers")
    attn = set(cfg.attention_levels)
    levels = range(len(cfg.channel_mult))
    return diffusers.UNet2DModel(
        in_channels=cfg.in_channels, out_channels=cfg.output_channels, block_out_channels=cfg.widths,
        layers_per_block=cfg.num_res_blocks,
        down_block_types=tuple("AttnDownBlock2D" if lv in attn else "DownBlock2D" for lv in levels),
        up_block_types=tuple("AttnUpBlock2D" if lv in attn else "UpBlock2D" for lv in reversed(levels)),
        attention_head_dim=cfg.head_channels, norm_num_groups=cfg.norm_groups,
        attn_norm_num_groups=cfg.norm_groups, norm_eps=1e-5, add_attention=cfg.mid_attention,
        resnet_time_scale_shift="scale_shift" if cfg.scale_shift_norm else "default",
        time_embedding_dim=cfg.time_embed_mult * cfg.base_channels,
    )


def _state_from_diffusers(cfg: UNetConfig, theirs) -> dict:
    """Map UNet2DModel weights onto our UNet's parameter names (the library's mapping, used by the exporter)."""
    from noisecraft.interop.diffusers_export import from_diffusers_unet2d

    return from_diffusers_unet2d(cfg, theirs.state_dict())


@pytest.mark.parametrize("scale_shift", [True, False])
def test_same_function_as_diffusers_unet2d(scale_shift):
    cfg = replace(TINY, in_channels=2, channel_mult=(1, 2, 2), attention_levels=(1,), num_res_blocks=1,
                  scale_shift_norm=scale_shift)
    torch.manual_seed(0)
    theirs = _randomize(_diffusers_twin(cfg), seed=1, std=0.2).eval()
    ours = UNet(cfg).eval()
    sd = _state_from_diffusers(cfg, theirs)
    ours.load_state_dict(sd, strict=True)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    x, t = _input(cfg, size=8)
    t = t.round()
    with torch.no_grad():
        torch.testing.assert_close(ours(x, t), theirs(x, t).sample, rtol=1e-4, atol=1e-4)
    # the export direction is the exact inverse, and the library's config builds the same twin
    from noisecraft.interop.diffusers_export import to_diffusers_unet2d, unet2d_config

    back = to_diffusers_unet2d(cfg, ours.state_dict())
    assert back.keys() == theirs.state_dict().keys()
    assert all(torch.equal(v, back[k]) for k, v in theirs.state_dict().items())
    twin = type(theirs).from_config(unet2d_config(cfg))
    assert {k: v.shape for k, v in twin.state_dict().items()} == {k: v.shape for k, v in back.items()}


# ----------------------------------------------------------------------------------------------
# MLP denoiser and the registry


def test_mlp_shape_zero_init_and_conditioning():
    cfg = replace(MLP_PRESETS["toy2d"], data_dim=3, num_classes=2)
    model = MLPDenoiserNet(cfg)
    x, t = torch.randn(5, 3), torch.rand(5)
    assert torch.equal(model(x, t), torch.zeros(5, 3))
    _randomize(model)
    a = model(x, t, {"class_labels": torch.zeros(5, dtype=torch.long)})
    b = model(x, t, {"class_labels": torch.ones(5, dtype=torch.long)})
    assert a.shape == (5, 3) and (a - b).abs().max() > 1e-4
    a.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_mlp_errors():
    with pytest.raises(ConfigError, match=r"MLPConfig\.hidden"):
        MLPConfig(hidden=0)
    with pytest.raises(NoisecraftError, match=r"expected shape \(B, 2\), got \(4, 3\)"):
        MLPDenoiserNet(MLPConfig())(torch.randn(4, 3), torch.zeros(4))


def test_build_model_registry():
    assert set(MODELS) == {"unet", "mlp", "dit", "mmdit", "video-unet", "video-dit", "point-transformer",
                           "egnn"}
    model = build_model("unet", {"channel_mult": [1, 2], "attention_levels": [1], "base_channels": 8,
                                 "head_channels": 8})
    assert isinstance(model, UNet) and model.config.channel_mult == (1, 2)
    assert isinstance(build_model("mlp", MLPConfig(hidden=16)), MLPDenoiserNet)
    with pytest.raises(NoisecraftError, match="unknown model 'vit'; allowed: dit, egnn, mlp, mmdit, "
                       r"point-transformer, unet, video-dit, video-unet"):
        build_model("vit", None)
    with pytest.raises(ConfigError, match="unknown field"):
        build_model("unet", {"width": 3})


def test_attention_runs_in_float32_under_cpu_bf16_autocast():
    """Under CPU bf16 autocast the U-Net's attention is float32 softmax(QK^T/sqrt(d))V of the bf16 inputs, cast back
    to bf16 (exactly); outside autocast it is the plain product."""
    import torch.nn.functional as F

    from noisecraft.models.unet import attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 49, 16, generator=g) for _ in range(3))
    weights = torch.softmax(q @ k.transpose(-1, -2) / 4.0, dim=-1)
    torch.testing.assert_close(attention(q, k, v), weights @ v, rtol=1e-5, atol=1e-5)
    qb, kb, vb = q.bfloat16(), k.bfloat16(), v.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attention(qb, kb, vb)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, F.scaled_dot_product_attention(qb.float(), kb.float(), vb.float()).bfloat16())
