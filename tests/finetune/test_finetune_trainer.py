"""The fine-tuning loop: exact resume, textual inversion trains only the new rows (and its file loads in
diffusers), DreamBooth with prior preservation, full DreamBooth as a run, bad concept folders and tokens."""

import numpy as np
import pytest
import torch
from finetune_helpers import write_concept
from safetensors import safe_open

from noisecraft.errors import ConfigError, DataError, NoisecraftError
from noisecraft.finetune.embeddings import apply_embedding, load_embedding, text_parts
from noisecraft.finetune.lora import LoRAConfig, merge_lora
from noisecraft.finetune.trainer import FinetuneConfig, Finetuner, workdir
from noisecraft.pipelines import Request, generate, load

QUICK = dict(batch_size=2, sample_every=1000, sample_num=2, sample_steps=2, checkpoint_every=2)


def _config(base, images, **kw):
    return FinetuneConfig(base=str(base), images=str(images), **{**QUICK, **kw})


def _tensors(path):
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def test_resume_is_exact(text_base, concept, tmp_path):
    """DreamBooth (LoRA + prior preservation): 4 steps straight == 2 steps, then resumed to 4, bit for bit."""
    kw = dict(method="dreambooth", prompt="a sks glyph", class_prompt="a glyph", class_images=4,
              lora=LoRAConfig(rank=2, targets=("attention", "conv")))
    straight = tmp_path / "straight.safetensors"
    result = Finetuner(_config(text_base, concept, steps=4, **kw), straight, progress=False).run()
    assert result["step"] == 4
    split = tmp_path / "split.safetensors"
    Finetuner(_config(text_base, concept, steps=2, **kw), split, progress=False).run()
    first = next(k for k in _tensors(split) if k.endswith("lora_B.weight"))
    assert not torch.equal(_tensors(split)[first], _tensors(straight)[first])  # 2 steps are not 4
    Finetuner(_config(text_base, concept, steps=4, **kw), split, resume=True, progress=False).run()
    a, b = _tensors(straight), _tensors(split)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(k.endswith("lora_B.weight") and a[k].abs().max() > 0 for k in a)  # it trained
    assert (workdir(split) / "samples.png").is_file() and (workdir(split) / "class_images.safetensors").is_file()
    with pytest.raises(ConfigError, match="other prompt .*only steps, minutes, .* may change"):
        Finetuner(_config(text_base, concept, steps=6, **{**kw, "prompt": "a zwx glyph"}), split, resume=True,
                  progress=False)
    run = load(text_base)
    merge_lora(run, [(straight, 1.0)])  # the adapter loads back into the base


def test_grad_checkpointing_gives_the_same_adapter(text_base, concept, tmp_path):
    """Recomputing activations in backward changes memory, not the result: the same LoRA weights after 3 steps,
    for LoRA on attention + conv and for full DreamBooth's every weight."""
    for kw in (dict(method="lora", lora=LoRAConfig(rank=2, targets=("attention", "conv"))),
               dict(method="dreambooth", prompt="a sks glyph", full=True)):
        outs = []
        for ckpt in (False, True):
            out = tmp_path / f"{kw['method']}-{ckpt}{'' if kw.get('full') else '.safetensors'}"
            tuner = Finetuner(_config(text_base, concept, steps=3, grad_checkpointing=ckpt, **kw), out,
                              progress=False)
            tuner.run()
            outs.append({k: v.detach().clone() for k, v in tuner.trainable.items()})
        assert outs[0].keys() == outs[1].keys()
        for k in outs[0]:
            torch.testing.assert_close(outs[1][k], outs[0][k], rtol=0, atol=1e-6)
        assert any(not torch.equal(v, torch.zeros_like(v)) for k, v in outs[0].items() if "lora_B" in k) \
            or kw.get("full")


def test_textual_inversion_changes_only_the_new_rows(text_base, concept, tmp_path):
    run = load(text_base)
    tokenizer, model, _ = text_parts(run)
    table = model.get_input_embeddings().weight.detach().clone()
    out = tmp_path / "sks.safetensors"
    tuner = Finetuner(_config(text_base, concept, method="textual-inversion", prompt="a <sks> glyph", steps=3,
                              vectors=2, lr=0.05), out, run=run, progress=False)
    start = tuner.embedding.new.detach().clone()
    tuner.run()
    after = model.get_input_embeddings().weight.detach()
    assert after.shape[0] == table.shape[0] + 2
    assert torch.equal(after[:table.shape[0]], table)  # every old row bit-identical
    assert (after[table.shape[0]:] - start).abs().max() > 1e-4  # the new rows trained
    assert all(not p.requires_grad for p in run.denoiser.net.parameters())
    token, rows, info = load_embedding(out)
    assert token == "<sks>" and torch.equal(rows, after[table.shape[0]:]) and info["init_word"] == "glyph"
    assert list(_tensors(out)) == ["<sks>"]  # diffusers' {token: (n, D)} layout, one tensor (A1111 reads it too)

    other = load(text_base)
    assert apply_embedding(other, out) == "<sks>"
    condition = other.conditions.get("text")
    ours = condition.encode(["a <sks> glyph"])["text_tokens"]
    with pytest.raises(NoisecraftError, match="already exists"):
        apply_embedding(other, out)

    from diffusers.loaders import TextualInversionLoaderMixin

    fresh = load(text_base)
    tok, enc, _ = text_parts(fresh)
    class Pipeline(TextualInversionLoaderMixin):  # what the mixin reads of a pipeline: no device map, no parts
        hf_device_map, components = None, {}

    Pipeline().load_textual_inversion(str(out), tokenizer=tok, text_encoder=enc)
    batch = tok(["a <sks> <sks>_1 glyph"], return_tensors="pt")  # diffusers writes a multi-vector token out in full
    with torch.no_grad():
        theirs = enc(**batch).last_hidden_state
    assert (ours - theirs).abs().max() <= 1e-5


def test_full_dreambooth_writes_a_run(text_base, concept, tmp_path):
    out = tmp_path / "db-run"
    Finetuner(_config(text_base, concept, method="dreambooth", full=True, prompt="a sks glyph", steps=2), out,
              progress=False).run()
    tuned, base = load(out), load(text_base)
    old = base.denoiser.net.state_dict()
    changed = [k for k, v in tuned.denoiser.net.state_dict().items() if not torch.equal(v, old[k])]
    assert len(changed) > 10
    images = generate(tuned, Request(prompts=("a sks glyph",), num=2, steps=2)).images
    assert images.shape == (2, 1, 32, 32) and torch.isfinite(images).all()


def test_bad_concept_folders_say_what_was_found(text_base, tmp_path):
    from PIL import Image

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no pictures here")
    with pytest.raises(DataError, match=r"has no images .*notes\.txt"):
        Finetuner(_config(text_base, empty, prompt="a sks glyph"), tmp_path / "a.safetensors", progress=False)
    mixed = write_concept(tmp_path / "mixed", n=3)
    Image.fromarray(np.zeros((40, 24), np.uint8), "L").save(mixed / "odd.png")
    with pytest.raises(DataError, match=r"mixes image sizes: 3 of 32x32 .*1 of 24x40 \(e\.g\. odd\.png\)"):
        Finetuner(_config(text_base, mixed, prompt="a sks glyph"), tmp_path / "a.safetensors", progress=False)


def test_existing_placeholder_token_and_bad_options_are_refused(text_base, concept, tmp_path):
    with pytest.raises(NoisecraftError, match="'letter' already exists"):
        Finetuner(_config(text_base, concept, method="textual-inversion", token="letter", prompt="a letter glyph"),
                  tmp_path / "e.safetensors", progress=False)
    with pytest.raises(ConfigError, match="containing the placeholder token"):
        FinetuneConfig(method="textual-inversion", prompt="a glyph")
    with pytest.raises(ConfigError, match="unknown fine-tuning method 'hypernetwork'; allowed: lora, dreambooth"):
        FinetuneConfig(method="hypernetwork")
    with pytest.raises(NoisecraftError, match="target 'to_k' matches no layer"):
        Finetuner(_config(text_base, concept, lora=LoRAConfig(targets=("to_k",)), prompt="a glyph"),
                  tmp_path / "l.safetensors", progress=False)
