"""MMDiT vs the text U-Net on the scenes (and MMDiT on MNIST-as-text) at equal CPU time (benchmarks/transformers.md,
"MMDiT"; issue 26).

    python benchmarks/mmdit_scenes.py train --preset scenes-text --cpu-minutes 15 --out runs/mmdit-unet
    python benchmarks/mmdit_scenes.py train --preset scenes-text-mmdit --cpu-minutes 15 --out runs/mmdit-scenes
    python benchmarks/mmdit_scenes.py scenes runs/mmdit-unet runs/mmdit-scenes --num 200 \\
        --grid benchmarks/mmdit_scenes_{name}.png
    python benchmarks/mmdit_scenes.py train --preset mnist-text-mmdit --cpu-minutes 8 --out runs/mmdit-mnist
    python benchmarks/mmdit_scenes.py mnist runs/mmdit-mnist --num 500 --grid benchmarks/mmdit_mnist.png

`train`: one torch thread, stops after a budget of process CPU seconds (`time.process_time`, counted from the
first step: building the trainer, loading the data and caching the MiniLM text tokens are outside it), as
benchmarks/transformers_dit.py does, because the 2-core machine is shared and wall budgets are not comparable.

`scenes`: the prompts of benchmarks/guidance.py (`num` captions of the scene grammar, prompt seed 777),
classifier-free guidance w (default 3), no layout planner; each sample i uses seed i. Two sampler settings per
run: the recipe of benchmarks/guidance.py and scenes_text.md (dpmpp_2m, 20 Karras steps) and the run's own preset
sampler (`sample.sampler` / `steps` / `step_schedule`: euler, 30 uniform-t steps for the MMDiT presets). Scored by
`noisecraft.eval.adherence.prompt_adherence` (full prompt: count, layout and order, colour, shape and size of
every object) and the FD in the scene classifier's features against the test split; sampling speed is reported
as images per process CPU-second on one thread (guided: 2 NFE per step).

`mnist`: image i asks for "the digit <word>" with digit i mod 10 (`noisecraft.data.mnist_text.digit_caption`),
guidance w (default 2), dpmpp_2m with 20 Karras steps as transformers_dit.py; the score is the fraction that
noisecraft's separate MNIST classifier assigns to the requested digit, and the FD in its 128-d features against
the MNIST train split. Results go to benchmarks/results/mmdit_scenes.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cpu_budget import meta, record, train_preset_command

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "mmdit_scenes.json"


def _meta(argv) -> dict:
    return meta("mmdit_scenes.py", argv)


def _record(key: str, value: dict) -> None:
    record(RESULTS, key, value)


def cmd_train(args, argv) -> None:
    train_preset_command("mmdit_scenes.py", RESULTS, args, argv)


def _sample(loaded, request) -> tuple[torch.Tensor, float]:
    """Images of request, clamped to [-1, 1] as written to PNG, and the process CPU-seconds they took."""
    from noisecraft.pipelines import generate

    c0 = time.process_time()
    with torch.no_grad():
        images = generate(loaded, request).images
    return images.clamp(-1, 1), time.process_time() - c0


def _settings(loaded) -> list[dict]:
    s = loaded.config.sample
    rows = [dict(sampler="dpmpp_2m", steps=20, step_schedule="karras")]
    own = dict(sampler=s.sampler, steps=s.steps, step_schedule=s.step_schedule)
    return rows + ([own] if own != rows[0] else [])


def cmd_scenes(args, argv) -> None:
    from noisecraft.data import load_dataset
    from noisecraft.data.scenes import random_spec
    from noisecraft.eval import fd
    from noisecraft.eval.adherence import load_scene_classifier, prompt_adherence, scene_features
    from noisecraft.pipelines import Request, load
    from noisecraft.viz import grid_image, save_png

    torch.set_num_threads(1)
    net = load_scene_classifier()
    rng = np.random.default_rng(777)
    specs = [random_spec(rng) for _ in range(args.num)]
    prompts = tuple(s.caption() for s in specs)
    ref = scene_features(load_dataset("scenes", split="test").images, net).double().numpy()
    for run in args.runs:
        loaded = load(run)
        for setting in _settings(loaded):
            request = Request(prompts=prompts, guidance=args.guidance, seed=0, num=args.num,
                              batch_size=args.batch_size, **setting)
            images, cpu_s = _sample(loaded, request)
            score = prompt_adherence(images, specs, net)
            row = {"run": run, "config": loaded.config.name, "step": loaded.step, "guidance": args.guidance,
                   **setting, "num": args.num, "adherence": score["adherence"],
                   "per_attribute": score["per_attribute"], "fd": fd(scene_features(images, net), ref),
                   "images_per_cpu_s": args.num / cpu_s, "meta": _meta(argv)}
            label = f"{setting['sampler']} {setting['steps']} {setting['step_schedule']}"
            print(f"{run} ({loaded.config.name}, step {loaded.step}, {label}): full prompt {row['adherence']:.1%} "
                  f"{ {k: round(v, 3) for k, v in score['per_attribute'].items()} }, FD {row['fd']:.1f}, "
                  f"{row['images_per_cpu_s']:.2f} images/CPU-s", flush=True)
            _record(f"scenes {run} {label} w={args.guidance:g} n={args.num}", row)
            if args.grid and setting == _settings(loaded)[0]:
                path = Path(args.grid.format(name=Path(run).name))
                save_png(grid_image(images[:40], nrow=10), path, scale=2,
                         info={"run": run, "step": loaded.step, "guidance": args.guidance, "sampler": label,
                               "prompts": list(prompts[:40])})


def cmd_mnist(args, argv) -> None:
    from noisecraft.data.mnist_text import digit_caption
    from noisecraft.eval import fd, get_extractor, load_reference
    from noisecraft.eval.mnist_net import load_mnist_classifier
    from noisecraft.pipelines import Request, load
    from noisecraft.viz import grid_image, save_png

    torch.set_num_threads(1)
    clf = load_mnist_classifier().eval()
    extractor = get_extractor("mnist")
    ref = load_reference("mnist", extractor, split="train")
    wanted = torch.arange(args.num) % 10
    prompts = tuple(digit_caption(int(d)) for d in wanted)
    for run in args.runs:
        loaded = load(run)
        request = Request(prompts=prompts, guidance=args.guidance, sampler="dpmpp_2m", steps=20,
                          step_schedule="karras", seed=0, num=args.num, batch_size=args.batch_size)
        images, cpu_s = _sample(loaded, request)
        with torch.no_grad():
            predicted = clf(images)[1].argmax(1)
        row = {"run": run, "config": loaded.config.name, "step": loaded.step, "guidance": args.guidance,
               "num": args.num, "class_rate": float((predicted == wanted).float().mean()),
               "fd": fd(extractor(images), ref.features), "images_per_cpu_s": args.num / cpu_s, "meta": _meta(argv)}
        print(f"{run} (step {loaded.step}): class rate {row['class_rate']:.1%}, FD {row['fd']:.2f}, "
              f"{row['images_per_cpu_s']:.2f} images/CPU-s", flush=True)
        _record(f"mnist {run} w={args.guidance:g} n={args.num}", row)
        if args.grid:
            save_png(grid_image(images[:40], nrow=10), Path(args.grid.format(name=Path(run).name)), scale=2,
                     info={"run": run, "step": loaded.step, "guidance": args.guidance,
                           "rows": "'the digit zero' .. 'the digit nine', 4 seeds"})


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a preset for a budget of CPU minutes (1 thread)")
    t.add_argument("--preset", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--cpu-minutes", type=float, default=15.0)
    t.add_argument("overrides", nargs="*", help="section.field=value config overrides")
    for name, w, n in (("scenes", 3.0, 200), ("mnist", 2.0, 500)):
        e = sub.add_parser(name)
        e.add_argument("runs", nargs="+")
        e.add_argument("--num", type=int, default=n)
        e.add_argument("--guidance", type=float, default=w)
        e.add_argument("--batch-size", type=int, default=100)
        e.add_argument("--grid", help="PNG of the first 40 samples; {name} is the run folder's name")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    {"train": cmd_train, "scenes": cmd_scenes, "mnist": cmd_mnist}[args.cmd](args, argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
