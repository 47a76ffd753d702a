"""Train the `mnist` feature network of noisecraft.eval and save it with its accuracy.

    python scripts/train_mnist_classifier.py [--epochs 15] [--seed 0] [--out PATH]

Trains `noisecraft.eval.mnist_net.MnistClassifier` on noisecraft's MNIST "train" split (4500 images)
with random shifts of up to 2 pixels, reports top-1 accuracy on the "test" split (500 images), and
writes src/noisecraft/eval/weights/mnist_classifier.safetensors with the accuracy in its metadata.
Deterministic on the CPU for a given seed; about five minutes on one CPU thread.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from noisecraft.data import load_dataset
from noisecraft.eval.mnist_net import WEIGHTS_NAME, MnistClassifier, accuracy, save_mnist_classifier

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "noisecraft" / "eval" / "weights" / WEIGHTS_NAME


def random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by an integer offset in [-max_shift, max_shift]^2 (background -1 fills in)."""
    n, _, h, w = x.shape
    padded = F.pad(x, [max_shift] * 4, value=-1.0)
    dy, dx = (torch.randint(0, 2 * max_shift + 1, (2, n), generator=gen)).tolist()
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


def train(epochs: int, seed: int, batch_size: int = 64, lr: float = 2e-3) -> tuple[MnistClassifier, dict]:
    train_set = load_dataset("mnist", split="train")
    test_set = load_dataset("mnist", split="test")
    torch.manual_seed(seed)
    net = MnistClassifier()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = math.ceil(len(train_set) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        net.train()
        perm = torch.randperm(len(train_set), generator=gen)
        total = 0.0
        for s in range(0, len(perm), batch_size):
            idx = perm[s:s + batch_size]
            x = random_shift(train_set.images[idx], 2, gen)
            _, logits = net(x)
            loss = F.cross_entropy(logits, train_set.labels[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        if epoch % 5 == 4 or epoch == epochs - 1:
            acc = accuracy(net, test_set.images, test_set.labels)
            print(f"epoch {epoch + 1:3d}  loss {total / len(train_set):.4f}  test accuracy {acc:.4f}", flush=True)
    info = {"test_accuracy": accuracy(net, test_set.images, test_set.labels),
            "train_accuracy": accuracy(net, train_set.images, train_set.labels),
            "train_size": len(train_set), "test_size": len(test_set), "dataset": "mnist",
            "epochs": epochs, "seed": seed, "batch_size": batch_size, "lr": lr, "augmentation": "shift <= 2 px",
            "features": "penultimate layer, 128 ReLU units"}
    return net.eval(), info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.monotonic()
    net, info = train(args.epochs, args.seed)
    info["train_seconds"] = round(time.monotonic() - t0, 1)
    save_mnist_classifier(net, args.out, info)
    print(f"test accuracy {info['test_accuracy']:.4f} ({info['test_size']} images), train accuracy "
          f"{info['train_accuracy']:.4f}; {info['train_seconds']} s -> {args.out} "
          f"({args.out.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
