"""`noisecraft onnx-sample`: sample an exported ONNX loop graph with onnxruntime and write a PNG grid.

The sampling itself is `noisecraft.interop.onnx_run` (numpy + onnxruntime, no torch); this command only adds the
grid PNG through `noisecraft.viz.save_grid` with the graph's parameters in its metadata."""

from __future__ import annotations

from noisecraft.cli.argtypes import positive_int


def add_parser(sub) -> None:
    p = sub.add_parser("onnx-sample", help="sample an ONNX loop graph (noisecraft export --what loop) with onnxruntime",
                       description="Run an exported sampling-loop graph with onnxruntime. Image i uses numpy's "
                                   "generator seeded seed + i (not torch's, so the images differ from noisecraft "
                                   "sample's for the same seed).")
    p.add_argument("--model", required=True, help="the .onnx loop graph")
    p.add_argument("--num", type=positive_int, default=16, help="number of images (default 16)")
    p.add_argument("--seed", type=int, default=0, help="seed; image i uses seed + i (default 0)")
    p.add_argument("--class", dest="class_id", type=int, default=None, metavar="K", help="class id (class models)")
    p.add_argument("--guidance", type=float, default=None, metavar="W", help="CFG scale (default 1: conditional)")
    p.add_argument("--out", default="samples.png", help="grid PNG path (default samples.png)")


def run(args) -> int:
    import torch

    from noisecraft.errors import NoisecraftError
    from noisecraft.interop.onnx_run import OnnxRunError, load_loop, sample
    from noisecraft.viz import save_grid

    try:
        session, meta = load_loop(args.model)
        if meta.get("latent"):
            raise OnnxRunError("a latent model's loop graph returns latents (its decoder is not in the graph)")
        x = sample(session, meta, num=args.num, seed=args.seed, guidance=args.guidance,
                   class_ids=None if args.class_id is None else [args.class_id])
    except OnnxRunError as e:
        raise NoisecraftError(str(e)) from None
    info = {k: meta.get(k) for k in ("model", "model_step", "sampler", "steps", "step_schedule")}
    info.update(seed=args.seed, num=args.num, class_id=args.class_id, guidance=args.guidance, onnx=str(args.model))
    save_grid(torch.from_numpy(x), args.out, info=info)
    print(f"{args.num} samples ({meta['sampler']}, {meta['steps']} steps, onnxruntime) -> {args.out}")
    return 0
