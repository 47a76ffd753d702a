"""Structure control (ControlNet, Zhang et al. 2023; noisecraft.models.controlnet, noisecraft.conditions.control):
the zero-convolution identity, training on a frozen base (weights unchanged, exact resume), sampling with every
kind of sampler and classifier-free guidance, the map types, the CLI and the errors."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from noisecraft.checkpoint import load_checkpoint
from noisecraft.cli.main import main
from noisecraft.conditions.control import Control, canny_map, control_map, scribble_map
from noisecraft.errors import ConfigError, NoisecraftError
from noisecraft.models.controlnet import ControlledUNet, ControlNet
from noisecraft.models.unet import UNET_PRESETS, UNet
from noisecraft.pipelines import Request, generate, load
from noisecraft.presets import get_preset
from noisecraft.training.trainer import Trainer

TINY = dict(base_channels=8, channel_mult=(1, 2), attention_levels=(1,), head_channels=8, norm_groups=4)


def randomised(net: torch.nn.Module, seed: int = 0, std: float = 0.2) -> torch.nn.Module:
    """Every parameter drawn at random (a fresh U-Net outputs exactly 0: its last layers are zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return net


def tiny_unet(**kw) -> UNet:
    torch.manual_seed(0)
    return randomised(UNet(replace(UNET_PRESETS["tiny"], num_classes=3, **kw)))


def inputs(B=3, S=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 1, S, S, generator=g)
    c_noise = torch.rand(B, generator=g)
    maps = (torch.rand(B, 1, S, S, generator=g) > 0.7).float()
    return x, c_noise, maps, {"class_labels": torch.tensor([0, 2, 3])[:B]}


# ------------------------------------------------------------------------------------------------- the network
def test_zero_convolutions_make_the_controlled_model_the_base_bit_for_bit():
    base = tiny_unet()
    net = ControlledUNet(base, ControlNet(base, 1))
    x, c, maps, cond = inputs()
    ref = base(x, c, cond)
    scale = torch.tensor([1.0, 0.5, 2.0])
    out = net(x, c, {**cond, "control": maps, "control_scale": scale})  # the ControlNet branch runs
    assert torch.equal(out, ref)
    assert torch.equal(net(x, c, cond), ref)  # no control given: the base
    # the copy starts as the base's encoder (Theta_c <- Theta)
    for name in net.control.copied_names():
        for (k, a), b in zip(getattr(net.control, name).state_dict().items(),
                             getattr(base, name).state_dict().values()):
            assert torch.equal(a, b), (name, k)
    # base's state-dict keys are unchanged, under base.
    assert set(net.state_dict()) >= {f"base.{k}" for k in base.state_dict()}


def test_scale_zero_is_the_base_and_the_control_reaches_every_skip_and_the_middle():
    base = tiny_unet()
    ctrl = randomised(ControlNet(base, 1), seed=5, std=0.1)
    net = ControlledUNet(base, ctrl)
    x, c, maps, cond = inputs()
    ref = base(x, c, cond)
    assert torch.equal(net(x, c, {**cond, "control": maps, "control_scale": torch.zeros(1)}), ref)
    out = net(x, c, {**cond, "control": maps, "control_scale": torch.ones(1)})
    assert not torch.allclose(out, ref)
    other = net(x, c, {**cond, "control": 1 - maps, "control_scale": torch.ones(1)})
    assert not torch.allclose(out, other)  # the map matters
    # per-sample scale: sample 0 at scale 0 is the base's, sample 1 not
    mixed = net(x, c, {**cond, "control": maps, "control_scale": torch.tensor([0.0, 1.0, 1.0])})
    assert torch.equal(mixed[0], ref[0]) and torch.allclose(mixed[1:], out[1:], atol=1e-6)
    # every zero conv carries a residual: zeroing one changes the output
    for zero in [*ctrl.zero_convs, ctrl.zero_mid]:
        saved = [p.detach().clone() for p in zero.parameters()]
        with torch.no_grad():
            for p in zero.parameters():
                p.zero_()
        assert not torch.allclose(net(x, c, {**cond, "control": maps, "control_scale": torch.ones(1)}), out)
        with torch.no_grad():
            for p, s in zip(zero.parameters(), saved):
                p.copy_(s)


def test_a_fresh_controlnet_gets_gradients_through_its_zero_convolutions_only_at_first():
    base = tiny_unet()
    net = ControlledUNet(base.requires_grad_(False), ControlNet(base, 1))
    x, c, maps, cond = inputs()
    net(x, c, {**cond, "control": maps, "control_scale": torch.ones(1)}).square().sum().backward()
    zeros = [*net.control.zero_convs, net.control.zero_mid]
    assert all(z.weight.grad is not None and z.weight.grad.abs().sum() > 0 for z in zeros)
    # the copy's own weights get none yet (dy/dTheta_c passes through Z = 0), as in the paper's Sec. 3.1
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in net.control.down.parameters())
    assert all(p.grad is None for p in base.parameters())


def test_bad_control_inputs_name_the_expected_shape():
    base = tiny_unet()
    net = ControlledUNet(base, ControlNet(base, 1))
    x, c, maps, cond = inputs()
    with pytest.raises(NoisecraftError, match=r"\(3 or 1, 1, 8, 8\)"):
        net(x, c, {"control": maps[:, :, :4], "control_scale": torch.ones(1)})
    with pytest.raises(NoisecraftError, match="control_scale"):
        net(x, c, {"control": maps, "control_scale": torch.ones(2)})
    with pytest.raises(ConfigError, match="unet"):
        ControlNet(torch.nn.Linear(2, 2))


# ---------------------------------------------------------------------------------------------------- the maps
def test_canny_finds_a_squares_outline_and_the_scribble_its_centre_line():
    img = -torch.ones(1, 1, 24, 24)
    img[..., 6:18, 6:18] = 1
    edges = canny_map(img)[0, 0]
    assert edges.shape == (24, 24) and set(edges.unique().tolist()) <= {0.0, 1.0}
    inside, outside = edges[9:15, 9:15], edges[:3]
    assert edges[6:18, 5:8].sum() >= 8 and inside.sum() == 0 and outside.sum() == 0
    bar = -torch.ones(1, 3, 24, 24)
    bar[..., 4:20, 9:15] = 1  # a vertical bar 6 px wide, RGB
    skel = scribble_map(bar)[0, 0]
    cols = skel[6:18].nonzero()[:, 1]
    assert skel.sum() >= 8 and cols.min() >= 10 and cols.max() <= 13  # one thin line inside the bar
    assert scribble_map(torch.zeros(1, 1, 8, 8)).sum() == 0  # a flat image has no strokes
    assert torch.equal(control_map("canny", img), canny_map(img))
    with pytest.raises(ConfigError, match="canny, scribble"):
        control_map("hed", img)


# ---------------------------------------------------------------------------- training on a frozen base, sampling
def base_config(steps: int, **network):
    c = get_preset("digits")
    return replace(c, network=replace(c.network, **{**TINY, **network}), data=replace(c.data, limit=64),
                   conditioning=replace(c.conditioning, cond_dropout=0.2),
                   train=replace(c.train, batch_size=8, steps=steps, minutes=None, checkpoint_every=2, threads=1,
                                 warmup_steps=1, lr=2e-3))


def control_config(base_dir, steps: int, kind="canny"):
    c = base_config(steps, num_classes=10)
    return replace(c, conditioning=replace(c.conditioning, conditions=("control",), control_base=str(base_dir),
                                           control_map=kind))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("control")
    Trainer(base_config(4, num_classes=10), root / "base", progress=False).run()
    Trainer(control_config(root / "base", 2), root / "a", progress=False).run()
    Trainer(control_config(root / "base", 4), root / "a", resume=True, progress=False).run()
    Trainer(control_config(root / "base", 4), root / "b", progress=False).run()
    return root


def test_training_leaves_the_base_unchanged_and_resumes_bit_identically(runs):
    base = load_checkpoint(runs / "base")
    a, b = load_checkpoint(runs / "a"), load_checkpoint(runs / "b")
    for k, v in base.ema.items():  # the base's EMA weights, frozen: raw weights and their EMA unchanged
        assert torch.equal(a.model[f"base.{k}"], v) and torch.equal(a.ema[f"base.{k}"], v), k
    assert a.model.keys() == b.model.keys()
    for k in a.model:  # the interrupted run is the uninterrupted one, bit for bit
        assert torch.equal(a.model[k], b.model[k]) and torch.equal(a.ema[k], b.ema[k]), k
    # the ControlNet did train: its zero convolutions left zero, and only it has optimiser state
    assert any(a.model[k].abs().sum() > 0 for k in a.model if k.startswith("control.zero_convs"))
    n_trainable = sum(v.numel() for k, v in a.model.items() if k.startswith("control."))
    n_state = sum(v.numel() for k, v in a.optim.items() if k.endswith(".exp_avg"))
    assert n_state == n_trainable


@pytest.mark.parametrize("sampler", ["euler", "heun", "dpmpp_2m", "euler_a"])
def test_every_sampler_with_control_scale_zero_is_the_base_and_scale_one_follows_the_map(runs, sampler):
    base, ctrl = load(runs / "base"), load(runs / "a")
    maps = canny_map(torch.rand(2, 1, 8, 8) * 2 - 1)
    req = Request(class_ids=(1, 7), sampler=sampler, steps=3, seed=4, num=2)
    ref = generate(base, req).images
    assert torch.equal(generate(ctrl, replace(req, conditions={"control": Control(maps, 0.0)})).images, ref)
    assert torch.equal(generate(ctrl, req).images, ref)  # no map given: the null control is the base
    out = generate(ctrl, replace(req, conditions={"control": Control(maps, 1.0)})).images
    assert torch.isfinite(out).all() and not torch.allclose(out, ref)


def test_guidance_composes_with_control_on_a_class_conditional_base(runs):
    ctrl = load(runs / "a")
    one_map = canny_map(torch.rand(1, 1, 8, 8) * 2 - 1)
    req = Request(class_ids=(3,), conditions={"control": Control(one_map, 0.8)}, steps=3, seed=2, num=3,
                  batch_size=2)
    plain = generate(ctrl, req).images
    assert torch.equal(generate(ctrl, replace(req, guidance=1.0)).images, plain)  # scale 1 = the conditional model
    guided = generate(ctrl, replace(req, guidance=3.0)).images
    assert torch.isfinite(guided).all() and not torch.allclose(guided, plain)
    # the unconditional side gets the same map: guidance with a map equals the explicit CFG formula
    from noisecraft.pipelines import conditioned

    denoiser, cond = conditioned(ctrl, replace(req, guidance=3.0))
    x, sigma = torch.randn(3, 1, 8, 8), torch.full((3,), 2.0)
    d_c = ctrl.denoiser(x, sigma, cond)
    d_u = ctrl.denoiser(x, sigma, {**cond, "class_labels": torch.full((3,), 10)})
    assert torch.allclose(denoiser(x, sigma, cond), d_u + 3.0 * (d_c - d_u), atol=1e-5)
    # one map per image with guidance, all in one batch
    per_image = canny_map(torch.rand(3, 1, 8, 8) * 2 - 1)
    out = generate(ctrl, replace(req, guidance=2.0, batch_size=3, conditions={"control": per_image})).images
    assert out.shape == (3, 1, 8, 8)
    with pytest.raises(NoisecraftError, match="batch_size >= num"):
        generate(ctrl, replace(req, guidance=2.0, conditions={"control": per_image}))


def test_the_scribble_map_trains_too(runs, tmp_path):
    Trainer(control_config(runs / "base", 1, kind="scribble"), tmp_path / "s", progress=False).run()
    run = load(tmp_path / "s")
    assert run.conditions.get("control").kind == "scribble"
    m = scribble_map(torch.rand(1, 1, 8, 8) * 2 - 1)
    assert generate(run, Request(class_ids=(2,), conditions={"control": m}, steps=2)).images.shape == (1, 1, 8, 8)


# ------------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("value, message", [
    (torch.zeros(1, 1, 4, 4), r"image size 8x8: a tensor of shape \(8, 8\)"),
    (torch.zeros(2, 1, 8, 8), r"\(1 or num, 1, 8, 8\)"),
    (torch.full((8, 8), 2.0), r"in \[0, 1\]"),
    ("edges.png", "got str"),
    (Control(torch.zeros(8, 8), -1.0), "finite number >= 0"),
    (Control(torch.zeros(8, 8), float("nan")), "finite number >= 0"),
    (Control(torch.zeros(8, 8), True), "finite number >= 0"),
])
def test_bad_requests_name_the_expected_values(runs, value, message):
    with pytest.raises(NoisecraftError, match=message):
        generate(load(runs / "a"), Request(conditions={"control": value}, num=3, steps=2))


def test_a_control_map_for_a_model_without_control_names_what_it_takes(runs):
    with pytest.raises(NoisecraftError, match="unknown condition 'control'; allowed: class"):
        generate(load(runs / "base"), Request(conditions={"control": torch.zeros(8, 8)}))


def test_bad_base_runs_are_config_errors_naming_the_field(runs, tmp_path):
    c = control_config(runs / "base", 1)
    with pytest.raises(ConfigError, match="conditioning.control_base=RUN_DIR"):
        Trainer(replace(c, conditioning=replace(c.conditioning, control_base="")), tmp_path / "x", progress=False)
    with pytest.raises(ConfigError, match="not a readable base run"):
        Trainer(replace(c, conditioning=replace(c.conditioning, control_base=str(tmp_path / "none"))),
                tmp_path / "x", progress=False)
    wider = replace(c, network=replace(c.network, base_channels=16, norm_groups=8, head_channels=16))
    with pytest.raises(ConfigError, match="network.base_channels=8 \\(this run: 16\\)"):
        Trainer(wider, tmp_path / "x", progress=False)
    with pytest.raises(ConfigError, match="itself a ControlNet run"):
        Trainer(replace(c, conditioning=replace(c.conditioning, control_base=str(runs / "a"))), tmp_path / "x",
                progress=False)
    with pytest.raises(ConfigError, match="control_map: must be one of canny, scribble"):
        replace(c.conditioning, control_map="depth")


# ---------------------------------------------------------------------------------------------------------- CLI
def test_cli_samples_with_a_control_map_and_refuses_one_for_a_model_without_control(runs, tmp_path, capsys):
    from PIL import Image

    from noisecraft.data.images import to_uint8_image

    edges = canny_map(load(runs / "base").to_images(torch.rand(1, 1, 8, 8) * 2 - 1))
    png = tmp_path / "edges.png"
    Image.fromarray(to_uint8_image(edges[0] * 2 - 1)).save(png)
    out = tmp_path / "o.png"
    assert main(["sample", "--checkpoint", str(runs / "a"), "--control", str(png), "--control-scale", "0.8",
                 "--class", "4", "--num", "2", "--steps", "2", "--out", str(out)]) == 0
    assert out.exists() and np.asarray(Image.open(out)).size > 0
    capsys.readouterr()
    for args, message in ((["--checkpoint", str(runs / "base"), "--control", str(png)], "has no structure control"),
                          (["--checkpoint", str(runs / "a"), "--control", str(png), "--control-scale", "-1"],
                           "finite number >= 0"),
                          (["--checkpoint", str(runs / "a"), "--control-scale", "0.5"], "without --control")):
        code = main(["sample", *args, "--steps", "2", "--num", "1", "--out", str(tmp_path / "x.png")])
        err = capsys.readouterr().err
        assert code == 2 and message in err and err.count("\n") == 1, err


def test_the_preview_shows_the_datasets_maps(runs):
    from noisecraft.pipelines.preview import preview_request
    from noisecraft.training.batches import load_data

    run = load(runs / "a")
    data = load_data(run.config)
    request = preview_request(run.config, data, 3, run.conditions)
    value = request.conditions["control"]
    assert torch.equal(value.map, canny_map(data.images[:3])) and value.scale is None
    assert request.class_ids == (0, 1, 2)
    assert generate(run, replace(request, steps=2)).images.shape == (3, 1, 8, 8)
