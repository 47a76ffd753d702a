"""Fine-tuning on the CPU: LoRA vs full fine-tuning (memory, steps/s), and each method teaching a text-to-image
glyph model a concept it never saw.

Base: a `glyphs-text` run (32x32 glyphs from matplotlib's fonts, MiniLM tokens). Concept: "framed" glyphs, a
letter inside a square frame 2 px from the border - no training glyph has a frame. The concept images are 12
DejaVu Sans capitals A-L with the frame; the prompts are the identifier prompt "sks sans capital letter" (LoRA,
DreamBooth; class prompt "sans capital letter" for prior preservation) and "<sks> sans capital letter" (textual
inversion, token initialised from "glyph").

Scores (64 samples per prompt set, Heun 18 steps, seeds 0..):

- concept rate: the fraction of samples with the identifier prompt that a small CNN, trained on framed glyphs
  (every font and character) vs the base's training glyphs, calls framed; the base's own rate on the same prompt
  is the reference;
- on other prompts (8 captions of the training set, 8 samples each): the class rate (the fraction the CNN calls
  un-framed: 1 - leakage of the concept) and FD (MNIST-net features, `noisecraft.eval`) against 512 training
  glyphs, for the base and after each method;
- memory and speed: one process per mode (LoRA rank 4 on attention, and every weight) on the same data, batch 4;
  memory = peak RSS of the process during training minus its RSS before the first step (`resource.getrusage`,
  so it includes activations, gradients and optimiser state; the base and the data are loaded before), steps/s
  over steps 5..N.

    python benchmarks/finetune.py --base runs/glyphs-text --out /tmp/finetune-bench --minutes 3
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

OTHER_PROMPTS = ("bold serif capital letter G", "mono digit 7", "italic sans small letter g", "serif capital letter B",
                 "sans digit 3", "bold sans capital letter R", "mono small letter a", "italic serif capital letter Q")
ID_PROMPT, CLASS_PROMPT, TI_PROMPT = "sks sans capital letter", "sans capital letter", "<sks> sans capital letter"


def framed(img: np.ndarray) -> np.ndarray:
    """A (32, 32) uint8 glyph with a 1-px square frame 2 px inside the border."""
    out = img.copy()
    out[2, 2:30] = out[29, 2:30] = out[2:30, 2] = out[2:30, 29] = 255
    return out


def renders(chars, fonts, seed=0) -> np.ndarray:
    from noisecraft.data.glyphs import FONTS, font_dir, render_glyph

    rng = np.random.default_rng(seed)
    out = []
    for f in fonts:
        for ch in chars:
            shift = tuple(rng.uniform(-1.5, 1.5, 2))
            out.append(render_glyph(str(font_dir() / FONTS[f][0]), ch, scale=rng.uniform(0.85, 1), shift=shift))
    return np.stack(out)


def write_concept(folder: Path) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(renders("ABCDEFGHIJKL", [0])):  # DejaVu Sans
        Image.fromarray(framed(img), "L").save(folder / f"{i:02d}.png")
    return folder


def to_tensor(u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(u8).float().div(127.5).sub(1).unsqueeze(1)  # (N, 1, 32, 32)


def glyph_data(n: int) -> torch.Tensor:
    from noisecraft.data import load_dataset

    images = load_dataset("glyphs", split="train").images.float()  # (N, 1, 32, 32) in [-1, 1]
    return images[torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:n]]


class ConceptNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.f = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                               nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                               nn.Linear(32 * 64, 2))

    def forward(self, x):
        return self.f(x)


def train_classifier(seed=0) -> tuple[ConceptNet, float]:
    """Framed renders (every font, every character) vs training glyphs; held-out accuracy."""
    import string

    from noisecraft.data.glyphs import FONTS

    g = torch.Generator().manual_seed(seed)
    chars = string.ascii_letters + string.digits
    pos = to_tensor(np.stack([framed(x) for x in renders(chars, range(len(FONTS)), seed=1)]))
    neg = glyph_data(len(pos))
    x, y = torch.cat([pos, neg]), torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))]).long()
    perm = torch.randperm(len(x), generator=g)
    x, y = x[perm], y[perm]
    cut = int(0.8 * len(x))
    net = ConceptNet()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for _ in range(3):
        for i in range(0, cut, 64):
            loss = nn.functional.cross_entropy(net(x[i:i + 64]), y[i:i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        acc = (net(x[cut:]).argmax(1) == y[cut:]).float().mean().item()
    return net.eval(), acc


def samples(run, prompts, per_prompt) -> torch.Tensor:
    from noisecraft.pipelines import Request, generate

    out = [generate(run, Request(prompts=(p,), num=per_prompt, seed=1000 * i)).images for i, p in enumerate(prompts)]
    return torch.cat(out).clamp(-1, 1)


def scores(run, clf, real_features, id_prompt) -> dict:
    from noisecraft.eval import fd
    from noisecraft.eval.features import get_extractor

    with torch.no_grad():
        concept = clf(samples(run, [id_prompt], 64)).argmax(1).float().mean().item()
        other = samples(run, OTHER_PROMPTS, 8)
        other_rate = 1 - clf(other).argmax(1).float().mean().item()
    return {"concept_rate": concept, "other_class_rate": other_rate,
            "other_fd": fd(get_extractor("mnist")(other), real_features)}


# ------------------------------------------------------------------------------------------ memory / speed
def proc_status_kib(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure(mode: str, base: str, images: str, steps: int, out: str) -> dict:
    """In this process: `steps` steps of LoRA or full fine-tuning (mode lora, full, lora-ckpt or full-ckpt: -ckpt
    with gradient checkpointing); the peak RSS during training minus the RSS before it, and steps/s."""
    from noisecraft.finetune.lora import LoRAConfig
    from noisecraft.finetune.trainer import FinetuneConfig, Finetuner

    torch.set_num_threads(1)
    full, ckpt = mode.startswith("full"), mode.endswith("-ckpt")
    config = FinetuneConfig(method="dreambooth", base=base, images=images, prompt=ID_PROMPT, full=full,
                            grad_checkpointing=ckpt,
                            lora=LoRAConfig(rank=4, targets=("attention",)), steps=steps, batch_size=4,
                            sample_every=10**6, checkpoint_every=10**6)
    tuner = Finetuner(config, out, progress=False)
    gc.collect()
    # the training's own peak: reset the process's high-water mark (VmHWM) after set-up, which can peak higher than
    # training (loading the base and its EMA, the text encoder, prior images); Linux >= 4.0 (/proc/PID/clear_refs)
    Path("/proc/self/clear_refs").write_text("5")
    before = proc_status_kib("VmRSS")
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        tuner.train_step()
        times.append(time.perf_counter() - t)
    peak = proc_status_kib("VmHWM")
    trainable = sum(p.numel() for p in tuner.trainable.values())
    params = sum(p.numel() for p in tuner.net.parameters())
    return {"mode": mode, "parameters": params, "trainable_parameters": trainable,
            "rss_delta_mib": (peak - before) / 1024, "peak_rss_mib": peak / 1024,
            "steps_per_s": (steps - 5) / sum(times[5:])}


def speed_memory(args, concept: Path) -> list[dict]:
    rows = []
    for mode in ("lora", "full", "lora-ckpt", "full-ckpt") if args.checkpointing else ("lora", "full"):
        cmd = [sys.executable, __file__, "--measure", mode, "--base", args.base, "--out", args.out,
               "--steps", str(args.steps)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    return rows


# ---------------------------------------------------------------------------------------- concept learning
def concept_runs(args, concept: Path) -> dict:
    from noisecraft.eval.features import get_extractor
    from noisecraft.finetune.embeddings import apply_embedding
    from noisecraft.finetune.lora import LoRAConfig, merge_lora
    from noisecraft.finetune.trainer import FinetuneConfig, Finetuner
    from noisecraft.pipelines import load

    torch.manual_seed(0)
    clf, acc = train_classifier()
    real = get_extractor("mnist")(glyph_data(512))
    results = {"classifier_accuracy": acc, "base": scores(load(args.base), clf, real, ID_PROMPT)}
    results["base_ti_prompt"] = scores(load(args.base), clf, real, ID_PROMPT.replace("sks", "glyph"))
    print(results, flush=True)
    out = Path(args.out)
    methods = {
        "lora": dict(method="lora", prompt=ID_PROMPT, lora=LoRAConfig(rank=8, targets=("attention", "conv"))),
        "dreambooth-lora-prior": dict(method="dreambooth", prompt=ID_PROMPT, class_prompt=CLASS_PROMPT,
                                      class_images=64, lora=LoRAConfig(rank=8, targets=("attention", "conv"))),
        "textual-inversion": dict(method="textual-inversion", prompt=TI_PROMPT, vectors=2),
        # gentler DreamBooth: attention only, rank 4, lr 2e-4, prior weight 2
        "dreambooth-lora-prior-gentle": dict(method="dreambooth", prompt=ID_PROMPT, class_prompt=CLASS_PROMPT,
                                             class_images=64, lr=2e-4, prior_weight=2.0,
                                             lora=LoRAConfig(rank=4, targets=("attention",))),
    }
    for name, kw in methods.items():
        if args.only and name not in args.only:
            continue
        path = out / (f"{name}.safetensors")
        t = time.monotonic()
        config = FinetuneConfig(base=args.base, images=str(concept), minutes=args.minutes, batch_size=4,
                                sample_every=10**6, checkpoint_every=100, **kw)
        result = Finetuner(config, path, progress=False).run()
        run = load(args.base)
        if name == "textual-inversion":
            apply_embedding(run, path)
        else:
            merge_lora(run, [(path, 1.0)])
        row = scores(run, clf, real, TI_PROMPT if name == "textual-inversion" else ID_PROMPT)
        results[name] = {**row, "steps": result["step"], "train_seconds": result["seconds"],
                         "wall_seconds": time.monotonic() - t}
        print(name, results[name], flush=True)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--minutes", type=float, default=3.0, help="fine-tuning minutes per method")
    p.add_argument("--steps", type=int, default=40, help="steps per mode of the memory / speed measurement")
    p.add_argument("--what", nargs="+", default=["speed", "concept"], choices=["speed", "concept"])
    p.add_argument("--only", nargs="*", help="concept methods to run (default all)")
    p.add_argument("--checkpointing", action="store_true",
                   help="speed: also measure both modes with gradient checkpointing")
    p.add_argument("--measure", help=argparse.SUPPRESS)
    args = p.parse_args()
    concept = write_concept(Path(args.out) / "concept")
    if args.measure:
        print(json.dumps(measure(args.measure, args.base, str(concept), args.steps,
                                 str(Path(args.out) / f"measure-{args.measure}"))))
        return
    torch.set_num_threads(1)
    results = {}
    if "speed" in args.what:
        results["speed_memory"] = speed_memory(args, concept)
    if "concept" in args.what:
        results["concept"] = concept_runs(args, concept)
    path = Path(args.out) / "finetune.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
