"""Mask-conditioned inpainting (noisecraft.conditions.inpaint): the training masks, the network input, dropout that
never drops the mask, guidance that keeps it in both branches, exact resume, and the known pixels kept exactly."""

from dataclasses import replace

import pytest
import torch

from noisecraft.checkpoint import load_checkpoint
from noisecraft.cli.main import main
from noisecraft.conditions import conditions_for
from noisecraft.conditions.inpaint import P_FULL, inpaint_input, random_masks
from noisecraft.editing.inpaint import inpaint, outpaint
from noisecraft.errors import NoisecraftError
from noisecraft.pipelines import Request, conditioned, load
from noisecraft.presets import get_preset
from noisecraft.training.trainer import Trainer
from noisecraft.viz import save_png, to_uint8


def config(steps: int, classes: bool = False):
    c = get_preset("mnist-class-inpaint" if classes else "mnist-inpaint")
    c = replace(c, network=replace(c.network, base_channels=8, channel_mult=(1, 2), attention_levels=(1,),
                                   head_channels=8, norm_groups=4))
    return replace(c, data=replace(c.data, limit=64),
                   train=replace(c.train, batch_size=8, steps=steps, minutes=None, checkpoint_every=2, threads=1))


def test_random_masks_are_binary_reproducible_and_varied():
    a = random_masks(400, 28, 28, torch.Generator().manual_seed(3))
    b = random_masks(400, 28, 28, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (400, 1, 28, 28)
    assert ((a == 0) | (a == 1)).all()
    full = (a.flatten(1).mean(1) == 1).float().mean()
    assert abs(float(full) - P_FULL) < 0.07  # 1/4 masked everywhere (a binomial of 400: std 0.022)
    partial = a.flatten(1).mean(1)
    assert ((partial > 0) & (partial < 1)).float().mean() > 0.6  # the others regenerate a part
    distinct = {tuple(m.flatten().tolist()) for m in a[partial < 1]}  # rectangles and strokes differ; 4 halves
    assert len(distinct) > 0.55 * int((partial < 1).sum())


def test_network_input_is_mask_then_masked_image():
    y = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    m = (torch.rand(1, 1, 4, 4) > 0.5).double()
    out = inpaint_input(y, m)
    assert out.shape == (2, 4, 4, 4)
    assert torch.equal(out[:, :1], m.expand(2, 1, 4, 4)) and torch.equal(out[:, 1:], (1 - m) * y)


def test_network_reads_one_plus_channels_and_dropout_never_drops_the_mask(tmp_path):
    c = config(1, classes=True)
    conds = conditions_for(c)
    assert conds.network_fields() == {"num_classes": 10, "concat_channels": 2}
    t = Trainer(replace(c, conditioning=replace(c.conditioning, cond_dropout=0.9)), tmp_path, progress=False)
    gen = torch.Generator().manual_seed(11)
    x0, cond = t.batch(0, gen)
    assert (cond["class_labels"] == 10).float().mean() > 0.5  # the class is dropped ...
    m = cond["concat"][:, :1]
    assert torch.equal(cond["concat"][:, 1:], (1 - m) * x0)  # ... the mask and the masked image never are
    assert (m.flatten(1).mean(1) < 1).any()


def test_trains_resumes_exactly(tmp_path):
    Trainer(config(2), tmp_path / "a", progress=False).run()
    Trainer(config(4), tmp_path / "a", resume=True, progress=False).run()
    Trainer(config(4), tmp_path / "b", progress=False).run()
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert a.config["network"]["concat_channels"] == 2
    assert all(torch.equal(a.model[k], b.model[k]) for k in a.model)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = {}
    for classes in (False, True):
        d = tmp_path_factory.mktemp("class" if classes else "plain")
        Trainer(config(2, classes), d, progress=False).run()
        out[classes] = load(d)
    return out


def digit(run) -> torch.Tensor:
    from noisecraft.data import load_dataset

    return load_dataset("mnist", split="test", limit=1).images[0]


@pytest.mark.parametrize("sampler", ["heun", "dpmpp_2m", "euler_a", "ddim"])
def test_known_pixels_kept_exactly_with_every_sampler(runs, sampler):
    run = runs[False]
    image, mask = digit(run), torch.zeros(28, 28)
    mask[:, 14:] = 1
    g = inpaint(run, image, mask, Request(num=3, steps=3, sampler=sampler, seed=4))
    assert g.parameters["inpaint"]["method"] == "trained"
    assert torch.equal(g.images[..., :14], image[None, ..., :14].expand(3, -1, -1, -1))
    again = inpaint(run, image, mask, Request(num=1, steps=3, sampler=sampler, seed=5))
    torch.testing.assert_close(again.images[0], g.images[1], rtol=0, atol=1e-5)  # image i from seed + i


def test_guidance_keeps_the_mask_in_both_branches(runs):
    run = runs[True]
    image, mask = digit(run), torch.zeros(28, 28)
    mask[8:20, 8:20] = 1
    y, m = image[None], mask[None, None]
    req = Request(class_ids=(3,), guidance=2.0, conditions={"inpaint": {"image": y, "mask": m}})
    guided, cond = conditioned(run, req)
    assert torch.equal(guided.uncond["concat"], cond["concat"]) and torch.equal(cond["concat"][:, :1], m)
    assert int(guided.uncond["class_labels"][0]) == 10
    g = inpaint(run, image, mask, Request(class_ids=(3,), guidance=2.0, num=2, steps=3))
    assert torch.equal(g.images * (1 - m), y.expand(2, -1, -1, -1) * (1 - m))


def test_outpaint_and_replace_on_a_trained_run(runs):
    run = runs[False]
    small = digit(run)[:, 4:24, 4:24]
    g = outpaint(run, small, (4, 4, 4, 4), Request(steps=3))
    assert torch.equal(g.images[0, :, 4:24, 4:24], small)
    r = inpaint(run, digit(run), torch.ones(28, 28), Request(steps=3), method="replace")
    assert r.parameters["inpaint"]["method"] == "replace"


def test_bad_inputs(runs, tmp_path):
    run = runs[False]
    with pytest.raises(NoisecraftError, match="mask-conditioned run"):
        plain = load(_plain_run(tmp_path))
        inpaint(plain, digit(plain), torch.ones(28, 28), Request(steps=2), method="trained")
    bad = {"image": torch.zeros(1, 1, 28, 28), "mask": torch.full((1, 1, 28, 28), 0.5)}
    with pytest.raises(NoisecraftError, match="binary"):
        conditioned(run, Request(conditions={"inpaint": bad}))
    with pytest.raises(NoisecraftError, match=r"expected \(1, 1, 28, 28\) or"):
        conditioned(run, Request(conditions={"inpaint": {"image": torch.zeros(1, 3, 28, 28), "mask": bad["mask"]}}))
    with pytest.raises(NoisecraftError, match="inpainting method"):
        inpaint(run, digit(run), torch.ones(28, 28), method="paint")


def _plain_run(tmp_path):
    c = get_preset("mnist")
    c = replace(c, network=replace(c.network, base_channels=8, channel_mult=(1, 2), attention_levels=(1,),
                                   head_channels=8, norm_groups=4), data=replace(c.data, limit=16),
                train=replace(c.train, batch_size=8, steps=1, minutes=None, threads=1))
    Trainer(c, tmp_path / "plain", progress=False).run()
    return tmp_path / "plain"


def test_cli_uses_the_trained_method(runs, tmp_path, capsys):
    from noisecraft.data import load_image

    run = runs[False]
    image, mask = digit(run), torch.zeros(1, 1, 28, 28)
    mask[..., 14:] = 1
    save_png(to_uint8(image[None])[0], tmp_path / "in.png")
    save_png(to_uint8(mask * 2 - 1)[0], tmp_path / "mask.png")
    code = main(["inpaint", "--checkpoint", str(run.path), "--image", str(tmp_path / "in.png"), "--mask",
                 str(tmp_path / "mask.png"), "--steps", "3", "--num", "2", "--out", str(tmp_path / "out")])
    assert code == 0
    out, known = load_image(tmp_path / "out" / "000001.png"), load_image(tmp_path / "in.png")
    assert torch.equal(out[..., :14], known[..., :14])


@pytest.mark.parametrize("method", ["trained", "replace"])
def test_outpaint_beyond_the_models_canvas(runs, method):
    run = runs[False]
    image = digit(run)  # the model's own 28x28: the canvas grows by the pad
    g = outpaint(run, image, (4, 0, 8, 4), Request(steps=3, num=2), method=method)
    assert g.images.shape == (2, 1, 32, 40) and torch.isfinite(g.images).all()
    assert torch.equal(g.images[:, :, 0:28, 4:32], image.expand(2, -1, -1, -1))
    with pytest.raises(NoisecraftError, match="must be multiples of"):
        outpaint(run, image, (1, 0, 0, 0), Request(steps=2), method=method)


def test_the_preview_inpaints_the_right_half_of_the_datasets_images(runs):
    from noisecraft.pipelines import generate
    from noisecraft.pipelines.preview import preview_request
    from noisecraft.training.batches import load_data

    run = runs[True]
    data = load_data(run.config)
    request = preview_request(run.config, data, 2, run.conditions)
    value = request.conditions["inpaint"]
    assert torch.equal(value["image"], data.images[:2].float())
    assert value["mask"][..., :14].sum() == 0 and bool((value["mask"][..., 14:] == 1).all())
    assert generate(run, replace(request, steps=2)).images.shape == (2, 1, 28, 28)
