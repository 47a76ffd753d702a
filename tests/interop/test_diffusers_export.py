"""A noisecraft run as a diffusers DDPMPipeline folder: diffusers' own loaders read it and compute the same
function; importing it back gives bit-identical weights and samples; what has no counterpart is refused."""

import json
from dataclasses import replace

import pytest
import torch

from noisecraft.core.denoiser import Denoiser
from noisecraft.core.prediction import Prediction
from noisecraft.errors import CheckpointError, NoisecraftError
from noisecraft.interop.diffusers_export import (
    export_diffusers,
    from_diffusers_unet2d,
    import_schedule,
    import_unet2d,
    to_diffusers_unet2d,
    unet2d_config,
    unet_config_from_diffusers,
)
from noisecraft.models.unet import UNET_PRESETS, UNet
from noisecraft.pipelines import Request, generate, load
from noisecraft.presets import get_preset
from noisecraft.runconfig import DiffusionConfig
from noisecraft.schedules.training import EDMSchedule, FlowSchedule
from noisecraft.training.trainer import Trainer

diffusers = pytest.importorskip("diffusers")
TINY = UNET_PRESETS["tiny"]


def _randomize(module, seed=0, std=0.2):
    """Random weights everywhere (the zero-initialised output layers would hide mapping errors)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 2-step linear-beta eps run on 8x8 digits with random weights (so every layer matters)."""
    c = get_preset("digits")
    c = replace(c, diffusion=DiffusionConfig(schedule="linear", prediction="eps"),
                network=replace(c.network, base_channels=8, channel_mult=(1, 2), attention_levels=(1,),
                                head_channels=4, norm_groups=4, num_res_blocks=1),
                data=replace(c.data, limit=32),
                train=replace(c.train, batch_size=8, steps=2, minutes=None, checkpoint_every=2, threads=1))
    out = tmp_path_factory.mktemp("run")
    Trainer(c, out, progress=False).run()
    r = load(out)
    _randomize(r.denoiser.net, seed=3)
    return r


@pytest.fixture(scope="module")
def folder(run, tmp_path_factory):
    return export_diffusers(run, tmp_path_factory.mktemp("export") / "pipe")


def _input(shape, batch=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *shape, generator=g)


def test_diffusers_pipeline_loads_and_computes_the_same_function(run, folder):
    pipe = diffusers.DDPMPipeline.from_pretrained(folder)
    assert isinstance(pipe.unet, diffusers.UNet2DModel) and isinstance(pipe.scheduler, diffusers.DDPMScheduler)
    net = run.denoiser.net
    x, t = _input(run.data_shape), torch.tensor([0, 417, 999])
    with torch.no_grad():
        ours, theirs = net(x, t.float()), pipe.unet(x, t).sample
    assert (ours - theirs).abs().max() <= 1e-5
    assert ours.abs().max() > 0.1  # a non-trivial output
    # the scheduler has our betas and prediction: diffusers' x0 estimate = our denoiser's, in the VE view
    sched = pipe.scheduler
    s = run.denoiser.schedule
    assert sched.config.prediction_type == "epsilon" and sched.config.num_train_timesteps == s.num_timesteps
    assert torch.equal(sched.betas, s.betas.float())
    torch.testing.assert_close(sched.alphas_cumprod.double(), s.alphas_cumprod, rtol=1e-5, atol=0)
    for i, step in enumerate((5, 500, 990)):
        with torch.no_grad():
            eps = pipe.unet(x[i:i + 1], step).sample
            x0_theirs = sched.step(eps, step, x[i:i + 1]).pred_original_sample
            abar = s.alphas_cumprod[step]
            x0_ours = run.denoiser(x[i:i + 1].double() / abar.sqrt(), s.sigmas[step])  # x_VE = x_VP / sqrt(abar)
        scale = float(x0_ours.abs().max())
        torch.testing.assert_close(x0_theirs.double(), x0_ours.double(), rtol=1e-4, atol=1e-4 * scale)
    images = pipe(batch_size=2, num_inference_steps=3, generator=torch.Generator().manual_seed(0),
                  output_type="np").images
    assert images.shape == (2, 8, 8, 1)


def test_scheduler_config_reads_as_ddim_too(run, folder):
    ddim = diffusers.DDIMScheduler.from_pretrained(folder, subfolder="scheduler")
    assert torch.equal(ddim.betas, run.denoiser.schedule.betas.float())
    assert ddim.config.prediction_type == "epsilon"


def test_round_trip_bit_identical_weights_and_samples(run, folder):
    net = import_unet2d(folder)
    ours = run.denoiser.net.state_dict()
    back = net.state_dict()
    assert back.keys() == ours.keys()
    assert all(torch.equal(back[k], ours[k]) for k in ours)
    assert net.config == run.denoiser.net.config
    schedule, prediction = import_schedule(folder)
    assert torch.equal(schedule.betas, run.denoiser.schedule.betas) and prediction.kind == "eps"
    imported = replace(run, denoiser=Denoiser(net, schedule, prediction).eval())
    req = Request(num=3, seed=5, steps=4, sampler="heun")
    a, b = generate(run, req).images, generate(imported, req).images
    assert torch.equal(a, b)


@pytest.mark.parametrize("scale_shift", [True, False])
def test_class_conditional_maps_onto_num_class_embeds(scale_shift):
    """Our class embedding (label K = null) is UNet2DModel's class_embedding with num_class_embeds K + 1."""
    cfg = replace(TINY, num_classes=3, channel_mult=(1, 2, 2), attention_levels=(1, 2), head_channels=4,
                  scale_shift_norm=scale_shift, num_res_blocks=2, mid_attention=not scale_shift)
    ours = _randomize(UNet(cfg), seed=4).eval()
    theirs = diffusers.UNet2DModel.from_config(unet2d_config(cfg)).eval()
    theirs.load_state_dict(to_diffusers_unet2d(cfg, ours.state_dict()), strict=True)
    x, t = _input((1, 8, 8), batch=4), torch.tensor([3, 100, 600, 999])
    labels = torch.tensor([0, 1, 2, 3])  # 3 = the null label
    with torch.no_grad():
        diff = (ours(x, t.float(), {"class_labels": labels}) - theirs(x, t, class_labels=labels).sample).abs().max()
    assert diff <= 1e-5
    back = from_diffusers_unet2d(cfg, theirs.state_dict())
    assert back.keys() == ours.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in ours.state_dict().items())
    assert unet_config_from_diffusers(dict(theirs.config)) == cfg


@pytest.mark.parametrize("change, part", [
    (dict(dims=1), "1-D U-Net"),
    (dict(context_dim=16), "text cross-attention"),
    (dict(concat_channels=1), "concatenated input channels"),
    (dict(vector_dim=4), "vector input"),
])
def test_networks_without_a_counterpart_are_refused(change, part):
    with pytest.raises(NoisecraftError, match=f"{part}.*supported: model 'unet' with dims 2"):
        unet2d_config(replace(TINY, **change))


@pytest.mark.parametrize("schedule, prediction", [(EDMSchedule(), "edm"), (FlowSchedule(), "flow")])
def test_continuous_schedules_are_refused(run, tmp_path, schedule, prediction):
    other = replace(run, denoiser=Denoiser(run.denoiser.net, schedule, Prediction(prediction)))
    with pytest.raises(NoisecraftError, match=f"'{schedule.name}' schedule.*discrete beta schedule"):
        export_diffusers(other, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_other_models_are_refused(run, tmp_path):
    with pytest.raises(NoisecraftError, match="model 'dit' .DiT variants.*supported"):
        export_diffusers(replace(run, config=get_preset("mnist-dit")), tmp_path / "x")
    text_net = UNet(replace(TINY, context_dim=16))
    with pytest.raises(NoisecraftError, match="text cross-attention.*UNet2DConditionModel"):
        export_diffusers(replace(run, denoiser=Denoiser(text_net, run.denoiser.schedule, Prediction("eps"))),
                         tmp_path / "x")
    with pytest.raises(NoisecraftError, match="latent run"):
        export_diffusers(replace(run, autoencoder=object()), tmp_path / "x")


def test_import_refuses_variants_and_pickles(folder, tmp_path):
    cfg = json.loads((folder / "unet" / "config.json").read_text())
    with pytest.raises(CheckpointError, match="time_embedding_type = 'fourier' is not supported"):
        unet_config_from_diffusers(cfg | {"time_embedding_type": "fourier"})
    with pytest.raises(CheckpointError, match="block types"):
        unet_config_from_diffusers(cfg | {"down_block_types": ["SkipDownBlock2D", "AttnDownBlock2D"]})
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "diffusion_pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(CheckpointError, match="pickle file and is never loaded"):
        import_unet2d(tmp_path)
