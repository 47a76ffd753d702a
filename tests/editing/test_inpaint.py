"""Training-free inpainting against the exact conditional law, and on a tiny trained image model.

Ground truth: for the 2-D Gaussian mixture below with the exact denoiser, the law of x0_1 given x0_0 = 1 is the
mixture `MIX.observe([0], [1.0])` (tests/analytic.py; here essentially N(2, 0.25): the observation picks the
component of prior weight 0.2). The distance of each method's samples to it is the energy distance, compared
with its sampling-noise floor (mean + 4 std of the distance between fresh exact sets of the same size and the
fixed exact set). Replacement is known to be biased (it follows the unconditional score given a noisy known
region: with the prior weight 0.8 on the other component, most samples commit to it early); RePaint's
resampling closes the gap step by step (each method's distance: benchmarks/editing.md).
"""

from dataclasses import replace

import pytest
import torch

from analytic import GaussianMixture
from noisecraft.cli.main import main
from noisecraft.data import load_image
from noisecraft.editing.inpaint import inpaint, outpaint, repaint_schedule, sample_repaint, sample_replace
from noisecraft.errors import NoisecraftError
from noisecraft.pipelines import Request, load
from noisecraft.presets import get_preset
from noisecraft.schedules.steps import karras_sigmas
from noisecraft.training.trainer import Trainer
from noisecraft.viz import save_png, to_uint8

MIX = GaussianMixture([[-2.0, -2.0], [2.0, 2.0]], [0.5, 0.5], [0.8, 0.2])
Y = torch.tensor([[1.0, 0.0]], dtype=torch.float64)     # x0_0 = 1 observed (x0_1's value is ignored)
MASK = torch.tensor([[0.0, 1.0]], dtype=torch.float64)  # regenerate coordinate 1
N, STEPS = 2000, 50


def energy_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """2 E|A - B| - E|A - A'| - E|B - B'| (Szekely & Rizzo), V-statistic."""
    return float(2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean() - torch.cdist(b, b).mean())


@pytest.fixture(scope="module")
def exact():
    """(the fixed exact sample of x0_1 | x0_0 = 1, the noise floor of the energy distance to it)."""
    law = MIX.observe([0], [1.0])
    truth = law.sample(N, torch.Generator().manual_seed(8))
    g = torch.Generator().manual_seed(100)
    d = torch.tensor([energy_distance(law.sample(N, g), truth) for _ in range(10)])
    return truth, float(d.mean() + 4 * d.std())


def distance(exact, fn, **options) -> float:
    truth, floor = exact
    g = torch.Generator().manual_seed(7)
    x = 80.0 * torch.randn(N, 2, generator=g, dtype=torch.float64)
    out = fn(MIX.denoise, x, karras_sigmas(0.002, 80.0, STEPS), Y, MASK, generator=g, **options)
    assert torch.equal(out[:, 0], torch.full((N,), 1.0, dtype=torch.float64))  # the known coordinate, exactly
    d = energy_distance(out[:, 1:], truth)
    print(f"{fn.__name__} {options}: energy distance {d:.3g} (floor {floor:.2g})")
    return d


def test_observed_law_is_the_mixture_posterior():
    law = MIX.observe([0], [1.0])
    w = MIX.weights * torch.exp(-0.5 * (1.0 - MIX.means[:, 0]) ** 2 / MIX.stds**2) / MIX.stds
    assert torch.allclose(law.weights, w / w.sum()) and torch.equal(law.means, MIX.means[:, 1:])


def test_replacement_is_biased_and_repaint_closes_the_gap(exact):
    floor = exact[1]
    replaced = {s: distance(exact, sample_replace, sampler=s) for s in ("euler_a", "heun", "dpmpp_2m")}
    replaced["ddpm state"] = distance(exact, sample_replace, sampler="ddpm", noise="state")
    assert min(replaced.values()) > 100 * floor  # the known bias of replacement, far above the floor
    repaint = [distance(exact, sample_repaint, jump=10, resample=r) for r in (1, 5, 10)]
    assert repaint[0] > 100 * floor  # r = 1 is replacement with the DDPM step
    assert repaint[0] > 3 * repaint[1] > 9 * repaint[2]  # more resampling, closer to the exact law
    assert repaint[2] < min(replaced.values()) / 50
    assert distance(exact, sample_repaint, jump=5, resample=20) < 3 * floor


def test_repaint_schedule():
    assert repaint_schedule(4, 2, 1) == [0, 1, 2, 3, 4]  # r = 1: no resampling
    # jumps after reaching levels 2 and 0 (steps left), each redone once
    assert repaint_schedule(4, 2, 2) == [0, 1, 2, 1, 0, 1, 2, 3, 4, 3, 2, 3, 4]
    path = repaint_schedule(50, 10, 10)
    assert path[0] == 0 and path[-1] == 50 and all(abs(b - a) == 1 for a, b in zip(path, path[1:], strict=False))
    assert sum(b > a for a, b in zip(path, path[1:], strict=False)) == 50 + 9 * 10 * 5
    with pytest.raises(NoisecraftError, match="jump length must be an integer >= 1"):
        repaint_schedule(10, 0, 2)


# ------------------------------------------------------------------------------ a tiny trained image model
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    c = get_preset("digits")
    c = replace(c, network=replace(c.network, base_channels=8, channel_mult=(1, 2), attention_levels=(1,),
                                   head_channels=8, norm_groups=4),
                data=replace(c.data, limit=64), sample=replace(c.sample, steps=4),
                train=replace(c.train, batch_size=8, steps=2, minutes=None, checkpoint_every=2, threads=1))
    path = tmp_path_factory.mktemp("inpaint") / "run"
    Trainer(c, path, progress=False).run()
    return load(path)


def digit_image(run) -> torch.Tensor:
    """A (C, H, W) image in [-1, 1] on the uint8 grid (as read from a PNG)."""
    C, H, W = run.data_shape
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (C, H, W), generator=g).float() / 127.5 - 1


@pytest.mark.parametrize("method,sampler", [("replace", None), ("replace", "dpmpp_2m"), ("repaint", None),
                                            ("repaint", "ddim")])
def test_known_pixels_are_kept_exactly(run, method, sampler):
    image = digit_image(run)
    H, W = image.shape[1:]
    mask = torch.zeros(H, W)
    mask[2:6, 3:7] = 1
    out = inpaint(run, image, mask, Request(num=3, seed=1, steps=4, sampler=sampler), method=method, jump=2,
                  resample=2)
    assert out.images.shape == (3, *image.shape) and torch.isfinite(out.images).all()
    keep = (mask == 0).expand_as(image)
    for img in out.images:
        assert torch.equal(img[keep], image[keep])
    assert not torch.equal(out.images[0], out.images[1])  # each image its own noise
    assert out.parameters["inpaint"]["method"] == method
    again = inpaint(run, image, mask, Request(num=1, seed=2, steps=4, sampler=sampler), method=method, jump=2,
                    resample=2)
    assert torch.equal(again.images[0], out.images[1])  # image i from seed + i, whatever the batch


def test_outpaint_keeps_the_image(run):
    image = digit_image(run)[:, 1:-1, 2:]
    out = outpaint(run, image, (2, 1, 0, 1), Request(num=1, steps=4)).images[0]
    assert torch.equal(out[:, 1:-1, 2:], image)


def test_bad_inputs_are_one_line_errors(run):
    image = digit_image(run)
    C, H, W = image.shape
    cases = [
        (lambda: inpaint(run, image, torch.zeros(H + 1, W)), "give a one-channel mask of the image's size"),
        (lambda: inpaint(run, image, torch.full((H, W), 0.5)), "must be binary: 1 \\(white\\) = regenerate"),
        (lambda: inpaint(run, image.expand(3, H, W), torch.zeros(H, W)), f"takes images of {C}x{H}x{W}"),
        (lambda: inpaint(run, image, torch.zeros(H, W), method="blend"), "allowed: auto, repaint, replace, trained"),
        (lambda: outpaint(run, image, (1, 0, 0, 0)), "height and width must be multiples of 2"),
        (lambda: outpaint(run, image[:, 1:, 1:], (1, 0, 0, 0)), f"or one of {C}x{H}x{W - 1}"),
        (lambda: inpaint(run, image, torch.zeros(H, W), Request(sampler="heun"), method="repaint"),
         "single-step form"),
    ]
    for call, message in cases:
        with pytest.raises(NoisecraftError, match=message) as e:
            call()
        assert "\n" not in str(e.value)


def test_cli_inpaint_and_outpaint_write_pngs(run, tmp_path, capsys):
    image = digit_image(run)
    H, W = image.shape[1:]
    mask = torch.zeros(1, 1, H, W)
    mask[..., :, W // 2:] = 1
    save_png(to_uint8(image[None])[0], tmp_path / "image.png")
    save_png(to_uint8(mask * 2 - 1)[0], tmp_path / "mask.png")
    save_png(to_uint8(image[None, :, 1:-1, 1:-1])[0], tmp_path / "small.png")
    base = ["inpaint", "--checkpoint", str(run.path), "--steps", "3"]
    assert main([*base, "--image", str(tmp_path / "image.png"), "--mask", str(tmp_path / "mask.png"),
                 "--num", "2", "--out", str(tmp_path / "out")]) == 0
    out = load_image(tmp_path / "out" / "000000.png")
    assert out.shape == image.shape and torch.equal(out[..., : W // 2], image[..., : W // 2])
    assert main([*base, "--image", str(tmp_path / "small.png"), "--outpaint", "1", "1", "1", "1",
                 "--method", "repaint", "--jump", "2", "--resample", "2", "--out", str(tmp_path / "o.png")]) == 0
    assert (tmp_path / "o.png").is_file() and (tmp_path / "out" / "000001.png").is_file()
    capsys.readouterr()
    save_png(to_uint8(torch.zeros(1, 1, H, W))[0], tmp_path / "grey.png")  # 0 in [-1, 1]: mid-grey
    bad = [(["--image", str(tmp_path / "small.png"), "--mask", str(tmp_path / "mask.png")], "takes images of"),
           (["--image", str(tmp_path / "image.png"), "--mask", str(tmp_path / "grey.png")], "must be binary"),
           (["--image", str(tmp_path / "image.png"), "--mask", str(tmp_path / "small.png")], "mask of the image's"),
           (["--image", str(tmp_path / "image.png"), "--mask", str(tmp_path / "mask.png"), "--method", "x"],
            "allowed: auto, repaint, replace, trained")]
    for args, message in bad:
        assert main([*base, *args, "--out", str(tmp_path / "bad.png")]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err


def test_latent_run_keeps_the_known_pixels(tmp_path, monkeypatch):
    """A latent run inpaints in latent space (the mask max-pooled by the factor) and pastes the known pixels."""
    from latent_run import tiny_latent_run

    from noisecraft.editing.inpaint import _model_space

    latent = tiny_latent_run(tmp_path, monkeypatch)
    f = latent.autoencoder.factor
    image = torch.randint(0, 256, (3, 16, 16), generator=torch.Generator().manual_seed(0)).float() / 127.5 - 1
    mask = torch.zeros(16, 16)
    mask[5:9, 0:3] = 1
    _, m_z = _model_space(latent, image[None], mask[None, None])
    assert m_z.shape[-2:] == (16 // f, 16 // f) and int(m_z.sum()) == len(range(5 // f, 8 // f + 1)) * (2 // f + 1)
    for method in ("replace", "repaint"):
        out = inpaint(latent, image, mask, Request(num=2, steps=3), method=method, jump=1, resample=2).images
        assert out.shape == (2, 3, 16, 16) and torch.isfinite(out).all()
        keep = (mask == 0).expand_as(image)
        assert all(torch.equal(img[keep], image[keep]) for img in out)
