"""The generic spatial input cond["concat"]: channels concatenated to x. On the U-Net (any dims) and the DiT it
equals a network whose first layer reads [x, c] (its input widened by C_cat, the weights copied), the zero map
adds nothing, wrong shapes raise errors naming the key and the expected shape, and the MLP refuses it."""

import re
from dataclasses import replace

import pytest
import torch

from noisecraft.config import from_dict
from noisecraft.errors import ConfigError, NoisecraftError
from noisecraft.models.dit import DIT_PRESETS, DiT
from noisecraft.models.mlp import MLPConfig, MLPDenoiserNet
from noisecraft.models.unet import UNET_PRESETS, UNet
from noisecraft.runconfig import RunConfig

C_CAT = 3
UNET = replace(UNET_PRESETS["tiny"], in_channels=2)
DIT = replace(DIT_PRESETS["tiny"], in_channels=2, input_size=8)


def _randomize(model, seed=0, std=0.1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return model


def _concat_and_wide(kind: str, dims: int = 2):
    """(network with concat_channels = C_CAT, the same network with in_channels + C_CAT and its first layer's
    weight [W_x, W_c]), in float64."""
    if kind == "unet":
        cfg = replace(UNET, dims=dims)
        net = _randomize(UNet(replace(cfg, concat_channels=C_CAT)).double())
        wide = UNet(replace(cfg, in_channels=cfg.in_channels + C_CAT, out_channels=cfg.in_channels)).double()
        first, extra = "conv_in.weight", "concat_in.weight"
    else:
        net = _randomize(DiT(replace(DIT, concat_channels=C_CAT)).double())
        wide = DiT(replace(DIT, in_channels=DIT.in_channels + C_CAT, out_channels=DIT.in_channels)).double()
        first, extra = "x_embedder.weight", "concat_in.weight"
    state = dict(net.state_dict())
    state[first] = torch.cat([state[first], state.pop(extra)], dim=1)  # (C_0, C + C_cat, k...)
    wide.load_state_dict(state)
    return net, wide


def _inputs(batch: int, channels: int, spatial: tuple, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, *spatial, generator=g, dtype=torch.float64)
    c = torch.randn(batch, C_CAT, *spatial, generator=g, dtype=torch.float64)
    return x, c, torch.rand(batch, generator=g, dtype=torch.float64) * 999


@pytest.mark.parametrize("kind, dims", [("unet", 1), ("unet", 2), ("unet", 3), ("dit", 2)])
def test_concat_equals_the_network_that_reads_x_and_c_concatenated(kind, dims):
    """conv_in(x) + concat_in(c) = conv([x, c]) with weight [W_x, W_c] (U-Net); patch-embed(x) + W_c(c) =
    patch-embed([x, c]) (DiT): the whole networks agree to float64 rounding."""
    net, wide = _concat_and_wide(kind, dims)
    x, c, t = _inputs(2, 2, (8,) * dims)
    out = net(x, t, {"concat": c})
    torch.testing.assert_close(out, wide(torch.cat([x, c], 1), t), rtol=0, atol=1e-12)
    assert (out - net(x, t)).abs().max() > 1e-6  # the map does reach the output


@pytest.mark.parametrize("kind", ["unet", "dit"])
def test_zero_map_adds_nothing(kind):
    net, _ = _concat_and_wide(kind)
    x, c, t = _inputs(2, 2, (8, 8))
    assert torch.equal(net(x, t, {"concat": torch.zeros_like(c)}), net(x, t))


@pytest.mark.parametrize("kind", ["unet", "dit"])
def test_concat_shape_errors_name_the_key_and_the_expected_shape(kind):
    net, _ = _concat_and_wide(kind)
    x, c, t = _inputs(2, 2, (8, 8))
    expected = r"cond\['concat'\]: expected a float tensor of shape \(2, 3, 8, 8\) \(the input's spatial size\)"
    for bad in (c[:, :2], c[..., :4, :4], c[:1], c.long(), c[:, :, :, :4]):
        with pytest.raises(NoisecraftError, match=expected + ", got " + re.escape(f"{bad.dtype} {tuple(bad.shape)}")):
            net(x, t, {"concat": bad})
    plain = (UNet(UNET) if kind == "unet" else DiT(DIT)).double()
    with pytest.raises(NoisecraftError, match=r"cond\['concat'\] given but the network is configured without it "
                                              r"\(concat_channels is 0\)"):
        plain(x, t, {"concat": c})


@pytest.mark.parametrize("kind", ["unet", "dit"])
def test_concat_input_with_no_channels_builds_the_same_parameters(kind):
    """concat_channels = 0 is the network without the input: same parameter names and values for a seed."""
    build, cfg = (UNet, UNET) if kind == "unet" else (DiT, DIT)
    torch.manual_seed(0)
    a = build(cfg).state_dict()
    torch.manual_seed(0)
    b = build(replace(cfg, concat_channels=0)).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(0)
    assert set(build(replace(cfg, concat_channels=2)).state_dict()) - set(a) == {"concat_in.weight"}


def test_mlp_takes_no_concat_input():
    net = MLPDenoiserNet(MLPConfig(data_dim=2))
    with pytest.raises(NoisecraftError, match=r"cond\['concat'\] given, but the MLP takes no channels .*unet, dit"):
        net(torch.zeros(3, 2), torch.zeros(3), {"concat": torch.zeros(3, 1, 4, 4)})
    with pytest.raises(ConfigError, match=r"config.network: unknown field\(s\) concat_channels for model 'mlp' "
                                          r"\(MLPConfig\); allowed: data_dim, dropout"):
        from_dict(RunConfig, {"model": "mlp", "network": {"concat_channels": 1}}, "config")
