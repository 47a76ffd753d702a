"""`noisecraft finetune` and `noisecraft sample --lora / --embedding`: the files they write, --resume, errors as
one line."""

import torch
from safetensors import safe_open

from noisecraft.cli.main import main


def _tensors(path):
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def test_finetune_then_sample_with_lora_and_embedding(text_base, concept, tmp_path, capsys):
    common = ["--base", str(text_base), "--images", str(concept), "--batch-size", "2", "--sample-steps", "2",
              "--checkpoint-every", "1"]
    lora = tmp_path / "style.safetensors"
    args = ["finetune", *common, "--method", "lora", "--prompt", "a sks glyph", "--rank", "2", "--targets",
            "attention", "feedforward", "--out", str(lora)]
    assert main([*args, "--steps", "1"]) == 0
    assert main([*args, "--steps", "2", "--resume"]) == 0
    assert "fine-tuned to step 2" in capsys.readouterr().out
    assert (tmp_path / "style.safetensors.finetune" / "samples.png").is_file()
    emb = tmp_path / "sks.safetensors"
    assert main(["finetune", *common, "--method", "textual-inversion", "--prompt", "a <sks> glyph", "--steps", "1",
                 "--out", str(emb)]) == 0
    out = tmp_path / "grid.png"
    assert main(["sample", "--checkpoint", str(text_base), "--lora", f"{lora}:0.5", "--lora", f"{lora}:0.5",
                 "--embedding", str(emb), "--prompt", "a <sks> glyph", "--num", "2", "--steps", "2",
                 "--out", str(out)]) == 0
    assert out.is_file() and "loaded embedding '<sks>'" in capsys.readouterr().out
    assert all(torch.isfinite(t).all() for t in _tensors(lora).values())


def test_finetune_errors_are_one_line(text_base, tmp_path, capsys):
    empty = tmp_path / "none"
    empty.mkdir()
    code = main(["finetune", "--base", str(text_base), "--method", "lora", "--images", str(empty), "--steps", "1",
                 "--out", str(tmp_path / "a.safetensors")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("noisecraft: error: --images") and "has no images" in err
    assert main(["finetune", "--base", str(text_base), "--method", "lora", "--images", str(empty),
                 "--out", str(tmp_path / "a.safetensors")]) == 2
    assert "--steps N or --minutes M" in capsys.readouterr().err
