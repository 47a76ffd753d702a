"""Does guidance produce the requested digit? Sample an MNIST model with classifier guidance (an unconditional
model + a noise-aware classifier) or classifier-free guidance (a class-conditional model, U-Net or DiT) at
several scales, and score each sample with noisecraft's separate MNIST classifier (the `mnist` feature network).

    python benchmarks/guided_mnist.py --checkpoint RUN --classifier CLF_DIR --scales 0 1 2 4      # classifier
    python benchmarks/guided_mnist.py --checkpoint RUN --cfg --scales 0 1 2 4                     # classifier-free

Prints a markdown table (scale, fraction classified as the requested digit) and writes a PNG grid per scale
(row = requested digit) with --png-prefix. Every sample i uses its own generator (seed + i).
"""

from __future__ import annotations

import argparse

import torch

from noisecraft.eval.mnist_net import load_mnist_classifier
from noisecraft.guidance import ClassifierFreeGuidance, ClassifierGuidance, load_noisy_classifier
from noisecraft.pipelines import load
from noisecraft.pipelines import sample_batches as generate
from noisecraft.schedules import get_sigmas


def guided(denoiser, scale: float, classifier):
    if classifier is None:
        return ClassifierFreeGuidance(denoiser, scale)
    return ClassifierGuidance(denoiser, classifier, scale)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="run directory of the diffusion model")
    p.add_argument("--classifier", help="noisy classifier directory (scripts/train_noisy_classifier.py)")
    p.add_argument("--cfg", action="store_true", help="classifier-free guidance on a class-conditional model")
    p.add_argument("--scales", type=float, nargs="+", default=[0.0, 1.0, 2.0, 4.0])
    p.add_argument("--per-class", type=int, default=10)
    p.add_argument("--sampler", default="heun")
    p.add_argument("--steps", type=int, default=18)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--png-prefix", help="write PREFIX_s<scale>.png grids")
    args = p.parse_args(argv)
    if args.cfg == (args.classifier is not None):
        p.error("give exactly one of --classifier and --cfg")
    torch.set_num_threads(args.threads)
    loaded = load(args.checkpoint)
    classifier = None if args.cfg else load_noisy_classifier(args.classifier)
    judge = load_mnist_classifier().eval()
    sigmas = get_sigmas(loaded.denoiser.schedule, args.steps, "karras")
    labels = torch.arange(10).repeat_interleave(args.per_class)
    print(f"| scale | classified as the requested digit (n={len(labels)}) |\n|---|---|")
    for scale in args.scales:
        with torch.no_grad():
            x = generate(guided(loaded.denoiser, scale, classifier), sigmas, loaded.data_shape, num=len(labels),
                         seed=args.seed, sampler=args.sampler, batch_size=len(labels), cond={"class_labels": labels})
            pred = judge(x.clamp(-1, 1))[1].argmax(1)
        print(f"| {scale:g} | {(pred == labels).float().mean().item():.3f} |", flush=True)
        if args.png_prefix:
            from noisecraft.viz import save_grid

            save_grid(x, f"{args.png_prefix}_s{scale:g}.png", nrow=args.per_class)


if __name__ == "__main__":
    main()
