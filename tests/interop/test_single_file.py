"""Stable Diffusion single-file checkpoints: tiny SD 1.x / 2.x shaped diffusers models written in the original LDM
layout by us, read back by us and by diffusers' own single-file code with identical weights; pickles and
truncated files refused in one line."""

import json

import pytest
import torch

from noisecraft.errors import CheckpointError
from noisecraft.interop.single_file import (
    read_safetensors,
    read_single_file,
    single_file_to_diffusers_dir,
    write_single_file,
)

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
sfu = pytest.importorskip("diffusers.loaders.single_file_utils")


def _models(version: int):
    torch.manual_seed(version)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(16, 32, 32),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
        attention_head_dim=4 if version == 1 else (2, 4, 4), norm_num_groups=8,
        use_linear_projection=version == 2)
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=2, latent_channels=4,
        norm_num_groups=4, sample_size=16)
    text_cfg = transformers.CLIPTextConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2 if version == 1 else 3,
        num_attention_heads=4, max_position_embeddings=16, bos_token_id=0, eos_token_id=2, pad_token_id=1,
        hidden_act="quick_gelu" if version == 1 else "gelu", projection_dim=32)
    text = transformers.CLIPTextModel(text_cfg)
    with torch.no_grad():  # random norms and biases too, so a swapped name cannot go unnoticed
        for p in [*unet.parameters(), *vae.parameters(), *text.parameters()]:
            p.add_(torch.randn_like(p) * 0.1)
    return unet, vae, text


def _text_names(state: dict) -> dict:
    """CLIPTextModel weights under the `text_model.` names of SD pipeline folders (transformers >= 5.6 drops them)."""
    return {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in state.items()
            if not k.endswith("position_ids")}


def _same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    bad = [k for k in a if a[k].shape != b[k].shape or not torch.equal(a[k], b[k])]
    assert bad == []


@pytest.fixture(params=[1, 2], ids=["sd1", "sd2"])
def written(request, tmp_path):
    version = request.param
    unet, vae, text = _models(version)
    config_dir = tmp_path / "configs"
    unet.save_config(config_dir / "unet")
    vae.save_config(config_dir / "vae")
    text.config.save_pretrained(config_dir / "text_encoder")
    path = write_single_file(tmp_path / "sd.safetensors", unet=(unet.state_dict(), dict(unet.config)),
                             vae=(vae.state_dict(), dict(vae.config)),
                             text_encoder=(text.state_dict(), text.config.to_dict()), open_clip=version == 2)
    return version, path, config_dir, (unet, vae, text)


def test_original_layout_keys(written):
    version, path, _, (unet, vae, text) = written
    keys = set(read_safetensors(path))
    assert "model.diffusion_model.output_blocks.8.0.skip_connection.weight" in keys
    assert "model.diffusion_model.output_blocks.2.1.conv.weight" in keys  # UpBlock2D: upsampler at .1
    assert "model.diffusion_model.output_blocks.5.2.conv.weight" in keys  # CrossAttnUpBlock2D: at .2
    assert read_safetensors(path)["first_stage_model.encoder.mid.attn_1.q.weight"].shape == (16, 16, 1, 1)
    if version == 1:
        assert "cond_stage_model.transformer.text_model.final_layer_norm.weight" in keys
    else:
        assert read_safetensors(path)["cond_stage_model.model.transformer.resblocks.2.attn.in_proj_weight"].shape \
            == (96, 32)
    assert len(keys) == len(unet.state_dict()) + len(vae.state_dict()) + len(_text_names(text.state_dict())) \
        - (0 if version == 1 else 2 * 2 * text.config.num_hidden_layers)  # q/k/v weight and bias fused per layer


def test_read_back_by_us_identical(written):
    _, path, config_dir, (unet, vae, text) = written
    parts = read_single_file(path, config_dir)
    _same(parts["unet"], unet.state_dict())
    _same(parts["vae"], vae.state_dict())
    _same(parts["text_encoder"], _text_names(text.state_dict()))


def test_read_back_by_diffusers_conversion_functions_identical(written):
    """diffusers' own converters with the local configs give the same state dicts."""
    version, path, config_dir, (unet, vae, text) = written
    checkpoint = read_safetensors(path)
    _same(sfu.convert_ldm_unet_checkpoint(checkpoint, dict(unet.config)), unet.state_dict())
    _same(sfu.convert_ldm_vae_checkpoint(checkpoint, dict(vae.config)), vae.state_dict())
    if version == 1:
        theirs = sfu.convert_ldm_clip_checkpoint(checkpoint)
    else:
        theirs = sfu.convert_open_clip_checkpoint(text, checkpoint)
    _same(_text_names(theirs), _text_names(text.state_dict()))


def test_read_back_by_diffusers_single_file_loaders_offline(written):
    """`from_single_file` with a local config folder (local_files_only: no hub) loads the same weights."""
    version, path, config_dir, (unet, vae, text) = written
    u = diffusers.UNet2DConditionModel.from_single_file(str(path), config=str(config_dir), subfolder="unet",
                                                        local_files_only=True)
    _same(u.state_dict(), unet.state_dict())
    v = diffusers.AutoencoderKL.from_single_file(str(path), config=str(config_dir), subfolder="vae",
                                                 local_files_only=True)
    _same(v.state_dict(), vae.state_dict())
    t = sfu.create_diffusers_clip_model_from_ldm(transformers.CLIPTextModel, read_safetensors(path),
                                                 config=str(config_dir), subfolder="text_encoder",
                                                 local_files_only=True)
    _same(_text_names(t.state_dict()), _text_names(text.state_dict()))


def test_single_file_to_diffusers_dir_loads_with_diffusers(written, tmp_path):
    _, path, config_dir, (unet, vae, text) = written
    (config_dir / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    out = single_file_to_diffusers_dir(path, config_dir, tmp_path / "pipe")
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == "StableDiffusionPipeline"
    _same(diffusers.UNet2DConditionModel.from_pretrained(out / "unet").state_dict(), unet.state_dict())
    _same(diffusers.AutoencoderKL.from_pretrained(out / "vae").state_dict(), vae.state_dict())
    t = transformers.CLIPTextModel.from_pretrained(out / "text_encoder")
    _same(_text_names(t.state_dict()), _text_names(text.state_dict()))


@pytest.mark.parametrize("suffix", [".ckpt", ".bin", ".pt"])
def test_pickles_are_never_unpickled(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"\x80\x04 would run code")
    with pytest.raises(CheckpointError, match="never unpickled.*safetensors") as e:
        read_single_file(path, tmp_path)
    assert "\n" not in str(e.value)


def test_pickle_content_under_a_safetensors_name_is_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"PK\x03\x04 torch.save zip")
    with pytest.raises(CheckpointError, match="pickle.*never unpickled"):
        read_safetensors(path)


def test_truncated_file_is_a_one_line_error(written, tmp_path):
    _, path, config_dir, _ = written
    data = path.read_bytes()
    for cut in (len(data) // 2, 5):
        short = tmp_path / f"short{cut}.safetensors"
        short.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated or corrupt") as e:
            read_single_file(short, config_dir)
        assert "\n" not in str(e.value)


def test_wrong_config_names_the_leftover_weights(written, tmp_path):
    _, path, config_dir, (unet, _, _) = written
    cfg = json.loads((config_dir / "unet" / "config.json").read_text())
    (config_dir / "unet" / "config.json").write_text(json.dumps(cfg | {"layers_per_block": 1}))
    with pytest.raises(CheckpointError, match="UNet .* the config does not account for"):
        read_single_file(path, config_dir)


def test_sd2_penultimate_layer_config_leaves_the_last_layer(written):
    """SD 2.x's text encoder config has one layer fewer than OpenCLIP's tower (it uses the penultimate layer)."""
    version, path, config_dir, (_, _, text) = written
    if version == 1:
        pytest.skip("SD 2.x only")
    cfg = json.loads((config_dir / "text_encoder" / "config.json").read_text())
    (config_dir / "text_encoder" / "config.json").write_text(json.dumps(cfg | {"num_hidden_layers": 2}))
    ours = read_single_file(path, config_dir)["text_encoder"]
    expected = {k: v for k, v in _text_names(text.state_dict()).items() if ".layers.2." not in k}
    _same(ours, expected)


def test_extra_keys_of_real_checkpoints_are_left(written, tmp_path):
    """Full SD checkpoints also hold the DDPM buffers, EMA bookkeeping, the VAE's training loss and CLIP's
    position_ids: none of them is a model weight, and reading leaves them."""
    from safetensors.torch import save_file

    version, path, config_dir, (unet, vae, _) = written
    checkpoint = read_safetensors(path) | {"betas": torch.rand(10), "alphas_cumprod": torch.rand(10),
                                           "model_ema.decay": torch.tensor(0.9999),
                                           "first_stage_model.loss.logvar": torch.zeros(())}
    if version == 1:
        checkpoint["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(16)[None]
    save_file(checkpoint, tmp_path / "full.safetensors")
    parts = read_single_file(tmp_path / "full.safetensors", config_dir)
    _same(parts["unet"], unet.state_dict())
    _same(parts["vae"], vae.state_dict())


def test_single_file_loads_as_a_run_and_samples_as_its_pipeline_folder(tmp_path, capsys):
    """noisecraft.load(sd.safetensors, config_dir=...) and `noisecraft sample --checkpoint sd.safetensors
    --config-dir DIR` give the run of the pipeline folder the file was written from, image for image."""
    from diffusers_tiny import tiny_sd_pipeline
    from PIL import Image

    import noisecraft
    from noisecraft.cli.main import main
    from noisecraft.pipelines import Request, generate

    pipe = tiny_sd_pipeline(tmp_path)
    folder = tmp_path / "pipe"
    pipe.save_pretrained(folder, safe_serialization=True)
    path = write_single_file(tmp_path / "sd.safetensors",
                             unet=(pipe.unet.state_dict(), dict(pipe.unet.config)),
                             vae=(pipe.vae.state_dict(), dict(pipe.vae.config)),
                             text_encoder=(_text_names(pipe.text_encoder.state_dict()),
                                           pipe.text_encoder.config.to_dict()))
    request = Request(prompts=("a cat",), negative_prompt="a dog", guidance=3.0, steps=3, num=2, seed=1)
    from_file = generate(noisecraft.load(path, config_dir=folder), request).images
    from_folder = generate(noisecraft.load(folder), request).images
    assert torch.equal(from_file, from_folder)
    base = ["sample", "--checkpoint", str(path), "--prompt", "a cat", "--steps", "2", "--num", "1"]
    assert main([*base, "--config-dir", str(folder), "--out", str(tmp_path / "s.png")]) == 0
    assert Image.open(tmp_path / "s.png").size[0] > 0
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "t.png")]) == 2  # no configs: named, nothing downloaded
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("noisecraft:")]
    assert len(err) == 1 and "--config-dir" in err[0]
