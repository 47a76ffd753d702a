"""Train the noise-aware classifier used by classifier guidance (Dhariwal & Nichol 2021) and report its
accuracy against the noise level on held-out data.

    python scripts/train_noisy_classifier.py --dataset mnist --schedule edm --minutes 5 --out DIR

writes DIR/classifier.safetensors (+ classifier.json) and prints a table of accuracy at sigma in
0.1 .. 5 on the dataset's test split (sigma is the VE noise level: x = x0 + sigma n, data in [-1, 1]).
Use it with `noisecraft.guidance.ClassifierGuidance(denoiser, load_noisy_classifier(DIR), scale)`.
"""

from __future__ import annotations

import argparse

import torch

from noisecraft.data import load_dataset
from noisecraft.guidance import ClassifierConfig, classifier_accuracy, train_noisy_classifier
from noisecraft.schedules.training import build_schedule

SIGMAS = (0.1, 0.3, 0.5, 1.0, 2.0, 5.0)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--schedule", default="edm", help="training schedule whose sigma distribution is used")
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--base-channels", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    train = load_dataset(args.dataset, split="train")
    test = load_dataset(args.dataset, split="test")
    config = ClassifierConfig(in_channels=train.images.shape[1], num_classes=len(train.class_names),
                              dims=train.images.ndim - 2, base_channels=args.base_channels)
    model = train_noisy_classifier(train, build_schedule(args.schedule), config=config, steps=args.steps,
                                   batch_size=args.batch_size, lr=args.lr, seed=args.seed, minutes=args.minutes,
                                   out_dir=args.out)
    print(f"| sigma | accuracy on {args.dataset} test ({len(test)} images) |\n|---|---|")
    for sigma in SIGMAS:
        print(f"| {sigma} | {classifier_accuracy(model, test.images, test.labels, sigma):.3f} |")


if __name__ == "__main__":
    main()
