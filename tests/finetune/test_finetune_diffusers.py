"""Fine-tuning a loaded diffusers pipeline (a tiny Stable Diffusion: UNet2DConditionModel, CLIP, VAE): a LoRA on
its attention layers trains, and diffusers' own loader reads the file with the same outputs; textual inversion
adds a CLIP token."""

import pytest
import torch
from finetune_helpers import write_concept

from noisecraft.errors import NoisecraftError
from noisecraft.finetune.embeddings import load_embedding, text_parts
from noisecraft.finetune.lora import LoRAConfig, add_lora, merge_lora, network_of
from noisecraft.finetune.trainer import FinetuneConfig, Finetuner
from noisecraft.pipelines import load

diffusers = pytest.importorskip("diffusers")
tiny = pytest.importorskip("diffusers_tiny")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    return tiny.tiny_sd_pipeline_dir(tmp_path_factory.mktemp("sd"))


def _concept(tmp_path, run):
    from PIL import Image

    from noisecraft.pipelines.run import image_shape

    c, h, w = image_shape(run.data_shape, run.autoencoder)
    folder = write_concept(tmp_path / "concept", n=4, size=h)
    for f in folder.iterdir():
        Image.open(f).convert("RGB" if c == 3 else "L").save(f)
    return folder


def test_lora_on_a_diffusers_unet_loads_in_diffusers(pipeline, tmp_path):
    run = load(pipeline)
    component, unet = network_of(run)
    assert component == "unet" and type(unet).__name__ == "UNet2DConditionModel"
    probe = network_of(load(pipeline))[1]
    layers = add_lora(probe, LoRAConfig(rank=2))
    assert len(layers) == 32 and all(n.rsplit(".", 1)[-1] in ("to_q", "to_k", "to_v", "0") for n in layers)
    with pytest.raises(NoisecraftError, match="already has LoRA layers"):
        add_lora(probe, LoRAConfig(rank=2))
    fresh = load(pipeline)
    out = tmp_path / "sd-lora.safetensors"
    config = FinetuneConfig(method="lora", base=str(pipeline), images=str(_concept(tmp_path, run)),
                            prompt="a sks picture", steps=2, batch_size=2, lr=0.05, sample_num=1, sample_steps=2)
    Finetuner(config, out, run=fresh, progress=False).run()

    theirs = diffusers.UNet2DConditionModel.from_pretrained(pipeline / "unet").eval()
    theirs.load_lora_adapter(str(tmp_path), weight_name=out.name, prefix="unet")
    merge_lora(run, [(out, 1.0)])
    g = torch.Generator().manual_seed(0)
    x, t, ctx = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([10, 700]), torch.randn(2, 77, 32, generator=g)
    with torch.no_grad():
        a = unet(x, t, encoder_hidden_states=ctx).sample
        b = theirs(x, t, encoder_hidden_states=ctx).sample
        base = diffusers.UNet2DConditionModel.from_pretrained(pipeline / "unet").eval()(x, t, ctx).sample
    assert (a - b).abs().max() <= 1e-5
    assert (a - base).abs().max() > 1e-4  # it trained


def test_textual_inversion_on_a_clip_pipeline(pipeline, tmp_path):
    run = load(pipeline)
    tokenizer, model, _ = text_parts(run)
    rows = model.get_input_embeddings().weight.detach().clone()
    out = tmp_path / "sd-sks.safetensors"
    config = FinetuneConfig(method="textual-inversion", base=str(pipeline), images=str(_concept(tmp_path, run)),
                            prompt="a <sks> picture", init_word="a", steps=2, batch_size=2, lr=0.05, sample_num=1,
                            sample_steps=2)
    Finetuner(config, out, run=run, progress=False).run()
    after = model.get_input_embeddings().weight.detach()
    assert torch.equal(after[:len(rows)], rows) and after.shape[0] == len(rows) + 1
    token, vectors, _ = load_embedding(out)
    assert token == "<sks>" and vectors.shape == (1, 32)
