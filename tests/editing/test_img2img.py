"""Image-to-image (noisecraft.editing.img2img): SDEdit's ends on the exact mixture denoiser, ODE inversion round
trips that converge with the steps, and on a tiny trained class-conditional digits model the pipeline and the
`noisecraft img2img` command (PNGs written; bad strength / image size one-line errors)."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from analytic import GaussianMixture
from noisecraft.cli.main import main
from noisecraft.core.random import make_generators
from noisecraft.editing.img2img import invert, sdedit, sdedit_start
from noisecraft.errors import NoisecraftError
from noisecraft.pipelines import sample_batches
from noisecraft.samplers import get
from noisecraft.schedules.steps import karras_sigmas

MIX = GaussianMixture([[1.0, 0.5], [-1.0, 0.0], [0.2, -1.2]], [0.4, 0.3, 0.5], [1, 2, 1.5])


def data(n=32, seed=0):
    return MIX.sample(n, torch.Generator().manual_seed(seed))  # (n, 2) float64


def round_trip(sampler, steps, **options):
    x0, sigmas = data(), karras_sigmas(0.002, 80.0, steps)
    x_T = invert(MIX.denoise, x0, sigmas, sampler=sampler, **options)
    return (get(sampler)(MIX.denoise, x_T, sigmas) - x0).abs().max().item()


@pytest.mark.parametrize("sampler", ["heun", "euler_a", "dpmpp_2m"])
def test_sdedit_ends(sampler):
    x0, sigmas = data(8).float(), karras_sigmas(0.002, 80.0, 10)
    assert torch.equal(sdedit(MIX.denoise, x0, sigmas, 0.0, sampler=sampler, generator=make_generators(3, 8)), x0)
    full = sdedit(MIX.denoise, x0, sigmas, 1.0, sampler=sampler, generator=make_generators(3, 8))
    plain = sample_batches(MIX.denoise, sigmas, (2,), num=8, seed=3, sampler=sampler)
    assert torch.equal(full, plain)  # strength 1 is plain sampling from the same noise (stochastic ones too)
    half = sdedit(MIX.denoise, x0, sigmas, 0.5, sampler=sampler, generator=make_generators(3, 8))
    assert not torch.allclose(half, x0) and not torch.allclose(half, plain)


def test_sdedit_start_is_diffusers_quantile():
    assert [sdedit_start(50, s) for s in (0.0, 0.3, 0.75, 1.0)] == [50, 35, 12, 0]
    for bad in (-0.1, 1.5, True, "0.5"):
        with pytest.raises(NoisecraftError, match=r"strength must be a number in \[0, 1\]"):
            sdedit_start(50, bad)


def test_sdedit_low_strength_stays_close_and_follows_the_sigma():
    """x(sigma_start) = x0 + sigma n is solved back to the data: the edit's distance grows with the strength."""
    x0, sigmas = data(256), karras_sigmas(0.002, 80.0, 20)
    dist = [(sdedit(MIX.denoise, x0, sigmas, s, generator=make_generators(0, 256)) - x0).norm(dim=1).mean().item()
            for s in (0.2, 0.5, 1.0)]
    assert dist[0] < dist[1] < dist[2] and dist[0] < 0.2


def test_inversion_round_trip_converges():
    """Invert, then sample the same deterministic sampler at 25 / 50 / 100 Karras steps (0.002..80): the error
    falls faster than 4x per doubling; the fixed-point refinement makes it exact (figures: benchmarks/editing.md)."""
    for sampler in ("heun", "dpmpp_2m"):
        e = [round_trip(sampler, n, refine=0) for n in (25, 50, 100)]
        assert e[0] > 4 * e[1] > 16 * e[2], (sampler, e)
        assert e[1] <= 2.5e-3, (sampler, e)
    assert round_trip("heun", 50, refine=1) <= 1e-3  # the aim at 50 steps
    assert round_trip("heun", 50) == round_trip("heun", 50, refine=1)  # the default: one refinement
    assert round_trip("dpmpp_2m", 50) == round_trip("dpmpp_2m", 50, refine=0)  # it takes none
    with pytest.raises(NoisecraftError, match="refine must be an integer >= 0"):
        round_trip("heun", 50, refine=-1)
    assert round_trip("heun", 50, refine=2) <= 1e-4
    assert round_trip("euler", 50, refine=5) <= 1e-4  # Euler alone: 0.2 (first order), refined: exact
    assert round_trip("heun", 50, refine=5) <= 1e-6


def test_inversion_gives_gaussian_noise_and_rejects_stochastic_samplers():
    x0, sigmas = data(2000), karras_sigmas(0.002, 80.0, 30)
    noise = invert(MIX.denoise, x0, sigmas) / 80.0
    assert abs(noise.mean().item()) < 0.06 and abs(noise.std().item() - 1) < 0.05
    with pytest.raises(NoisecraftError, match="cannot be inverted.*heun"):
        invert(MIX.denoise, x0, sigmas, sampler="euler_a")


def test_inversion_edit_on_conditional_mixture():
    """Editing by inversion with the exact conditional denoiser: invert under class 0, re-sample under class 1
    lands on class 1's component; re-sampling under class 0 gives the input back."""
    gm = GaussianMixture([[2.0, 0.0], [-2.0, 0.0]], [0.3, 0.3])
    den = gm.conditional_denoiser()
    x0 = gm.sample_class(16, 0, torch.Generator().manual_seed(1))
    sigmas, c0, c1 = karras_sigmas(0.002, 80.0, 50), {"class_labels": torch.zeros(16)}, {"class_labels": torch.ones(16)}
    x_T = invert(den, x0, sigmas, cond=c0, refine=3)
    assert (get("heun")(den, x_T, sigmas, cond=c0) - x0).abs().max() < 1e-4
    edited = get("heun")(den, x_T, sigmas, cond=c1)
    assert (gm.posterior(edited, 0.0)[:, 1] > 0.99).all()


# ------------------------------------------------------------------------------ a tiny trained model
def config():
    from noisecraft.presets import get_preset

    c = get_preset("digits")
    c = replace(c, network=replace(c.network, base_channels=8, channel_mult=(1, 2), attention_levels=(1,),
                                   head_channels=8, norm_groups=4, num_classes=10))
    return replace(c, conditioning=replace(c.conditioning, cond_dropout=0.2), data=replace(c.data, limit=64),
                   train=replace(c.train, batch_size=8, steps=2, minutes=None, checkpoint_every=2, threads=1))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from noisecraft.training.trainer import Trainer

    path = tmp_path_factory.mktemp("img2img") / "run"
    Trainer(config(), path, progress=False).run()
    return path


def picture(path, shape):
    from PIL import Image

    c, h, w = shape
    arr = (np.arange(h * w * c).reshape(h, w, c) * 7 % 256).astype(np.uint8)
    Image.fromarray(arr[:, :, 0] if c == 1 else arr).save(path)
    return path


def test_pipeline_on_trained_model(trained):
    from noisecraft.editing.img2img import edit_by_inversion, image_shape, img2img, style_transfer
    from noisecraft.pipelines import Request, generate, load

    run = load(trained)
    image = torch.rand(image_shape(run)) * 2 - 1
    req = Request(class_ids=(3,), guidance=2.0, steps=4, num=2, seed=5)
    assert torch.equal(img2img(run, image, req, 0.0).images, image.expand(2, *image.shape))
    assert torch.equal(img2img(run, image, req, 1.0).images, generate(run, req).images)
    out = style_transfer(run, image, req, strength=0.5)
    assert out.images.shape == (2, *image.shape) and out.parameters["strength"] == 0.5
    same = replace(req, guidance=None, sampler="heun", steps=20)
    back = edit_by_inversion(run, image, same, same, refine=3)
    assert (back.images - image).abs().max() < 1e-3  # same condition: the image back (measured 3.2e-4)
    assert not torch.allclose(edit_by_inversion(run, image, same, replace(same, class_ids=(8,))).images, image,
                              atol=1e-3)
    with pytest.raises(NoisecraftError, match=r"takes 1-channel .* images"):
        img2img(run, torch.zeros(3, *image.shape[1:]), req)


def test_cli_writes_pngs_and_bad_inputs_are_one_line(trained, tmp_path, capsys):
    from noisecraft.pipelines import load

    shape = load(trained).data_shape
    img = picture(tmp_path / "in.png", shape)
    common = ["img2img", "--checkpoint", str(trained), "--image", str(img), "--steps", "3"]
    assert main([*common, "--strength", "0.6", "--class", "2", "--guidance", "2", "--num", "2",
                 "--out", str(tmp_path / "a.png")]) == 0
    assert main([*common, "--invert", "--class", "7", "--sampler", "heun", "--out", str(tmp_path / "dir")]) == 0
    assert (tmp_path / "a.png").is_file() and (tmp_path / "dir" / "000000.png").is_file()
    capsys.readouterr()
    for extra, message in ((["--strength", "1.5"], "strength must be a number in [0, 1]"),
                           (["--image", str(picture(tmp_path / "rgb.png", (3, *shape[1:])))], "takes 1-channel"),
                           (["--image", str(picture(tmp_path / "big.png", (1, 16, 16)))], "takes 1-channel")):
        assert main([*common, *extra, "--out", str(tmp_path / "x.png")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_latent_run_edits_in_latent_space(tmp_path, monkeypatch):
    """A latent run: the image is encoded (posterior mean, scaled), edited in latent space and decoded; strength 0
    gives the pixels back exactly, strength 1 is text-to-image from the same noise, inversion returns latents."""
    from latent_run import tiny_latent_run

    from noisecraft.autoencoder.latents import encode_images
    from noisecraft.editing.img2img import encode, image_shape, img2img, invert_image
    from noisecraft.pipelines import Request, generate

    run = tiny_latent_run(tmp_path, monkeypatch)
    assert image_shape(run) == (3, 16, 16) and run.data_shape[0] != 3
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    z = encode(run, image[None])
    assert torch.equal(z, encode_images(run.autoencoder, image[None], progress=False))
    req = Request(steps=4, num=2, seed=3)
    assert torch.equal(img2img(run, image, req, 0.0).images, image.expand(2, -1, -1, -1))
    assert torch.equal(img2img(run, image, req, 1.0).images, generate(run, req).images)
    half = img2img(run, image, req, 0.5)
    assert half.samples.shape == (2, *run.data_shape) and half.images.shape == (2, 3, 16, 16)
    noise = invert_image(run, image, replace(req, num=1, sampler="heun"))
    assert noise.shape == (1, *run.data_shape) and torch.isfinite(noise).all()
