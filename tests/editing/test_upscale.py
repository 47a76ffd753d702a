"""Super-resolution: the SR3 low-res condition with noise conditioning augmentation (noisecraft.conditions.low_res),
`upscale` / `cascade` (noisecraft.editing.upscale) and `noisecraft upscale`, on tiny glyph runs."""

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from noisecraft.checkpoint import load_checkpoint
from noisecraft.cli.main import main
from noisecraft.conditions import conditions_for
from noisecraft.conditions.low_res import alpha_bar, augment, downsample, level_embedding, upsample
from noisecraft.editing.upscale import cascade, check_low_res, upscale
from noisecraft.errors import ConfigError, NoisecraftError
from noisecraft.pipelines import Request, conditioned, generate, load
from noisecraft.presets import get_preset
from noisecraft.runconfig import DataConfig
from noisecraft.training.trainer import Trainer


def sr_config(steps: int, *, aug_max: float = 0.3, classes: bool = True):
    """8x8 -> 16x16 on glyphs, a tiny U-Net; class-conditional (62 characters) so guidance has a condition."""
    c = get_preset("glyphs-sr-32")
    net = replace(c.network, base_channels=8, channel_mult=(1, 2), attention_levels=(), head_channels=8,
                  norm_groups=4, num_classes=62 if classes else 0)
    return replace(c, network=net, data=DataConfig(dataset="glyphs", split="train", resolution=16, limit=64),
                   conditioning=replace(c.conditioning, low_res_aug_max=aug_max, cond_dropout=0.25 if classes else 0),
                   train=replace(c.train, batch_size=8, steps=steps, minutes=None, checkpoint_every=2, threads=1),
                   sample=replace(c.sample, steps=2))


@pytest.fixture(scope="module")
def sr_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sr") / "run"
    Trainer(sr_config(2), out, progress=False).run()
    return out


def condition(config, device="cpu"):
    c = conditions_for(config).get("low-res")
    c.device, c.size, c.input_size = torch.device(device), (16, 16), (16, 16)
    return c


def test_network_fields_and_config_checks():
    assert conditions_for(sr_config(1, classes=False)).network_fields() == {"concat_channels": 1, "vector_dim": 32}
    c = get_preset("glyphs-sr-32").conditioning
    for field, value in (("low_res_factor", 1), ("low_res_factor", 2.0), ("low_res_aug_max", 1.5),
                         ("low_res_aug_sample", -0.1)):
        with pytest.raises(ConfigError, match=f"conditioning.{field}"):
            replace(c, **{field: value})


def test_condition_is_the_exact_down_up_sampling_of_x0():
    x0 = torch.rand(4, 1, 16, 16) * 2 - 1
    out = condition(sr_config(1, aug_max=0.0)).from_images(torch.arange(4), x0, torch.Generator().manual_seed(0))
    low = x0.reshape(4, 1, 8, 2, 8, 2).mean((3, 5))  # the mean of each 2x2 block
    assert torch.allclose(downsample(x0, 2), low, atol=1e-6)
    want = F.interpolate(low, size=(16, 16), mode="bicubic", align_corners=False)
    assert torch.allclose(out["concat"], want, atol=1e-6)
    assert torch.equal(out["vector"], level_embedding(torch.zeros(4)))


def test_augmentation_is_eq_of_cascaded_diffusion_and_draws_only_from_the_generator():
    c = condition(sr_config(1, aug_max=0.5))
    x0 = torch.rand(6, 1, 16, 16) * 2 - 1
    a = c.from_images(torch.arange(6), x0, torch.Generator().manual_seed(7))
    b = c.from_images(torch.arange(6), x0, torch.Generator().manual_seed(7))
    assert torch.equal(a["concat"], b["concat"]) and torch.equal(a["vector"], b["vector"])
    other = c.from_images(torch.arange(6), x0, torch.Generator().manual_seed(8))
    assert not torch.allclose(a["concat"], other["concat"])
    g = torch.Generator().manual_seed(7)  # levels first, then the noise (the condition's documented order)
    level = torch.rand(6, generator=g) * 0.5
    noise = torch.randn(6, 1, 8, 8, generator=g)
    ab = torch.cos(level * math.pi / 2) ** 2
    z = ab.sqrt()[:, None, None, None] * downsample(x0, 2) + (1 - ab).sqrt()[:, None, None, None] * noise
    assert torch.allclose(a["concat"], upsample(z, 2), atol=1e-5)
    assert torch.allclose(a["vector"], level_embedding(level))
    assert level.max() <= 0.5 and torch.allclose(alpha_bar(torch.tensor([0.0, 1.0])), torch.tensor([1.0, 0.0]),
                                                 atol=1e-7)
    # level 1 is pure noise, level 0 the clean image
    assert torch.allclose(augment(x0, torch.ones(6), noise.repeat(1, 1, 2, 2)), noise.repeat(1, 1, 2, 2), atol=1e-6)
    assert torch.equal(augment(x0, torch.zeros(6), noise.repeat(1, 1, 2, 2)), x0)


def test_level_embedding():
    e = level_embedding(torch.tensor([0.0, 0.05, 0.3]))
    assert e.shape == (3, 32)
    assert torch.equal(e[0], torch.cat([torch.ones(16), torch.zeros(16)]))
    assert torch.allclose(e.pow(2).reshape(3, 2, 16).sum(1), torch.ones(3, 16), atol=1e-5)  # cos^2 + sin^2 = 1
    half = 16  # the first frequency is 1 (1000 s radians), the last 10000^(-15/16)
    assert torch.allclose(e[1, half], torch.sin(torch.tensor(50.0)), atol=1e-5)
    assert (e[1] - e[2]).abs().max() > 0.1


def test_sampling_level_zero_is_the_clean_upsampled_image_and_noise_is_per_image():
    c = condition(sr_config(1))
    low = torch.rand(3, 1, 8, 8) * 2 - 1
    clean = c.from_request(Request(conditions={"low-res": {"image": low, "level": 0.0}}, num=3), 3, 5)
    assert torch.allclose(clean["concat"], upsample(low, 2)) and torch.equal(clean["vector"][0], level_embedding(
        torch.zeros(1))[0])
    noisy = c.from_request(Request(conditions={"low-res": {"image": low, "level": 0.2}}, num=3), 3, 5)
    assert not torch.allclose(noisy["concat"], clean["concat"])
    # image i's augmentation noise comes from seed + i: images 1, 2 of seed 5 are images 0, 1 of seed 6
    shifted = c.from_request(Request(conditions={"low-res": {"image": low[1:], "level": 0.2}}, num=2), 2, 6)
    assert torch.allclose(shifted["concat"], noisy["concat"][1:])


def test_trains_and_resumes_bit_identically(tmp_path):
    Trainer(sr_config(2), tmp_path / "a", progress=False).run()
    Trainer(sr_config(4), tmp_path / "a", resume=True, progress=False).run()
    Trainer(sr_config(4), tmp_path / "b", progress=False).run()
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert any("concat_in" in k for k in a.model)
    for k in a.model:
        assert torch.equal(a.model[k], b.model[k]), k


def test_upscale_shapes_seeds_guidance_and_samplers(sr_run):
    run = load(sr_run)
    low = torch.rand(3, 1, 8, 8) * 2 - 1
    out = upscale(run, low, Request(num=3, seed=2, batch_size=2), aug_level=0.0)
    assert out.images.shape == (3, 1, 16, 16) and out.seeds == [2, 3, 4] and torch.isfinite(out.images).all()
    one = upscale(run, low[1:2], Request(num=1, seed=3), aug_level=0.0)  # image i from seed + i, any batch size
    assert torch.allclose(one.images[0], out.images[1], atol=1e-5)
    # the low-res image reaches the network
    assert not torch.allclose(upscale(run, -low, Request(num=3, seed=2), aug_level=0.0).images, out.images)
    for sampler in ("euler", "dpmpp_2m", "ddpm"):
        assert torch.isfinite(upscale(run, low, Request(num=3, sampler=sampler, steps=2)).images).all()
    # guidance by class keeps the low-res image in both branches; scale 1 is the conditional model
    req = Request(num=3, class_ids=(0, 1, 2), seed=2, batch_size=2)
    cond = upscale(run, low, req, aug_level=0.1).images
    assert torch.allclose(upscale(run, low, replace(req, guidance=1.0), aug_level=0.1).images, cond, atol=1e-5)
    guided = upscale(run, low, replace(req, guidance=3.0), aug_level=0.1).images
    assert torch.isfinite(guided).all() and not torch.allclose(guided, cond)
    _, c = conditioned(run, Request(num=2, conditions={"low-res": {"image": low[:2], "level": 0.0}}))
    assert torch.allclose(c["concat"], upsample(low[:2], 2))


def test_bad_inputs_are_clear_errors(sr_run):
    run = load(sr_run)
    with pytest.raises(NoisecraftError, match=r"upscales 1-channel 8x8 images .* by 2 to 16x16"):
        upscale(run, torch.zeros(1, 3, 8, 8))
    with pytest.raises(NoisecraftError, match="1-channel 8x8"):
        upscale(run, torch.zeros(1, 1, 16, 16))
    with pytest.raises(NoisecraftError, match=r"in \[-1, 1\]"):
        upscale(run, torch.full((1, 8, 8), 3.0))
    with pytest.raises(NoisecraftError, match="2 low-resolution images for 3 outputs"):
        check_low_res(run, torch.zeros(2, 1, 8, 8), 3)
    with pytest.raises(NoisecraftError, match=r"aug_level must be a number in \[0, 1\]"):
        upscale(run, torch.zeros(1, 8, 8), aug_level=2)
    with pytest.raises(NoisecraftError, match=r"low-res: expected a \(1 or num, 1, 8, 8\)"):
        generate(run, Request(conditions={"low-res": torch.zeros(1, 1, 4, 4)}))
    assert main(["upscale", "--checkpoint", str(sr_run), "--image", "nope.png", "--out", "x.png"]) == 2


def test_cli_writes_a_png_and_cascade_shapes(sr_run, tmp_path):
    from noisecraft.data.images import load_image
    from noisecraft.viz import save_png, to_uint8

    low = torch.rand(1, 1, 8, 8) * 2 - 1
    save_png(to_uint8(low)[0], tmp_path / "low.png")
    out = tmp_path / "up.png"
    assert main(["upscale", "--checkpoint", str(sr_run), "--image", str(tmp_path / "low.png"), "--steps", "2",
                 "--sampler", "euler", "--aug-level", "0", "--out", str(out)]) == 0
    assert out.is_file()
    assert main(["upscale", "--checkpoint", str(sr_run), "--image", str(tmp_path / "low.png"), "--steps", "2",
                 "--out", str(tmp_path / "each")]) == 0
    (png,) = (tmp_path / "each").glob("*.png")
    assert load_image(png).shape == (1, 16, 16)  # the upscaled image at its own size
    bad = tmp_path / "big.png"
    save_png(to_uint8(torch.zeros(1, 1, 16, 16))[0], bad)
    assert main(["upscale", "--checkpoint", str(sr_run), "--image", str(bad), "--out", str(out)]) == 2

    data = DataConfig(dataset="glyphs", split="train", resolution=8, limit=32)
    base_cfg = replace(get_preset("glyphs-16"), data=data,
                       network=replace(get_preset("glyphs-16").network, base_channels=8, attention_levels=(),
                                       head_channels=8, norm_groups=4),
                       train=replace(get_preset("glyphs-16").train, batch_size=8, steps=1, minutes=None,
                                     checkpoint_every=1, threads=1),
                       sample=replace(get_preset("glyphs-16").sample, steps=2))
    Trainer(base_cfg, tmp_path / "base", progress=False).run()
    base, run = load(tmp_path / "base"), load(sr_run)
    with pytest.raises(NoisecraftError, match="not a super-resolution model"):
        upscale(base, torch.zeros(1, 4, 4))
    final, stages = cascade(base, [run], Request(num=2, seed=4), aug_levels=[0.05])
    assert [tuple(s.images.shape) for s in stages] == [(2, 1, 8, 8), (2, 1, 16, 16)] and final is stages[-1]
    assert final.seeds == [4, 5] and stages[0].seeds == [4, 5]
    with pytest.raises(NoisecraftError, match=r"upscales \(1, 8, 8\) images; the previous stage gives"):
        cascade(base, [run, run], Request(num=1, steps=1))
    with pytest.raises(NoisecraftError, match="needs condition 'low-res'"):  # an SR run is no base
        cascade(run, [run], Request(num=1, steps=1))
    assert main(["upscale", "--checkpoint", str(sr_run), "--base", str(tmp_path / "base"), "--num", "2",
                 "--steps", "2", "--out", str(tmp_path / "cascade")]) == 0
    assert len(list((tmp_path / "cascade").glob("*.png"))) == 2


def test_the_low_res_image_is_required_and_the_preview_shows_the_datasets_copies(sr_run):
    from noisecraft.pipelines.preview import preview_request
    from noisecraft.training.batches import load_data

    run = load(sr_run)
    with pytest.raises(NoisecraftError, match="needs condition 'low-res'.*noisecraft upscale"):
        generate(run, Request(num=2, steps=2))  # no silent zero image
    data = load_data(run.config)
    request = preview_request(run.config, data, 4, run.conditions)
    value = request.conditions["low-res"]
    assert torch.equal(value["image"], downsample(data.images[:4].float(), 2)) and value["level"] == 0.05
    assert generate(run, replace(request, steps=2)).images.shape == (4, 1, 16, 16)
