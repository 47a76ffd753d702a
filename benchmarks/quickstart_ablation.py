"""One row of docs/quickstart.md's ablation: train the `mnist` preset with config overrides for a budget of process
CPU-minutes on one torch thread (cpu_budget.py), then score 1000 samples (Heun, 18 Karras steps, EMA weights) with
`noisecraft eval`'s MNIST classifier and features: FD, precision/recall, the confident fraction and the digit shares.

    python benchmarks/quickstart_ablation.py --name H --cpu-minutes 16 --out /tmp/qs \\
        train.bf16=true network.channels_last=false diffusion.p_mean=0.0

Appends one JSON line to benchmarks/results/quickstart_ablation.jsonl (--record) and writes OUT/NAME/grid.png.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True)
    p.add_argument("--cpu-minutes", type=float, default=16.0)
    p.add_argument("--out", default="/tmp/quickstart-ablation")
    p.add_argument("--num", type=int, default=1000)
    p.add_argument("--record", default=str(Path(__file__).parent / "results" / "quickstart_ablation.jsonl"))
    p.add_argument("overrides", nargs="*", help="section.field=value, as `noisecraft train`")
    args = p.parse_args(argv)

    from cpu_budget import preset_config, train_cpu_budget
    from noisecraft.eval import evaluate
    from noisecraft.pipelines import load
    from noisecraft.pipelines.generate import generate
    from noisecraft.pipelines.request import Request
    from noisecraft.viz import save_grid

    cfg = preset_config("mnist", args.overrides)
    out = Path(args.out) / args.name
    info = train_cpu_budget(cfg, out, args.cpu_minutes)
    images = generate(load(out), Request(num=args.num, batch_size=100, sampler="heun", steps=18)).images
    save_grid(images[:64], out / "grid.png")
    r = evaluate(images.clamp(-1, 1), metrics=("fd", "pr", "classes"))
    row = {"name": args.name, "overrides": args.overrides, "cpu_minutes": args.cpu_minutes, "steps": info["steps"],
           "wall_s": info["wall_s"], "params": info["params"], "sampler": "heun 18 karras", "num": args.num,
           **{k: r[k] for k in ("fd", "precision", "recall", "confident", "class_share_min", "class_share_max",
                                "class_shares")}}
    print(json.dumps(row), flush=True)
    if args.record:
        with open(args.record, "a") as f:
            f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
