"""diffusers folders load as noisecraft runs (noisecraft.interop.diffusers_load): the same model gives the same
numbers as diffusers, per denoiser call and for a whole generation, and bad folders are one-line errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
from diffusers_tiny import (
    diffusers,
    scheduler_for,
    tiny_dit_dir,
    tiny_legacy_dit_dir,
    tiny_pixart,
    tiny_pixart_pipeline_dir,
    tiny_sd2_pipeline,
    tiny_sd_pipeline,
    tiny_unet2d,
    tiny_unet2d_dir,
)

import noisecraft
from noisecraft.core.random import make_generators, randn_like
from noisecraft.errors import CheckpointError, NoisecraftError
from noisecraft.pipelines import Request, generate, plan

TIMESTEPS = (0, 1, 37, 250, 500, 777, 998, 999)  # a sample of the 1000 training timesteps, both ends included


def vp_to_x0(out: torch.Tensor, x_vp: torch.Tensor, abar: float, prediction: str) -> torch.Tensor:
    """diffusers' network output at x_t = sqrt(abar) x0 + sqrt(1 - abar) eps -> its x0 estimate (float64)."""
    a, s = math.sqrt(abar), math.sqrt(1 - abar)
    if prediction == "epsilon":
        return (x_vp - s * out) / a
    if prediction == "v_prediction":  # v = a eps - s x0
        return a * x_vp - s * out
    return out


def denoiser_error(run, call, shape, prediction, abar, cond=None, seed=0) -> float:
    """max |D(x, sigma_t) - diffusers' x0| over TIMESTEPS, x in float64 (so both see the same float32 input)."""
    worst = 0.0
    g = torch.Generator().manual_seed(seed)
    for t in TIMESTEPS:
        a = float(abar[t])
        sigma = math.sqrt((1 - a) / a)
        assert float(run.denoiser.schedule.c_noise(torch.tensor([sigma], dtype=torch.float64))) == pytest.approx(t)
        x_vp = torch.randn(*shape, generator=g)
        ours = run.denoiser(x_vp.double() * math.sqrt(1 + sigma**2), sigma, cond)
        with torch.no_grad():
            ref = vp_to_x0(call(x_vp, torch.tensor([t] * shape[0])).double(), x_vp.double(), a, prediction)
        worst = max(worst, float((ours - ref).abs().max()))
    return worst


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_unet2d_denoiser_matches_diffusers(tmp_path, prediction):
    run = noisecraft.load(tiny_unet2d_dir(tmp_path, prediction))
    assert run.data_shape == (3, 16, 16) and run.autoencoder is None and not run.conditions
    assert run.denoiser.prediction.kind == {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}[prediction]
    unet = tiny_unet2d(prediction)
    abar = scheduler_for("ddpm", prediction).alphas_cumprod.double()
    torch.testing.assert_close(run.denoiser.schedule.alphas_cumprod, abar, rtol=0, atol=1e-15)
    err = denoiser_error(run, lambda x, t: unet(x, t).sample, (2, 3, 16, 16), prediction, abar)
    assert err <= 1e-5, err


def test_sd_unet_with_text_matches_diffusers(tmp_path):
    folder = tmp_path / "sd"
    tiny_sd_pipeline(tmp_path).save_pretrained(folder, safe_serialization=True)
    run = noisecraft.load(folder)
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
    text = run.conditions.get("text")
    cond = text.encode(["a red dog", "cat"])
    embeds, _ = pipe.encode_prompt(["a red dog", "cat"], "cpu", 1, False)
    torch.testing.assert_close(cond["text_tokens"], embeds, rtol=0, atol=0)  # the pipeline's own encoding
    assert cond["text_tokens"].shape == (2, 77, 32) and bool(cond["text_mask"].all())
    err = denoiser_error(run, lambda x, t: pipe.unet(x, t, encoder_hidden_states=embeds).sample, (2, 4, 8, 8),
                         "epsilon", pipe.scheduler.alphas_cumprod.double(), cond=cond)
    assert err <= 1e-5, err


def unit_noise(num: int, shape, seed: int = 0) -> torch.Tensor:
    """The unit noise `generate` draws for images seed .. seed + num - 1."""
    return randn_like(torch.empty(num, *shape), make_generators(seed, num))


def pipeline_generation_errors(run, pipe, request: Request, scheduler: str) -> tuple[float, float]:
    """(max |latents - pipeline latents|, max |images - pipeline images|) of `request` on `run` and the diffusers
    pipeline `pipe` started from the same latents (one prompt, its negative prompt, guidance, steps)."""
    out = generate(run, request)
    sigma0 = float(plan(run, request).sigmas[0])
    start = unit_noise(request.num, run.data_shape, seed=request.seed) * sigma0  # noisecraft's first x (VE view)
    # the pipeline multiplies its latents by init_noise_sigma (Euler: sigma0; DDIM: 1, the VP view)
    latents = start / (pipe.scheduler.init_noise_sigma if scheduler == "euler" else math.sqrt(1 + sigma0**2))
    size = run.data_shape[-1] * 2  # the tiny vae's factor
    ref = pipe(request.prompts[0], negative_prompt=request.negative_prompt, guidance_scale=request.guidance,
               num_inference_steps=request.steps, height=size, width=size, num_images_per_prompt=request.num,
               latents=latents, output_type="latent").images
    with torch.no_grad():
        decoded = pipe.vae.decode(ref / pipe.vae.config.scaling_factor).sample
    return float((out.samples - ref).abs().max()), float((out.images - decoded).abs().max())


@pytest.mark.parametrize("scheduler,sampler,spacing", [("euler", "euler", "trailing"), ("ddim", "ddim", "leading")])
def test_sd_generation_matches_pipeline(tmp_path, scheduler, sampler, spacing):
    """StableDiffusionPipeline with the same algorithm (Euler on trailing / DDIM eta 0 on leading timesteps),
    guidance, steps, negative prompt and starting latents: the same latents and the same decoded images."""
    folder = tmp_path / "sd"
    tiny_sd_pipeline(tmp_path, scheduler).save_pretrained(folder, safe_serialization=True)
    run = noisecraft.load(folder)
    request = Request(prompts=("a red dog",), negative_prompt="cat", guidance=3.0, sampler=sampler, steps=6,
                      step_schedule=spacing, seed=5, num=2)
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
    err, image_err = pipeline_generation_errors(run, pipe, request, scheduler)
    assert err <= 1e-4 and image_err <= 1e-4, (err, image_err)


def sd2_folder(tmp_path, scheduler="euler"):
    folder = tmp_path / f"sd2-{scheduler}"
    tiny_sd2_pipeline(tmp_path, scheduler).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.mark.parametrize("offset", [0, 1, 3])
def test_steps_offset_generation_matches_pipeline(tmp_path, offset):
    """The scheduler's steps_offset is the run's leading offset: DDIM on leading timesteps t_i + offset, as the
    pipeline's DDIMScheduler steps them (SD's own offset 1, which StableDiffusionPipeline's constructor writes
    into a config with 0; 0 and 3 set on the saved config)."""
    folder = tmp_path / "sd"
    tiny_sd_pipeline(tmp_path, "ddim").save_pretrained(folder, safe_serialization=True)
    config_path = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text())
    assert config["steps_offset"] == 1 and config["timestep_spacing"] == "leading"
    config_path.write_text(json.dumps({**config, "steps_offset": offset}))
    run = noisecraft.load(folder)
    assert run.denoiser.schedule.steps_offset == offset
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
    pipe.scheduler = diffusers.DDIMScheduler.from_config(config, steps_offset=offset)  # the constructor's rewrite
    pipe.scheduler.set_timesteps(6)
    request = Request(prompts=("a red dog",), negative_prompt="cat", guidance=3.0, sampler="ddim", steps=6,
                      step_schedule="leading", seed=2, num=2)
    sigmas = plan(run, request).sigmas
    expected = run.denoiser.schedule.sigmas[pipe.scheduler.timesteps]
    torch.testing.assert_close(sigmas[:-1], expected, rtol=0, atol=0)
    err, image_err = pipeline_generation_errors(run, pipe, request, "ddim")
    assert err <= 1e-4 and image_err <= 1e-4, (err, image_err)


def test_sd2_unet_with_text_matches_diffusers(tmp_path):
    """SD-2.x shape: linear projections in the transformer blocks, a head count per block, a GELU (OpenCLIP-like)
    CLIP text model, v-prediction; our denoiser = the UNet's v converted to x0."""
    folder = sd2_folder(tmp_path)
    run = noisecraft.load(folder)
    assert run.denoiser.prediction.kind == "v" and run.data_shape == (4, 8, 8)
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
    assert pipe.unet.config.use_linear_projection and tuple(pipe.unet.config.attention_head_dim) == (2, 4)
    assert pipe.text_encoder.config.hidden_act == "gelu"
    cond = run.conditions.get("text").encode(["a red dog", "cat"])
    embeds, _ = pipe.encode_prompt(["a red dog", "cat"], "cpu", 1, False)
    torch.testing.assert_close(cond["text_tokens"], embeds, rtol=0, atol=0)
    err = denoiser_error(run, lambda x, t: pipe.unet(x, t, encoder_hidden_states=embeds).sample, (2, 4, 8, 8),
                         "v_prediction", pipe.scheduler.alphas_cumprod.double(), cond=cond)
    assert err <= 1e-5, err


@pytest.mark.parametrize("scheduler,sampler,spacing", [("euler", "euler", "trailing"), ("ddim", "ddim", "leading")])
def test_sd2_generation_matches_pipeline(tmp_path, scheduler, sampler, spacing):
    folder = sd2_folder(tmp_path, scheduler)
    run = noisecraft.load(folder)
    request = Request(prompts=("a red dog",), negative_prompt="cat", guidance=4.0, sampler=sampler, steps=6,
                      step_schedule=spacing, seed=3, num=2)
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
    err, image_err = pipeline_generation_errors(run, pipe, request, scheduler)
    assert err <= 1e-4 and image_err <= 1e-4, (err, image_err)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_unet2d_generation_matches_euler_scheduler(tmp_path, prediction):
    """A pixel UNet2DModel sampled by our euler on trailing timesteps = diffusers' EulerDiscreteScheduler loop
    (init_noise_sigma, scale_model_input, step: as StableDiffusionPipeline drives it)."""
    run = noisecraft.load(tiny_unet2d_dir(tmp_path, prediction, scheduler="euler"))
    assert run.config.sample.sampler == "euler"
    out = generate(run, Request(sampler="euler", steps=5, step_schedule="trailing", seed=1, num=2))
    unet, sched = tiny_unet2d(prediction), scheduler_for("euler", prediction)
    sched.set_timesteps(5)
    x = unit_noise(2, (3, 16, 16), seed=1) * sched.init_noise_sigma
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(unet(sched.scale_model_input(x, t), t).sample, t, x).prev_sample
    err, scale = float((out.samples - x).abs().max()), float(x.abs().max())
    assert err <= 1e-4 * max(1.0, scale), (err, scale)  # float32 rounding at |x| ~ sigma_max = 157


def test_dit_class_conditional_matches_diffusers(tmp_path):
    """DiTTransformer2DModel (learned sigma: the first C channels are eps); null label = num_classes."""
    folder = tiny_dit_dir(tmp_path, num_classes=10)
    run = noisecraft.load(folder)
    assert run.data_shape == (4, 8, 8) and run.conditions.get("class") is not None
    dit = diffusers.DiTTransformer2DModel.from_pretrained(folder, local_files_only=True)
    labels = torch.tensor([3, 10])  # a class and the null label
    abar = scheduler_for("ddpm").alphas_cumprod.double()
    err = denoiser_error(run, lambda x, t: dit(x, t, class_labels=labels).sample[:, :4], (2, 4, 8, 8), "epsilon",
                         abar, cond={"class_labels": labels})
    assert err <= 1e-5, err
    out = generate(run, Request(class_ids=(3,), guidance=4.0, steps=3, num=2))
    assert out.samples.shape == (2, 4, 8, 8) and torch.isfinite(out.samples).all()


def test_cli_samples_a_pipeline_folder(tmp_path, capsys):
    from PIL import Image

    from noisecraft.cli.main import main

    folder = tmp_path / "sd"
    tiny_sd_pipeline(tmp_path, "euler").save_pretrained(folder, safe_serialization=True)
    out = tmp_path / "samples"
    code = main(["sample", "--checkpoint", str(folder), "--prompt", "a red dog", "--guidance", "3", "--sampler",
                 "DPM++ 2M Karras", "--steps", "10", "--num", "2", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    files = sorted(out.glob("*.png"))
    assert len(files) == 2
    info = Image.open(files[0]).text["parameters"]
    assert "Sampler: dpmpp_2m" in info and "Schedule type: karras" in info and "CFG scale: 3" in info
    assert main(["sample", "--checkpoint", str(folder), "--class", "1", "--num", "1", "--out", str(out)]) == 2
    assert "text-to-image diffusers pipeline" in capsys.readouterr().err


def one_line_error(path, match: str, cls=CheckpointError) -> str:
    with pytest.raises(cls, match=match) as e:
        noisecraft.load(path)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_unsupported_class_is_one_line(tmp_path):
    folder = tmp_path / "unet3d"
    folder.mkdir()
    (folder / "config.json").write_text('{"_class_name": "UNet3DConditionModel", "sample_size": 8}')
    msg = one_line_error(folder, "UNet3DConditionModel")
    assert "UNet2DModel, UNet2DConditionModel, DiTTransformer2DModel, Transformer2DModel" in msg
    pipe = tmp_path / "pipe"
    pipe.mkdir()
    (pipe / "model_index.json").write_text('{"_class_name": "X", "unet": ["diffusers", "UNetMotionModel"]}')
    one_line_error(pipe, "UNetMotionModel.*supported: UNet2DModel")
    vae = tmp_path / "vae"
    diffusers.AutoencoderKL(block_out_channels=(8,), norm_num_groups=4, latent_channels=2).save_pretrained(vae)
    one_line_error(vae, "'AutoencoderKL' is not a network")


def test_unsupported_variants_are_one_line(tmp_path):
    folder = tiny_unet2d_dir(tmp_path, scheduler="ddpm", rescale_betas_zero_snr=True)
    one_line_error(folder, "rescale_betas_zero_snr")
    folder = tiny_unet2d_dir(tmp_path / "b")
    config = json.loads((folder / "scheduler_config.json").read_text())
    (folder / "scheduler_config.json").write_text(json.dumps({**config, "beta_schedule": "laplace"}))
    one_line_error(folder, "beta_schedule 'laplace' is not supported")


def test_pickle_only_folder_is_refused_unopened(tmp_path, monkeypatch):
    folder = tmp_path / "pickled"
    tiny_unet2d().save_pretrained(folder, safe_serialization=False)
    scheduler_for("ddpm").save_pretrained(folder)
    assert (folder / "diffusion_pytorch_model.bin").is_file()

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load called on a pickle")

    monkeypatch.setattr(torch, "load", no_unpickling)
    one_line_error(folder, "only pickle weights .*diffusion_pytorch_model.bin.*safetensors")


def test_truncated_safetensors_is_one_line(tmp_path):
    folder = tmp_path / "sd"
    tiny_sd_pipeline(tmp_path).save_pretrained(folder, safe_serialization=True)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    one_line_error(folder, "truncated or corrupt")


def test_model_folder_without_text_encoder_explains(tmp_path):
    """A UNet2DConditionModel folder alone loads (its denoiser works with cond['text_tokens']), but sampling it
    without tokens says to load the pipeline folder."""
    from diffusers_tiny import tiny_sd_unet

    folder = tmp_path / "unet"
    tiny_sd_unet().save_pretrained(folder, safe_serialization=True)
    scheduler_for("euler").save_pretrained(folder)
    run = noisecraft.load(folder)
    x = torch.randn(1, 4, 8, 8)
    assert run.denoiser(x, 1.0, {"text_tokens": torch.randn(1, 5, 32)}).shape == x.shape
    with pytest.raises(NoisecraftError, match="load its pipeline folder"):
        generate(run, Request(steps=2, num=1))


def test_our_run_directories_are_not_claimed(tmp_path):
    from noisecraft.interop.diffusers_load import is_diffusers_folder

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text('{"name": "mnist", "model": "unet"}')
    assert not is_diffusers_folder(run_dir)
    assert is_diffusers_folder(tiny_unet2d_dir(tmp_path))


def test_ddpm_pipeline_folder_with_trained_betas(tmp_path):
    """A DDPMPipeline folder (UNet2DModel + scheduler/) loads; trained_betas and squaredcos_cap_v2 give diffusers'
    own alphas_cumprod (float32 arithmetic, as its schedulers compute them)."""
    cosine = diffusers.DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")
    trained = diffusers.DDPMScheduler(trained_betas=cosine.betas.double().tolist(), prediction_type="v_prediction")
    folder = tmp_path / "ddpm"
    diffusers.DDPMPipeline(unet=tiny_unet2d("v_prediction"), scheduler=trained).save_pretrained(folder)
    run = noisecraft.load(folder)
    assert run.data_shape == (3, 16, 16) and run.denoiser.prediction.kind == "v" and run.config.name == "ddpm"
    torch.testing.assert_close(run.denoiser.schedule.alphas_cumprod, trained.alphas_cumprod.double(), rtol=0,
                               atol=1e-15)
    unet = tiny_unet2d("v_prediction")
    err = denoiser_error(run, lambda x, t: unet(x, t).sample, (1, 3, 16, 16), "v_prediction",
                         trained.alphas_cumprod.double())
    assert err <= 1e-5, err
    from noisecraft.interop.diffusers_load import diffusers_alphas_cumprod

    torch.testing.assert_close(diffusers_alphas_cumprod(dict(cosine.config)), cosine.alphas_cumprod.double(),
                               rtol=0, atol=0)


# ------------------------------------------------------------------------------------- T5 and Transformer2DModel
def t5_reference(pipe, prompts, padded: bool = True):
    """(T5 last hidden states, attention mask) of the prompts, the tokenizer and encoder run by hand."""
    tok = pipe.tokenizer(prompts, padding="max_length" if padded else "longest", truncation=True,
                         max_length=pipe.tokenizer.model_max_length, return_tensors="pt")
    with torch.no_grad():
        return pipe.text_encoder(tok.input_ids, attention_mask=tok.attention_mask)[0], tok.attention_mask


@pytest.fixture
def pixart(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tiny_pixart_pipeline_dir(tmp_path)
    return folder, noisecraft.load(folder), diffusers.PixArtAlphaPipeline.from_pretrained(folder,
                                                                                          local_files_only=True)


def test_t5_text_condition_is_the_masked_encoder(pixart):
    """The T5 path: cond['text_tokens'] = T5EncoderModel(ids, attention_mask) on the tokenizer's ids padded to its
    max length, and cond['text_mask'] = that attention mask (False on padding)."""
    _, run, pipe = pixart
    text = run.conditions.get("text")
    assert text.class_name == "T5EncoderModel" and text.masked
    cond = text.encode(["a red dog", "a cat"])
    ref, mask = t5_reference(pipe, ["a red dog", "a cat"])
    assert cond["text_tokens"].shape == (2, pipe.tokenizer.model_max_length, 16)
    torch.testing.assert_close(cond["text_tokens"], ref, rtol=0, atol=0)
    assert torch.equal(cond["text_mask"], mask.bool()) and int(cond["text_mask"].sum()) == 5 + 4
    unpadded, _ = t5_reference(pipe, ["a red dog"], padded=False)  # the mask hides the padding from T5 itself
    assert float((cond["text_tokens"][:1, :5] - unpadded).abs().max()) <= 1e-5


def test_pixart_denoiser_matches_diffusers_and_uses_the_mask(pixart):
    """A Transformer2DModel with ada_norm_single and cross-attention (PixArt): per call = diffusers' x0, and the
    mask reaches it: the max-length padded, masked prompt gives diffusers' output on its real tokens alone."""
    _, run, pipe = pixart
    assert type(pipe.transformer).__name__ == "PixArtTransformer2DModel"
    cond = run.conditions.get("text").encode(["a red dog"])
    cond = {k: v.expand(2, *v.shape[1:]) for k, v in cond.items()}
    abar = pipe.scheduler.alphas_cumprod.double()
    real = int(cond["text_mask"][0].sum())  # [CLS] a red dog [SEP]
    assert real == 5 and not bool(cond["text_mask"][:, real:].any())
    unpadded = cond["text_tokens"][:, :real]  # the same token values (the T5 side: test_t5_text_condition_...)

    def call(tokens, mask=None):
        return lambda x, t: pipe.transformer(x, encoder_hidden_states=tokens, timestep=t, encoder_attention_mask=mask,
                                             added_cond_kwargs={"resolution": None, "aspect_ratio": None}
                                             ).sample[:, :4]

    err = denoiser_error(run, call(cond["text_tokens"], cond["text_mask"].long()), (2, 4, 8, 8), "epsilon", abar,
                         cond=cond)
    assert err <= 1e-5, err
    # on the network's own output (eps): x0 at t = 999 multiplies float32 rounding by sqrt((1 - abar) / abar) = 157
    x, t = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(4)), torch.tensor([999.0, 250.0])
    with torch.no_grad():
        ours, ref = run.denoiser.net(x, t, cond), call(unpadded)(x, t)
    err_unpadded = float((ours - ref).abs().max())
    assert err_unpadded <= 1e-6, err_unpadded
    unmasked = denoiser_error(run, call(cond["text_tokens"]), (2, 4, 8, 8), "epsilon", abar, cond=cond)
    assert unmasked > 1e-3, unmasked  # without the mask the padding changes the output: the test can tell


def test_pixart_generation_with_guidance_runs(pixart):
    _, run, _ = pixart
    request = Request(prompts=("a red dog",), negative_prompt="cat", guidance=4.0, sampler="ddim", steps=4,
                      step_schedule="leading", seed=1, num=2)
    out = generate(run, request)
    assert out.samples.shape == (2, 4, 8, 8) and torch.isfinite(out.samples).all()
    assert out.images.shape == (2, 3, 16, 16)
    again = generate(run, request)
    assert torch.equal(out.samples, again.samples)
    unguided = generate(run, Request(prompts=("a red dog",), sampler="ddim", steps=4, step_schedule="leading",
                                     seed=1, num=2))
    assert float((out.samples - unguided.samples).abs().max()) > 1e-4  # the guidance reaches the network


def test_legacy_transformer2d_dit_matches_diffusers(tmp_path):
    """A Transformer2DModel folder with norm_type ada_norm_zero and class labels (the legacy DiT form)."""
    folder = tiny_legacy_dit_dir(tmp_path, num_classes=10)
    assert json.loads((folder / "config.json").read_text())["_class_name"] == "Transformer2DModel"
    run = noisecraft.load(folder)
    assert run.data_shape == (4, 8, 8) and run.conditions.get("class") is not None
    dit = diffusers.Transformer2DModel.from_pretrained(folder, local_files_only=True)
    labels = torch.tensor([7, 10])
    abar = scheduler_for("ddpm").alphas_cumprod.double()
    err = denoiser_error(run, lambda x, t: dit(x, t, class_labels=labels).sample[:, :4], (2, 4, 8, 8), "epsilon",
                         abar, cond={"class_labels": labels})
    assert err <= 1e-5, err


def test_pixart_transformer_model_folder_loads(tmp_path):
    """A PixArt-style Transformer2DModel model folder alone (no pipeline) loads and matches per call with tokens."""
    folder = tmp_path / "pixart-net"
    tiny_pixart().save_pretrained(folder, safe_serialization=True)
    scheduler_for("ddpm").save_pretrained(folder)
    run = noisecraft.load(folder)
    net = diffusers.Transformer2DModel.from_pretrained(folder, local_files_only=True)
    tokens = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(2))
    err = denoiser_error(run, lambda x, t: net(x, encoder_hidden_states=tokens, timestep=t, added_cond_kwargs={
        "resolution": None, "aspect_ratio": None}).sample[:, :4], (2, 4, 8, 8), "epsilon",
        scheduler_for("ddpm").alphas_cumprod.double(), cond={"text_tokens": tokens})
    assert err <= 1e-5, err


def test_unsupported_transformer2d_form_is_one_line(tmp_path):
    folder = tmp_path / "t2d"
    folder.mkdir()
    (folder / "config.json").write_text('{"_class_name": "Transformer2DModel", "norm_type": "layer_norm", '
                                        '"sample_size": 8, "in_channels": 4}')
    one_line_error(folder, "norm_type 'layer_norm' is not supported; supported: ada_norm_zero.*ada_norm_single")


@pytest.mark.parametrize("strength", [0.5, 1 / 3])
def test_sdedit_matches_img2img_pipeline(tmp_path, strength):
    """SDEdit on a loaded SD run equals StableDiffusionImg2ImgPipeline (DDIM eta 0 on leading timesteps, guidance,
    negative prompt) given the same initial latents (the run's encoding, passed as 4-channel latents) and the same
    per-image generators: the pipeline runs timesteps[N - int(s N):] from add_noise(z, n, t_start), which is our
    x = z + sigma_{i0} n in the VP view, for strengths where int(s N) = round(s N)."""
    from noisecraft.editing.img2img import encode, img2img

    folder = tmp_path / "sd"
    tiny_sd_pipeline(tmp_path, "ddim").save_pretrained(folder, safe_serialization=True)
    run = noisecraft.load(folder)
    request = Request(prompts=("a red dog",), negative_prompt="cat", guidance=3.0, sampler="ddim", steps=6,
                      step_schedule="leading", seed=5, num=2)
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ours = img2img(run, image, request, strength)
    z = encode(run, image[None])
    pipe = diffusers.StableDiffusionImg2ImgPipeline.from_pretrained(folder, local_files_only=True)
    ref = pipe(["a red dog"] * 2, image=z.expand(2, -1, -1, -1), strength=strength, negative_prompt=["cat"] * 2,
               guidance_scale=3.0, num_inference_steps=6, generator=make_generators(5, 2), output_type="latent").images
    err = float((ours.samples - ref).abs().max())
    print(f"sdedit vs img2img pipeline, strength {strength:.3f}: max |latents difference| {err:.2e}")
    assert err <= 1e-4, err
