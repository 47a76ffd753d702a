"""Classifier-free guidance on trained models: does the sample show what was asked for, and at what cost
in distribution match?

    python benchmarks/guidance.py --mnist RUN_DIR --scenes RUN_DIR [--num 300] [--scales 0 1 2 3 4 6]
    python benchmarks/guidance.py --from-json benchmarks/results/guidance.json      # re-render only

MNIST (a class-conditional run, e.g. preset mnist-class): image i asks for digit i mod 10; the score is the
fraction that noisecraft's separate MNIST classifier (`noisecraft.eval` features "mnist", trained on real
digits only) assigns to the requested digit, and the Frechet distance in that classifier's feature space
against the MNIST train split (reference statistics of all 4500 images).

Scenes (a text-to-image run, e.g. preset scenes-text): `num` captions drawn from the scene grammar with a
seed unrelated to the training set; the score is the fraction of prompts fully satisfied according to
the attribute classifier of `noisecraft.eval.adherence` (count, layout and order, colour, shape and size of
every object), with the per-attribute accuracies; the Frechet distance is taken in that classifier's
256-d feature space against the scenes test split. Rendered scenes scored the same way give the metric's
ceiling, and two disjoint sets of real scenes the FD floor at this sample size.

Every sample i uses its own generator (seed + i), so the same noise is used at every scale. Writes
benchmarks/guidance.md (tables), benchmarks/guidance.png (plot), benchmarks/guidance_{mnist,scenes}.png
(grids: one row per scale, the same requests in each column) and the raw figures in
benchmarks/results/guidance.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
GRID_COLUMNS = 10


def _generate(run, request, num: int, args) -> tuple[torch.Tensor, float]:
    """num images of request (Karras steps, the benchmark's sampler and seed), decoded for a latent run (timed:
    part of generation), clamped to [-1, 1] as written to PNG (guided samples overshoot)."""
    from noisecraft.pipelines import generate

    request = replace(request, sampler=args.sampler, steps=args.steps, step_schedule="karras", seed=args.seed,
                      num=num, batch_size=args.batch_size)
    t0 = time.monotonic()
    with torch.no_grad():
        images = generate(run, request, draw=not args.mean_layout).images
    return images.clamp(-1, 1), time.monotonic() - t0


def _settings(scales: list[float], extra: bool) -> list[dict]:
    """One dict per row: plain scales, plus (with extra) interval and rescale variants at the middle scale."""
    rows = [{"guidance": w} for w in scales]
    if extra:
        w = 3.0
        rows += [{"guidance": w, "guidance_interval": (0.28, 5.42)},  # Kynkaanniemi et al. 2024's EDM2-S band
                 {"guidance": w, "guidance_rescale": 0.7}]             # Lin et al. 2024's phi
    return rows


def _label(row: dict) -> str:
    label = f"w = {row['guidance']:g}"
    if "guidance_interval" in row:
        label += " in sigma [{:g}, {:g}]".format(*row["guidance_interval"])
    if "guidance_rescale" in row:
        label += f", rescale {row['guidance_rescale']:g}"
    return label


def bench_mnist(run: str, args) -> dict:
    from noisecraft.eval import fd, get_extractor, load_reference
    from noisecraft.eval.mnist_net import load_mnist_classifier
    from noisecraft.pipelines import Request, load

    loaded = load(run)
    clf = load_mnist_classifier().eval()
    extractor = get_extractor("mnist")
    ref = load_reference("mnist", extractor, split="train")
    wanted = torch.arange(args.num) % 10
    rows, grid = [], []
    for setting in _settings(args.scales, args.extra):
        request = Request(class_ids=tuple(wanted.tolist()), **setting)
        images, seconds = _generate(loaded, request, args.num, args)
        with torch.no_grad():
            predicted = clf(images)[1].argmax(1)
        feats = extractor(images)
        rows.append({"setting": setting, "label": _label(setting), "accuracy": float((predicted == wanted).float()
                                                                                       .mean()),
                     "per_class": [float((predicted[wanted == c] == c).float().mean()) for c in range(10)],
                     "fd": fd(feats, ref.features),
                     "seconds": round(seconds, 1)})
        grid.append(images[:GRID_COLUMNS])
        print(f"mnist {rows[-1]['label']}: accuracy {rows[-1]['accuracy']:.4f}, FD {rows[-1]['fd']:.3f}", flush=True)
    _save_grid(grid, args.out / "guidance_mnist.png", [r["label"] for r in rows])
    return {"run": run, "model_step": loaded.step, "config": loaded.config.name, "rows": rows}


def bench_scenes(run: str, args) -> dict:
    from noisecraft.data import load_dataset
    from noisecraft.data.scenes import random_spec
    from noisecraft.eval import fd
    from noisecraft.eval.adherence import load_scene_classifier, prompt_adherence, scene_features
    from noisecraft.pipelines import Request, load

    loaded = load(run)
    net = load_scene_classifier()
    rng = np.random.default_rng(args.prompt_seed)
    specs = [random_spec(rng) for _ in range(args.num)]
    prompts = tuple(s.caption() for s in specs)
    test = load_dataset("scenes", split="test")
    ref = scene_features(test.images, net).double().numpy()
    real = load_dataset("scenes", split="train", limit=args.num)  # real scenes: the metric's ceiling and FD floor
    ceiling = prompt_adherence(real.images, real.captions, net)
    rows = [{"label": "real scenes (train split)", "adherence": ceiling["adherence"],
             "per_attribute": ceiling["per_attribute"], "fd": fd(scene_features(real.images, net), ref)}]
    if loaded.autoencoder is not None:  # a latent model cannot beat its autoencoder's reconstructions
        from noisecraft.autoencoder.latents import encode_images

        with torch.no_grad():
            recon = loaded.to_images(encode_images(loaded.autoencoder, real.images, progress=False)).clamp(-1, 1)
        score = prompt_adherence(recon, real.captions, net)
        rows.append({"label": "autoencoder reconstructions of those scenes", "adherence": score["adherence"],
                     "per_attribute": score["per_attribute"], "fd": fd(scene_features(recon, net), ref)})
    planner = _planner_relation(loaded, specs, args) if loaded.layout is not None else None
    grid = []
    for setting in _settings(args.scales, args.extra):
        images, seconds = _generate(loaded, Request(prompts=prompts, **setting), args.num, args)
        result = prompt_adherence(images, specs, net)
        rows.append({"setting": setting, "label": _label(setting), "adherence": result["adherence"],
                     "per_attribute": result["per_attribute"], "fd": fd(scene_features(images, net), ref),
                     "seconds": round(seconds, 1)})
        grid.append(images[:GRID_COLUMNS])
        print(f"scenes {rows[-1]['label']}: adherence {rows[-1]['adherence']:.4f} {result['per_attribute']}, "
              f"FD {rows[-1]['fd']:.3f}", flush=True)
    _save_grid(grid, args.out / "guidance_scenes.png", [r["label"] for r in rows if "setting" in r])
    return {"run": run, "model_step": loaded.step, "config": loaded.config.name, "rows": rows,
            "grid_prompts": list(prompts[:GRID_COLUMNS]), "prompt_seed": args.prompt_seed,
            **({"planner_relation": planner} if planner is not None else {})}


def _planner_relation(loaded, specs, args) -> float:
    """A layout-grounded run (conditioning.layout): the share of two-object prompts whose boxes - the layouts the
    images are generated with - stand in the prompted relation (noisecraft.conditions.layout.relation_holds)."""
    from noisecraft.conditions.layout import layout_generators, relation_holds

    gens = None if args.mean_layout else layout_generators(args.seed, len(specs))
    boxes = loaded.layout.plan([s.caption() for s in specs], gens)[0]
    two = [(b, s) for b, s in zip(boxes, specs) if s.relation is not None]
    return sum(relation_holds(b, s.relation) for b, s in two) / max(1, len(two))


def _save_grid(rows: list[torch.Tensor], path: Path, labels: list[str]) -> None:
    from noisecraft.viz import grid_image, save_png

    save_png(grid_image(torch.cat(rows), nrow=GRID_COLUMNS), path, scale=3, info={"rows": labels})


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = [(k, results[k]) for k in ("mnist", "scenes") if results.get(k)]
    fig, axes = plt.subplots(1, len(parts), figsize=(5.5 * len(parts), 4), squeeze=False)
    for ax, (name, res) in zip(axes[0], parts):
        rows = [r for r in res["rows"] if "setting" in r and set(r["setting"]) == {"guidance"}]
        w = [r["setting"]["guidance"] for r in rows]
        score = [r["accuracy" if name == "mnist" else "adherence"] for r in rows]
        ax.plot(w, score, "o-", color="C0")
        ax.set_xlabel("guidance scale w")
        ax.set_ylabel("classified as the requested digit" if name == "mnist" else "full-prompt adherence",
                      color="C0")
        ax.set_ylim(0, 1.02)
        ax.axhline(0.95 if name == "mnist" else 0.80, color="C0", ls=":", lw=1)
        twin = ax.twinx()
        twin.plot(w, [r["fd"] for r in rows], "s--", color="C3")
        twin.set_ylabel("Frechet distance", color="C3")
        ax.set_title(f"{res['config']} (step {res['model_step']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _meta_lines(meta: dict) -> list[str]:
    return [f"    {meta['command']}", "",
            f"{meta['date']}, {meta['machine']}; sampler {meta['sampler']}, {meta['steps']} Karras steps, "
            f"{meta['num']} samples per row, seeds {meta['seed']}..{meta['seed'] + meta['num'] - 1} (the same noise "
            f"in every row).", ""]


def _verdict(target: str, goal: float, scored: list[tuple[str, float]]) -> str:
    """'Target: ...: met|not met (best: 50.7% at w = 2).' from the measured rows."""
    if not scored:
        return target + "."
    label, best = max(scored, key=lambda row: row[1])
    return f"{target}: **{'met' if best >= goal else 'not met'}** (best: {best:.1%} at {label})."


def render(results: dict) -> str:
    out = ["# Classifier-free guidance on trained models", "",
           "Generated by `benchmarks/guidance.py` (its docstring says what is measured); raw figures in",
           "`results/guidance.json`, plot `guidance.png` (score and FD against the plain guidance scale).", ""]
    if results.get("mnist"):
        m = results["mnist"]
        out += [f"## Class-conditional MNIST (`{m['config']}`, {m['run']}, step {m['model_step']})", "",
                *_meta_lines(m["meta"]),
                _verdict("Target: >= 95% classified as the requested digit at a modest scale", 0.95,
                         [(r["label"], r["accuracy"]) for r in m["rows"]]), "",
                "| guidance | classified as requested | worst digit | FD (mnist features) | seconds |",
                "|---|---|---|---|---|"]
        for r in m["rows"]:
            worst = int(np.argmin(r["per_class"]))
            out.append(f"| {r['label']} | {r['accuracy']:.1%} | {worst}: {r['per_class'][worst]:.0%} | {r['fd']:.2f} "
                       f"| {r['seconds']} |")
        out += ["", "Samples (`guidance_mnist.png`): one row per line of the table, digits 0-9.", ""]
    if results.get("scenes"):
        s = results["scenes"]
        out += [f"## Text-to-image on scenes (`{s['config']}`, {s['run']}, step {s['model_step']})", "",
                *_meta_lines(s["meta"]),
                _verdict("Target: >= 80% of prompts fully satisfied", 0.80,
                         [(r["label"], r["adherence"]) for r in s["rows"] if "setting" in r]), "",
                "| guidance | full prompt | count | layout | colour | shape | size | FD (scene features) | seconds |",
                "|---|---|---|---|---|---|---|---|---|"]
        for r in s["rows"]:
            p = r["per_attribute"]
            out.append(f"| {r['label']} | {r['adherence']:.1%} | {p['count']:.1%} | {p.get('layout', float('nan')):.1%}"
                       f" | {p['colour']:.1%} | {p['shape']:.1%} | {p['size']:.1%} | {r['fd']:.2f} "
                       f"| {r.get('seconds', '')} |")
        if "planner_relation" in s:
            out += ["", f"Layout-grounded run: the planner's boxes stand in the prompted relation for "
                    f"{s['planner_relation']:.1%} of the two-object prompts (`noisecraft.conditions.layout`)."]
        out += ["", "Samples (`guidance_scenes.png`): one row per guided line of the table; columns are the prompts",
                "", *[f"{i + 1}. {p}" for i, p in enumerate(s["grid_prompts"])], ""]
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mnist", help="run directory of a class-conditional MNIST model")
    p.add_argument("--scenes", help="run directory of a scenes text-to-image model")
    p.add_argument("--num", type=int, default=300, help="samples per row (default 300)")
    p.add_argument("--scales", type=float, nargs="+", default=[0.0, 1.0, 2.0, 3.0, 4.0, 6.0])
    p.add_argument("--extra", action="store_true", help="also w=3 with a guidance interval and with rescale")
    p.add_argument("--sampler", default="dpmpp_2m")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prompt-seed", type=int, default=777)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--mean-layout", action="store_true",
                   help="layout-grounded runs: every image of a prompt gets the planner's mean boxes (default: drawn "
                        "per image with the residual bank, as `noisecraft sample` does)")
    p.add_argument("--from-json", help="re-render the markdown and plot from a results file")
    p.add_argument("--out", type=Path, default=HERE,
                   help="where the .md, .png and results/guidance.json go (default: benchmarks/; a scratch "
                        "directory for comparisons that should not replace the recorded results)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    raw = args.out / "results" / "guidance.json"
    if args.from_json:
        results = json.loads(Path(args.from_json).read_text())
    else:  # a part measured now replaces that part of the recorded results; the other part is kept
        results = json.loads(raw.read_text()) if raw.is_file() else {}
        meta = {"command": "python benchmarks/guidance.py " + " ".join(sys.argv[1:] if argv is None else argv),
                "date": str(date.today()), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
                f"torch {torch.__version__}, {args.threads} thread(s)", "sampler": args.sampler,
                "steps": args.steps, "num": args.num, "seed": args.seed}
        if args.mnist:
            results["mnist"] = {**bench_mnist(args.mnist, args), "meta": meta}
        if args.scenes:
            results["scenes"] = {**bench_scenes(args.scenes, args), "meta": meta}
        raw.parent.mkdir(exist_ok=True)
        raw.write_text(json.dumps(results, indent=1))
    plot(results, args.out / "guidance.png")
    (args.out / "guidance.md").write_text(render(results) + "\n")
    print(f"wrote {args.out / 'guidance.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
