"""DiT options of issue 26 that default to the paper's model: U-ViT long skips (Bao et al. 2023) against a
hand-written forward pass and their identity initialisation, the Mix-FFN depthwise conv against a shifted-sum
reference, the class-table and time-MLP initialisations, and that with all off the model (keys, initialisation,
output) and configs written before the options are unchanged."""

from dataclasses import replace

import pytest
import torch

from noisecraft.config import from_dict, to_dict
from noisecraft.errors import ConfigError
from noisecraft.models.dit import DIT_PRESETS, DiT, DiTConfig, count_parameters
from noisecraft.models.video_dit import VideoDiT, VideoDiTConfig

TINY = replace(DIT_PRESETS["tiny"], input_size=8, num_classes=3)


def _randomize(model: torch.nn.Module, seed: int = 0, std: float = 0.1) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def _inputs(cfg, batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g, dtype=torch.float64)
    return x, torch.randn(batch, generator=g, dtype=torch.float64), {"class_labels": torch.tensor([0, 2, 3])}


@pytest.mark.parametrize("depth,skips", [(1, 0), (2, 0), (3, 1), (4, 1), (5, 2), (6, 2), (13, 6)])
def test_long_skip_count_is_the_uvit_layout(depth, skips):
    """U-ViT: (depth - 1) // 2 in-blocks, one or two middle blocks without skip, as many out-blocks."""
    cfg = replace(TINY, depth=depth, long_skip=True)
    model = DiT(cfg)
    assert cfg.num_long_skips == skips
    assert (model.skip_linears is None) == (skips == 0)
    h = cfg.hidden_size
    assert count_parameters(model) - count_parameters(DiT(replace(cfg, long_skip=False))) == skips * (2 * h * h + h)


def test_long_skip_forward_equals_hand_written_reference():
    """depth 5: blocks 0 and 1 keep their outputs h0, h1; block 2 runs plainly; block 3 reads
    L0([x, h1]) and block 4 reads L1([x, h0]) (innermost pair first)."""
    cfg = replace(TINY, depth=5, long_skip=True, patch_size=2)
    model = _randomize(DiT(cfg)).double().eval()
    x, t, cond = _inputs(cfg)
    with torch.no_grad():
        tokens = model.x_embedder(x).flatten(2).transpose(1, 2) + model.pos_embed
        c = model._embed(t, cond, x.shape[0])
        b, lin = model.blocks, model.skip_linears
        h0 = b[0](tokens, c)
        h1 = b[1](h0, c)
        h = b[2](h1, c)
        h = b[3](lin[0](torch.cat([h, h1], dim=-1)), c)
        h = b[4](lin[1](torch.cat([h, h0], dim=-1)), c)
        expected = model.unpatchify(model.final_layer(h, c))
        torch.testing.assert_close(model(x, t, cond), expected, rtol=1e-12, atol=1e-12)


def test_long_skip_keeps_zero_output_and_trains_every_parameter():
    cfg = replace(TINY, depth=4, long_skip=True, class_embed_std=1.0)
    torch.manual_seed(0)
    model = DiT(cfg)
    x, t, cond = _inputs(cfg)
    x, t = x.float(), t.float()
    assert torch.equal(model(x, t, cond), torch.zeros_like(x))  # adaLN-Zero: exactly 0 at init
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        (model(x, t, cond) - x).square().mean().backward()
        opt.step()
    assert not [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]


def test_identity_skip_init_starts_as_the_dit_without_skips():
    """skip_init "identity" ([I, 0]): whatever the other weights, the network equals the one without skips until
    the skip weights move; "xavier" does not. The other weights are drawn exactly as without skips."""
    cfg = replace(TINY, depth=5, patch_size=2)
    plain = _randomize(DiT(cfg)).double().eval()
    x, t, cond = _inputs(cfg)
    for init in ("identity", "xavier"):
        torch.manual_seed(0)
        skipped = DiT(replace(cfg, long_skip=True, skip_init=init)).double().eval()
        torch.manual_seed(0)
        reference = DiT(cfg).state_dict()
        assert all(torch.equal(v, skipped.state_dict()[k].float()) for k, v in reference.items())
        h = cfg.hidden_size
        lin = skipped.skip_linears[0]
        if init == "identity":
            assert torch.equal(lin.weight[:, :h], torch.eye(h, dtype=torch.float64))
            assert not lin.weight[:, h:].any() and not lin.bias.any()
        skipped.load_state_dict({**skipped.state_dict(), **plain.state_dict()})
        with torch.no_grad():
            same = torch.allclose(skipped(x, t, cond), plain(x, t, cond), rtol=0, atol=1e-12)
        assert same == (init == "identity")


def test_class_embed_std_sets_the_table_scale_only():
    """class_embed_std scales the N(0, std^2) class table; every other tensor is initialised as before (the
    table is drawn in the same place of the seeded sequence)."""
    cfg = replace(TINY, num_classes=999, hidden_size=64)
    torch.manual_seed(0)
    old = DiT(cfg).state_dict()
    torch.manual_seed(0)
    new = DiT(replace(cfg, class_embed_std=1.0)).state_dict()
    assert abs(old["y_embedder.weight"].std().item() - 0.02) < 0.001
    assert abs(new["y_embedder.weight"].std().item() - 1.0) < 0.05
    torch.testing.assert_close(new["y_embedder.weight"], old["y_embedder.weight"] / 0.02, rtol=1e-5, atol=1e-5)
    assert all(torch.equal(old[k], new[k]) for k in old if k != "y_embedder.weight")


def test_time_embed_init_xavier_is_the_xavier_bound():
    """"xavier": the time MLP keeps the Xavier-uniform draw of every Linear, |w| <= sqrt(6 / (fan_in + fan_out))
    with the matching variance; "dit": N(0, 0.02^2). Only the time MLP differs."""
    cfg = replace(TINY, hidden_size=128, num_heads=4, freq_dim=256)
    torch.manual_seed(0)
    dit = DiT(cfg).state_dict()
    torch.manual_seed(0)
    xav = DiT(replace(cfg, time_embed_init="xavier")).state_dict()
    for key, (fan_in, fan_out) in {"t_embedder.0.weight": (256, 128), "t_embedder.2.weight": (128, 128)}.items():
        bound = (6 / (fan_in + fan_out)) ** 0.5
        assert xav[key].abs().max() <= bound and abs(xav[key].std().item() - bound / 3 ** 0.5) < 0.03 * bound
        assert abs(dit[key].std().item() - 0.02) < 0.001
    assert all(torch.equal(dit[k], xav[k]) for k in dit if not k.startswith("t_embedder.") or "bias" in k)


def test_mix_ffn_equals_shifted_sum_reference():
    """mlp_conv (Mix-FFN): fc2(GELU(DWConv3x3(fc1(x)))) on the token grid; the depthwise conv written out as a sum
    of 9 shifted copies of the (zero-padded) grid, each times its per-channel tap."""
    cfg = replace(TINY, patch_size=2, mlp_conv=True)
    block = _randomize(DiT(cfg), std=0.3).double().blocks[0]
    g = cfg.grid_size
    x = torch.randn(2, g * g, cfg.hidden_size, dtype=torch.float64)
    u = block.mlp[0](x).transpose(1, 2).reshape(2, -1, g, g)  # (B, H, g, g)
    padded = torch.nn.functional.pad(u, (1, 1, 1, 1))
    w = block.mlp_dw.weight[:, 0]  # (H, 3, 3)
    conv = sum(w[:, a, b, None, None] * padded[:, :, a:a + g, b:b + g] for a in range(3) for b in range(3))
    conv = conv + block.mlp_dw.bias[:, None, None]
    expected = block.mlp[2](block.mlp[1](conv.flatten(2).transpose(1, 2)))
    torch.testing.assert_close(block._mlp(x), expected, rtol=1e-12, atol=1e-12)


def test_mix_ffn_starts_as_the_plain_mlp():
    """The depthwise conv is Dirac-initialised (centre tap 1): with the same other weights the network equals the
    one without it; every other weight is drawn as without it; the video DiT refuses the option."""
    cfg = replace(TINY, depth=2)
    torch.manual_seed(0)
    plain = DiT(cfg)
    torch.manual_seed(0)
    mixed = DiT(replace(cfg, mlp_conv=True))
    assert all(torch.equal(v, mixed.state_dict()[k]) for k, v in plain.state_dict().items())
    assert set(mixed.state_dict()) - set(plain.state_dict()) == {
        f"blocks.{i}.mlp_dw.{n}" for i in range(2) for n in ("weight", "bias")}
    _randomize(plain)
    mixed.load_state_dict({**mixed.state_dict(), **plain.state_dict()})
    x, t, cond = _inputs(cfg)
    with torch.no_grad():
        torch.testing.assert_close(mixed(x.float(), t.float(), cond), plain(x.float(), t.float(), cond), rtol=0,
                                   atol=1e-6)
    with pytest.raises(ConfigError, match="mlp_conv"):
        VideoDiTConfig(input_size=8, patch_size=4, hidden_size=32, num_heads=2, frames=4, mlp_conv=True)


def test_options_off_are_the_old_model_and_old_configs_load():
    """Defaults = the model before the options: same keys and, seeded, the same weights and outputs; a config
    dict without the new fields (an older checkpoint's) loads with them off."""
    data = to_dict(TINY)
    for name in ("long_skip", "skip_init", "class_embed_std", "time_embed_init", "mlp_conv"):
        data.pop(name)
    loaded = from_dict(DiTConfig, data)
    assert loaded == TINY and not loaded.long_skip and loaded.class_embed_std == 0.02
    torch.manual_seed(0)
    a = DiT(TINY)
    torch.manual_seed(0)
    b = DiT(replace(TINY, long_skip=True, depth=2))  # depth 2: no skip pair, so the very same model
    assert set(a.state_dict()) == set(b.state_dict()) and b.skip_linears is None
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert not any(k.startswith("skip_linears") for k in a.state_dict())


def test_video_dit_long_skip_runs():
    cfg = VideoDiTConfig(in_channels=1, input_size=8, patch_size=4, hidden_size=32, depth=3, num_heads=2,
                         frames=4, temporal_patch=2, long_skip=True)
    model = _randomize(VideoDiT(cfg))
    x = torch.randn(2, 1, 4, 8, 8)
    assert model(x, torch.zeros(2)).shape == x.shape and len(model.skip_linears) == 1


@pytest.mark.parametrize("field,value", [("long_skip", 1), ("class_embed_std", 0), ("class_embed_std", True),
                                         ("class_embed_std", "big"), ("skip_init", "zero"),
                                         ("time_embed_init", "normal"), ("mlp_conv", "yes")])
def test_option_validation_names_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        replace(TINY, **{field: value})
