"""The code examples of the how-to pages run: the sampler has its order, the network and the condition do what
their pages say. Each example is read from its page, so a page cannot drift from working code unnoticed."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from analytic import GaussianMixture
from noisecraft.errors import NoisecraftError

HOWTO = Path(__file__).resolve().parents[2] / "docs" / "howto"


def example(page: str, marker: str) -> dict:
    """Run the ```python block of docs/howto/<page> that contains `marker`; its namespace."""
    blocks = re.findall(r"^```python\n(.*?)^```$", (HOWTO / page).read_text(encoding="utf-8"), re.S | re.M)
    [code] = [b for b in blocks if marker in b]
    namespace: dict = {"__name__": f"docs_example_{page.replace('-', '_').removesuffix('.md')}"}
    exec(compile(code, f"docs/howto/{page}", "exec", dont_inherit=True), namespace)  # not this file's __future__
    return namespace


def test_add_sampler_example_is_second_order():
    from noisecraft.schedules.steps import exponential_sigmas

    sample_midpoint = example("add-sampler.md", "def sample_midpoint")["sample_midpoint"]
    mix = GaussianMixture([[1.0, 0.5], [-1.0, 0.0], [0.2, -1.2]], [0.4, 0.3, 0.5], [1, 2, 1.5])
    x_T = 80.0 * torch.randn(16, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    ref = mix.ode_solution(x_T, 80.0, 0.1, rtol=1e-12, atol=1e-12)

    def error(n):
        seen = {}
        sample_midpoint(mix.denoise, x_T, exponential_sigmas(0.1, 80.0, n + 1),
                        callback=lambda info: seen.__setitem__(round(info["sigma"], 9), info["x"]))
        return (seen[0.1] - ref).pow(2).mean().sqrt().item()

    assert abs(math.log2(error(16) / error(32)) - 2) <= 0.35


def test_add_network_example_builds_and_checks_its_inputs():
    ns = example("add-network.md", "class ConvNet(")
    config = ns["ConvNetConfig"](width=16, depth=2, num_classes=10).for_data((1, 8, 8))
    assert config.in_channels == 1 and config.data_shape(lambda: 8) == (1, 8, 8)
    net = ns["ConvNet"](config)
    x = torch.randn(3, 1, 8, 8)
    out = net(x, torch.zeros(3), {"class_labels": torch.tensor([0, 1, 10])})
    assert out.shape == x.shape and torch.equal(out, torch.zeros_like(x))  # zero-initialised output layer
    with pytest.raises(NoisecraftError):
        net(x, torch.zeros(3), {"text_tokens": torch.zeros(3, 2, 4)})
    with pytest.raises(Exception, match="multiple of 8"):
        ns["ConvNetConfig"](width=12)


def test_add_condition_example_feeds_concat():
    from noisecraft.conditions import CONDITIONS
    from noisecraft.pipelines import Request

    before = dict(CONDITIONS)
    try:
        LowRes = example("add-condition.md", "class LowRes(")["LowRes"]
        assert CONDITIONS["lowres"] is LowRes
        cond = LowRes(None)
        assert cond.network_fields() == {"concat_channels": 1}

        class Data:
            images = torch.rand(5, 1, 8, 8) * 2 - 1

        cond.setup(Data, None, "cpu")
        maps = cond.from_batch(torch.tensor([0, 3]))["concat"]
        assert maps.shape == (2, 1, 8, 8)  # each 4x4 cell is the mean of its pixels, blown back up
        assert torch.allclose(maps[0, 0, :4, :4], Data.images[0, 0, :4, :4].mean().expand(4, 4))
        assert torch.equal(cond.null(2)["concat"], torch.zeros(1, 1, 8, 8))
        cond.load(None, None, "cpu", (1, 8, 8))
        small = torch.rand(2, 1, 2, 2)
        request = Request(conditions={"lowres": small}, num=2)
        cond.check_request(request)
        given = cond.from_request(request, 2, 0)["concat"]
        assert given.shape == (2, 1, 8, 8) and torch.equal(given[:, :, :4, :4], small[:, :, :1, :1].expand(2, 1, 4, 4))
        with pytest.raises(NoisecraftError, match="lowres"):
            cond.check_request(Request(conditions={"lowres": torch.zeros(1, 1, 8, 8)}))
    finally:
        CONDITIONS.clear()
        CONDITIONS.update(before)
