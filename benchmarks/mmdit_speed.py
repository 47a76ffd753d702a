"""Speed and memory of the MMDiT presets against the scenes text U-Net (benchmarks/transformers.md, "MMDiT").

Each network is built as its preset builds it (`build.adapt_config` on the data shape, MiniLM widths 384/384)
and fed a batch of random images with 13 text tokens (the longest scene caption) and a pooled vector. Timed
interleaved in one process (warm-up first, then the median of N rounds, the order rotating every round) so that
load from other processes hits every network alike:

    forward      a no-grad network evaluation of the batch (one NFE of sampling)
    train step   forward + MSE + backward + AdamW step

Memory, exact and machine-independent: the parameters, and the activations a training forward saves for the
backward pass (bytes of the tensors autograd keeps, counted through saved-tensor hooks, each storage once).

    python benchmarks/mmdit_speed.py --threads 1 --rounds 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from noisecraft.build import adapt_config, build_network
from noisecraft.models.mmdit import MMDIT_PRESETS
from noisecraft.presets import get_preset

TEXT_TOKENS = 13


def networks() -> dict[str, tuple[torch.nn.Module, tuple[int, ...]]]:
    scenes = (3, 32, 32)
    cfgs = {
        "scenes-text (U-Net)": (get_preset("scenes-text"), scenes),
        "scenes-text-mmdit": (get_preset("scenes-text-mmdit"), scenes),
        "scenes-text-mmdit, tiny (h 32, depth 2)": (replace(get_preset("scenes-text-mmdit"),
                                                            network=replace(MMDIT_PRESETS["tiny"], patch_size=4)),
                                                    scenes),
        "mnist-text-mmdit": (get_preset("mnist-text-mmdit"), (1, 28, 28)),
    }
    out = {}
    for name, (cfg, shape) in cfgs.items():
        torch.manual_seed(0)
        out[name] = (build_network(adapt_config(cfg, shape)), shape)
    return out


def inputs(shape, batch: int):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, *shape, generator=g)
    cond = {"text_tokens": torch.randn(batch, TEXT_TOKENS, 384, generator=g),
            "text_mask": torch.ones(batch, TEXT_TOKENS, dtype=torch.bool),
            "text_pooled": torch.randn(batch, 384, generator=g)}
    return x, torch.rand(batch, generator=g) * 999, cond


def saved_bytes(net, x, t, cond) -> int:
    """Bytes of the tensors autograd saves in one training forward (each storage counted once; the weights,
    which are saved too, are not activations and are left out)."""
    weights = {p.untyped_storage().data_ptr() for p in net.parameters()}
    seen: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = net(x, t, cond).pow(2).mean()
    loss.backward()
    net.zero_grad(set_to_none=True)
    return sum(seen.values())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "mmdit_speed.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    nets = networks()
    data = {name: inputs(shape, args.batch) for name, (_, shape) in nets.items()}
    opts = {name: torch.optim.AdamW(net.parameters(), lr=1e-4) for name, (net, _) in nets.items()}

    def forward(name):
        with torch.no_grad():
            nets[name][0](*data[name])

    def train(name):
        x, t, cond = data[name]
        opts[name].zero_grad(set_to_none=True)
        F.mse_loss(nets[name][0](x, t, cond), x).backward()
        opts[name].step()

    times = {(n, k): [] for n in nets for k in ("forward", "train")}
    names = list(nets)
    for r in range(args.rounds + 1):  # round 0 is the warm-up
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            for kind, fn in (("forward", forward), ("train", train)):
                start = time.perf_counter()
                fn(name)
                if r:
                    times[(name, kind)].append(time.perf_counter() - start)
    rows = []
    for name, (net, shape) in nets.items():
        fwd, step = statistics.median(times[(name, "forward")]), statistics.median(times[(name, "train")])
        rows.append({"model": name, "data": list(shape), "params": sum(p.numel() for p in net.parameters()),
                     "forward_images_per_s": args.batch / fwd, "train_steps_per_s": 1 / step,
                     "train_images_per_s": args.batch / step,
                     "activations_MB": saved_bytes(net, *data[name]) / 2**20})
    print(f"| model | data | parameters | forward images/s (1 NFE) | train steps/s (batch {args.batch}) | "
          f"train images/s | activations saved for backward, batch {args.batch} |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {'x'.join(map(str, r['data']))} | {r['params'] / 1e6:.2f}M | "
              f"{r['forward_images_per_s']:.0f} | {r['train_steps_per_s']:.2f} | {r['train_images_per_s']:.0f} | "
              f"{r['activations_MB']:.0f} MB |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"batch": args.batch, "threads": args.threads, "rounds": args.rounds,
                                    "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
