"""Inpainting of half-masked held-out MNIST digits: trained (mask-conditioned) vs replacement vs RePaint.

One mask-conditioned run (preset mnist-inpaint) serves every method: with its null condition (everything masked)
it is an unconditional model, which is what the training-free methods need, so the comparison holds the network,
its training and its budget fixed. Queries: the --num MNIST test digits (never seen in training), the
right half (or --half bottom) regenerated. Scores, against the same classifier and features `noisecraft eval`
uses (noisecraft.eval.mnist_net, MNIST features):

- agreement: the classifier's label of the completion equals the held-out digit's label (which the visible half
  shows); for unconditional samples of the same model the same comparison gives the chance rate;
- FD of the completions (MNIST features) against the training split's reference, beside real test digits' FD;
- known pixels kept: max |completion - digit| over the kept half (0: bit for bit).

    python benchmarks/editing.py --run runs/mnist-inpaint --out benchmarks            # right half
    python benchmarks/editing.py --run runs/mnist-inpaint --half bottom --out benchmarks
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def complete(run, digits: torch.Tensor, mask: torch.Tensor, method: str, args) -> torch.Tensor:
    """Completions of `digits` (N, 1, H, W) where mask (1, 1, H, W) is 1; image i from seed i."""
    from noisecraft.core.random import make_generators, randn_like
    from noisecraft.editing.inpaint import paste, sample_repaint, sample_replace
    from noisecraft.pipelines import Request, conditioned, generate, plan

    out = []
    for start in range(0, len(digits), args.batch_size):
        y = digits[start:start + args.batch_size]
        n = len(y)
        if method == "trained":
            req = Request(num=n, seed=start, sampler="heun", steps=args.steps,
                          conditions={"inpaint": {"image": y, "mask": mask}})
            out.append(paste(generate(run, req).images, y, mask))
            continue
        if method == "unconditional":
            out.append(generate(run, Request(num=n, seed=start, sampler="heun", steps=args.steps)).images)
            continue
        sampler = "heun" if method == "replace" else "ddpm"
        p = plan(run, Request(sampler=sampler, steps=args.steps if method == "replace" else args.repaint_steps))
        cond = None
        if run.conditions.get("inpaint") is not None:  # the mask-conditioned run's unconditional model
            everything = {"image": torch.zeros_like(y[:1]), "mask": torch.ones_like(mask)}
            cond = {k: v.expand(n, *v.shape[1:]) for k, v in
                    conditioned(run, Request(conditions={"inpaint": everything}))[1].items()}
        gens = make_generators(start, n)
        x = randn_like(torch.empty_like(y), gens) * float(p.sigmas[0])
        if method == "replace":
            out.append(sample_replace(run.denoiser, x, p.sigmas, y, mask, sampler=sampler, cond=cond, generator=gens))
        else:
            out.append(sample_repaint(run.denoiser, x, p.sigmas, y, mask, sampler=sampler, jump=args.jump,
                                      resample=args.resample, cond=cond, generator=gens))
    return torch.cat(out).float().clamp(-1, 1)  # as written to PNG; the kept half is in [-1, 1] already


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--num", type=int, default=500, help="test digits (the split holds 500, 50 per class, in order)")
    ap.add_argument("--half", choices=("right", "bottom"), default="right")
    ap.add_argument("--steps", type=int, default=10, help="heun steps of trained / replace / unconditional")
    ap.add_argument("--repaint-steps", type=int, default=10)
    ap.add_argument("--jump", type=int, default=2)
    ap.add_argument("--resample", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--out", type=Path, default=Path("benchmarks"))
    args = ap.parse_args(argv)

    from noisecraft.data import load_dataset
    from noisecraft.eval import fd, get_extractor, load_reference
    from noisecraft.eval.mnist_net import load_mnist_classifier
    from noisecraft.pipelines import load
    from noisecraft.viz import grid_image, save_png

    torch.manual_seed(0)
    run = load(args.run)
    test = load_dataset("mnist", split="test", limit=args.num)
    digits, labels = test.images, test.labels
    H, W = digits.shape[-2:]
    mask = torch.zeros(1, 1, H, W)
    if args.half == "right":
        mask[..., W // 2:] = 1
    else:
        mask[..., H // 2:, :] = 1
    clf = load_mnist_classifier().eval()
    extractor = get_extractor("mnist")
    ref = load_reference("mnist", extractor, split="train")
    shown = torch.linspace(0, len(digits) - 1, 10).long()  # the split is ordered by class: one of each
    rows, grid = [], [torch.where(mask.bool(), torch.zeros_like(digits[shown]), digits[shown])]
    with torch.no_grad():
        real_pred = clf(digits)[1].argmax(1)
    rows.append({"method": "real held-out digits", "agreement": float((real_pred == labels).float().mean()),
                 "fd": fd(extractor(digits), ref.features), "kept_max_error": 0.0, "seconds": 0.0})
    for method in ("trained", "replace", "repaint", "unconditional"):
        t0 = time.perf_counter()
        images = complete(run, digits, mask, method, args)
        seconds = time.perf_counter() - t0
        with torch.no_grad():
            pred = clf(images)[1].argmax(1)
        kept = (images - digits).abs()[(1 - mask).bool().expand_as(images)].max()
        rows.append({"method": method, "agreement": float((pred == labels).float().mean()),
                     "fd": fd(extractor(images), ref.features),
                     "kept_max_error": float(kept) if method != "unconditional" else None,
                     "seconds": round(seconds, 1)})
        grid.append(images[shown])
        print(json.dumps(rows[-1]), flush=True)
    grid.append(digits[shown])
    save_png(grid_image(torch.cat(grid), nrow=10), args.out / f"editing_inpaint_{args.half}.png", scale=3,
             info={"rows": ["masked input", "trained", "replace", "repaint", "unconditional", "real"]})
    result = {"run": args.run, "model_step": run.step, "config": run.config.name, "num": args.num,
              "half": args.half, "steps": args.steps, "repaint": [args.repaint_steps, args.jump, args.resample],
              "rows": rows}
    (args.out / "results").mkdir(parents=True, exist_ok=True)
    (args.out / "results" / f"editing_inpaint_{args.half}.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
