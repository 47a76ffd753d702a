"""`noisecraft eval`: score generated images with FD, KID, precision/recall, IS and a near-copy check.

    noisecraft eval --checkpoint runs/quickstart --num 1000 --metrics fd,kid,pr,is --features mnist
    noisecraft eval --images samples.png --reference mnist --features effnet --json scores.json

Samples from --checkpoint are clipped to [-1, 1] (as when saved as pictures) before scoring. Only argparse is
imported at start-up; `run` imports what it needs.
"""

from __future__ import annotations

import argparse

from noisecraft.cli.argtypes import positive_int

LABELS = {"fd": "FD", "fd_inf": "FD_inf", "kid": "KID", "precision": "precision", "recall": "recall",
          "is": "IS", "confident": "confident (p > 0.9)", "class_share_min": "smallest class share",
          "class_share_max": "largest class share", "near_copies": "near-copies (pixels)",
          "near_copies_features": "near-copies (features)"}


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "eval", help="score samples: FD, KID, precision/recall, IS, near-copies",
        description="Generate --num samples from a checkpoint (or read --images) and compare them with a reference "
                    "dataset in a feature space. Reference statistics are cached in $NOISECRAFT_CACHE "
                    "(default ~/.cache/noisecraft). Prints a table; --json writes a flat JSON object.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="run directory or checkpoint.safetensors to sample from")
    src.add_argument("--images", help="a directory of images, a .npy array (N, C, H, W), or a noisecraft grid PNG")
    p.add_argument("--value-range", choices=("auto", "signed", "unit", "byte"), default="auto",
                   help="the value range of a floating-point --images .npy: signed = [-1, 1], unit = [0, 1], byte = "
                        "0..255 (default auto: detected when the values make it unambiguous, else an error asking "
                        "for this flag); uint8 arrays and pictures are 0..255")
    p.add_argument("--layout", choices=("auto", "nchw", "nhwc"), default="auto",
                   help="axis order of an --images .npy (default auto: an error when the shape fits both)")
    p.add_argument("--reference", help="reference dataset (default with --checkpoint: the run's own data)")
    p.add_argument("--reference-root", help="image directory, for --reference folder")
    p.add_argument("--split", help="reference split: train (default), test or all")
    p.add_argument("--features", help="feature network: mnist, effnet or inception (default: mnist for the mnist "
                                      "dataset, else effnet)")
    p.add_argument("--metrics", default="fd,kid,pr,is", help="comma-separated: fd, fd_inf, kid, pr, is, classes, mem "
                                                             "(default fd,kid,pr,is)")
    p.add_argument("--num", type=positive_int, default=1000, help="samples to generate (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="sample i uses seed + i (default 0)")
    p.add_argument("--sampler", help="sampler (default: the run's)")
    p.add_argument("--steps", type=positive_int, help="sampling steps (default: the run's)")
    p.add_argument("--step-schedule", help="the sampling step schedule (default: the run's)")
    p.add_argument("--schedule", dest="step_schedule", help=argparse.SUPPRESS)  # deprecated spelling
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per batch (default 64)")
    p.add_argument("--inception-weights", help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth, for "
                                               "--features inception (never downloaded)")
    p.add_argument("--memorization-png", help="also write samples beside their nearest training images to this PNG "
                                              "(adds metric mem)")
    p.add_argument("--json", help="write the results as one flat JSON object to this file")
    p.add_argument("--no-cache", action="store_true", help="recompute the reference statistics")
    p.add_argument("--no-ema", action="store_true", help="sample with the raw weights instead of the EMA")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    return p


def _samples(args):
    """Generate args.num images from the checkpoint; returns (images, data config of the run)."""
    import torch

    from noisecraft.pipelines import MAX_NUM, load
    from noisecraft.pipelines import sample_batches as generate
    from noisecraft.samplers import resolve_alias
    from noisecraft.schedules import get_sigmas

    loaded = load(args.checkpoint, use_ema=not args.no_ema, device=args.device)
    if len(loaded.data_shape) != 3:
        from noisecraft.eval import EvalError

        raise EvalError(f"{args.checkpoint}: the run models {loaded.config.data.dataset!r} points, not images; "
                        f"noisecraft eval scores images")
    s = loaded.config.sample
    sampler, implied = resolve_alias(args.sampler or s.sampler)
    from noisecraft.pipelines.generate import check_student_sampler

    check_student_sampler(loaded, sampler)  # a few-step student: only the samplers it was made for
    sigmas = get_sigmas(loaded.denoiser.schedule, args.steps or s.steps,
                         args.step_schedule or implied or s.step_schedule)
    parts = [generate(loaded.denoiser, sigmas, loaded.data_shape, num=min(MAX_NUM, args.num - start),
                      seed=args.seed + start, sampler=sampler, batch_size=args.batch_size, device=args.device)
             for start in range(0, args.num, MAX_NUM)]
    return torch.cat(parts).nan_to_num(0.0).clamp(-1.0, 1.0), loaded.config.data  # clipped, as saved pictures


def _reference_options(args, data) -> dict:
    from noisecraft.data import available_datasets
    from noisecraft.errors import NoisecraftError

    if args.reference is None and data is None:
        raise NoisecraftError(f"--images needs --reference DATASET; allowed: {', '.join(available_datasets())}")
    if args.reference is None:  # the run's own data
        return {"reference": data.dataset, "split": args.split or data.split, "root": data.root,
                "resolution": data.resolution, "channels": data.channels, "limit": data.limit}
    return {"reference": args.reference, "split": args.split or "train", "root": args.reference_root}


def format_table(result: dict) -> str:
    """The results as aligned text lines (value +- std where there is one)."""
    lines = [f"{result['num_samples']} samples vs {result['reference']} ({result['num_reference']} images), "
             f"features {result['features']}"]
    for key, label in LABELS.items():
        if result.get(key) is None:
            continue
        value = f"{result[key]:.6g}"
        if f"{key}_std" in result:
            value += f" +- {result[key + '_std']:.2g}"
        lines.append(f"  {label:<24s} {value}")
    if result.get("class_shares") is not None:
        shares = " ".join(f"{k}:{v:.3f}" for k, v in enumerate(result["class_shares"]))
        lines.append(f"  {'class shares':<24s} {shares}")
    return "\n".join(lines)


def run(args) -> int:
    """Evaluate; warnings (e.g. fewer samples than feature dimensions) are printed as one line each."""
    import sys
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = _run(args)
    for w in {str(w.message): w for w in caught}.values():
        print(f"noisecraft: warning: {w.message}", file=sys.stderr)
    return code


def _run(args) -> int:
    import json
    from pathlib import Path

    from noisecraft.eval.evaluation import evaluate, parse_metrics
    from noisecraft.eval.image_io import load_images

    metrics = parse_metrics(args.metrics)
    if args.memorization_png and "mem" not in metrics:
        metrics += ("mem",)
    if args.checkpoint:
        images, data = _samples(args)
    else:
        images, data = load_images(args.images, value_range=args.value_range, layout=args.layout), None
    result = evaluate(images, **_reference_options(args, data), features=args.features, metrics=metrics,
                      device=args.device, batch_size=args.batch_size, inception_weights=args.inception_weights,
                      memorization_png=args.memorization_png, use_cache=not args.no_cache)
    print(format_table(result))
    if args.memorization_png:
        print(f"wrote {args.memorization_png}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        print(f"wrote {args.json}")
    return 0
