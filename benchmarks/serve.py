"""The generation server under load: throughput and latency with 1, 4 and 16 concurrent clients, dynamic batching
against one-at-a-time at 8 clients, and overload (a small queue, more clients than it holds): every accepted job
answered, the excess refused with 429, resident memory over 1000 requests.

The model: the quickstart U-Net (preset `mnist`, 1.2M parameters, unconditional 28x28 MNIST) trained for
--train-steps steps here (the figures measure serving, not image quality). Each server is `noisecraft serve` in
its own process on 127.0.0.1; clients are threads of this process, each sending A1111 txt2img requests (one
image, --steps Euler steps) one after another.

    python benchmarks/serve.py --out benchmarks/results/serve.json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path


def train(out: Path, steps: int) -> Path:
    from noisecraft.presets import get_preset
    from noisecraft.training.trainer import Trainer

    if (out / "checkpoint.safetensors").is_file():
        return out
    base = get_preset("mnist")
    config = replace(base, train=replace(base.train, steps=steps, minutes=None, checkpoint_every=steps),
                     sample=replace(base.sample, num=4))
    Trainer(config, out, progress=False).run()
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`noisecraft serve` in a subprocess."""

    def __init__(self, run: Path, *args: str):
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "noisecraft", "serve", "--checkpoint", str(run), "--port", str(self.port), *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/sdapi/v1/options", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("the server did not start")

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def load(url: str, clients: int, seconds: float | None, steps: int, total: int | None = None) -> dict:
    """`clients` threads sending requests for `seconds` (or until `total` requests); latencies of the answered."""
    import httpx

    latencies, refused, lost, sent = [], [0], [0], [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds if seconds else None

    def client(i: int):
        with httpx.Client(base_url=url, timeout=600) as c:
            while True:
                with lock:
                    if (stop and time.monotonic() >= stop) or (total and sent[0] >= total):
                        return
                    sent[0] += 1
                    seed = sent[0]
                t0 = time.monotonic()
                r = c.post("/sdapi/v1/txt2img", json={"steps": steps, "seed": seed, "sampler_name": "euler"})
                with lock:
                    if r.status_code == 429:
                        refused[0] += 1
                    elif r.status_code == 200 and len(r.json()["images"]) == 1:
                        latencies.append(time.monotonic() - t0)
                    else:
                        lost[0] += 1

    t0 = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
    return {"clients": clients, "seconds": round(wall, 1), "answered": len(latencies), "refused_429": refused[0],
            "lost": lost[0], "images_per_s": round(len(latencies) / wall, 2),
            "p50_s": round(statistics.median(latencies), 3) if latencies else None, "p99_s": round(q[98], 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default="runs/serve-bench", help="the model's run directory (trained if missing)")
    p.add_argument("--train-steps", type=int, default=30)
    p.add_argument("--steps", type=int, default=8, help="sampling steps per request")
    p.add_argument("--seconds", type=float, default=12, help="length of each throughput phase")
    p.add_argument("--overload", type=int, default=1000, help="requests of the overload phase")
    p.add_argument("--no-watermark", action="store_true", help="serve without the watermark (its cost per image)")
    p.add_argument("--batching-only", action="store_true", help="only the batched vs one-at-a-time comparison")
    p.add_argument("--out", default="benchmarks/results/serve.json")
    args = p.parse_args()
    run = train(Path(args.run), args.train_steps)
    extra = ("--no-watermark",) if args.no_watermark else ()
    results = {"cpu_count": os.cpu_count(), "steps": args.steps, "train_steps": args.train_steps,
               "watermark": not args.no_watermark}
    server = Server(run, "--queue", "64", *extra)
    try:
        load(server.url, 2, 3, args.steps)  # warm-up
        if not args.batching_only:
            results["concurrency"] = [load(server.url, c, args.seconds, args.steps) for c in (1, 4, 16)]
        results["batched_8"] = load(server.url, 8, args.seconds, args.steps)
    finally:
        server.close()
    server = Server(run, "--queue", "64", "--max-batch", "1", *extra)
    try:
        load(server.url, 2, 3, args.steps)
        results["one_at_a_time_8"] = load(server.url, 8, args.seconds, args.steps)
    finally:
        server.close()
    results["batching_speedup_8"] = round(results["batched_8"]["images_per_s"]
                                          / results["one_at_a_time_8"]["images_per_s"], 2)
    if not args.batching_only:
        results["overload"] = overload(run, args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


def overload(run: Path, args) -> dict:
    """32 clients against a queue of 4: requests refused (429), accepted ones all answered; then --overload
    requests that are all accepted (8 clients, a queue of 64), with the server's RSS before and after them."""
    server = Server(run, "--queue", "4", "--max-batch", "8")
    try:
        load(server.url, 8, None, 2, total=100)  # warm-up: allocations settle
        before = server.rss_mib()
        out = {"refusing": load(server.url, 32, None, 2, total=args.overload)}
        out["refusing"]["rss_growth"] = round(server.rss_mib() / before - 1, 4)
    finally:
        server.close()
    server = Server(run, "--queue", "64", "--max-batch", "8")
    try:
        load(server.url, 8, None, 2, total=100)
        before = server.rss_mib()
        out["accepted"] = load(server.url, 8, None, 2, total=args.overload)
        after = server.rss_mib()
    finally:
        server.close()
    out["accepted"].update(rss_before_mib=round(before, 1), rss_after_mib=round(after, 1),
                           rss_growth=round(after / before - 1, 4))
    return out


if __name__ == "__main__":
    main()
