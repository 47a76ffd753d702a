"""`noisecraft export`: a run as ONNX (the denoiser, or a whole sampling loop as one graph) or as a diffusers folder.

    noisecraft export --checkpoint runs/mnist-class --format onnx --what loop --sampler dpmpp_2m --steps 12 \\
        --out loop.onnx
    noisecraft onnx-sample --model loop.onnx --num 16 --class 3 --guidance 2 --out grid.png   # no torch needed

The graphs are described in `noisecraft.interop.onnx_export`; `noisecraft.interop.onnx_run` samples a loop graph
with numpy and onnxruntime only."""

from __future__ import annotations

from noisecraft.cli.argtypes import positive_int

FORMATS = ("onnx", "diffusers")
WHAT = ("denoiser", "loop")


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export a run as ONNX (denoiser or sampling loop) or a diffusers folder",
                       description="Export a trained run. --format onnx --what denoiser writes D(x, sigma, cond) -> "
                                   "x0; --what loop writes the whole fixed-step sampler (ddim, euler, dpmpp_2m) "
                                   "with its sigmas and classifier-free guidance in one graph. --format diffusers "
                                   "writes a diffusers model folder.")
    p.add_argument("--checkpoint", required=True, help="run directory or checkpoint.safetensors")
    p.add_argument("--format", choices=FORMATS, default="onnx", help="onnx (default) or diffusers")
    p.add_argument("--what", choices=WHAT, default="denoiser", help="onnx: the denoiser (default) or the loop")
    p.add_argument("--sampler", default="ddim", help="loop: ddim (eta 0, default), euler or dpmpp_2m")
    p.add_argument("--steps", type=positive_int, default=None, help="loop: sampling steps (default: the run's)")
    p.add_argument("--step-schedule", default=None, help="loop: the step schedule (default: the run's)")
    p.add_argument("--opset", type=positive_int, default=17, help="onnx: opset version, >= 17 (default 17)")
    p.add_argument("--no-ema", action="store_true", help="export the raw weights instead of the EMA")
    p.add_argument("--out", required=True, help="the .onnx file, or the diffusers output directory")


def run(args) -> int:
    from noisecraft.pipelines import load

    run_ = load(args.checkpoint, use_ema=not args.no_ema)
    if args.format == "diffusers":
        return _diffusers(run_, args.out)
    from noisecraft.interop.onnx_export import export_denoiser, export_loop

    if args.what == "denoiser":
        path = export_denoiser(run_, args.out, opset=args.opset)
        print(f"denoiser of {run_.config.name!r} -> {path}")
    else:
        path = export_loop(run_, args.out, sampler=args.sampler, steps=args.steps, step_schedule=args.step_schedule,
                           opset=args.opset)
        print(f"{args.sampler} sampling loop of {run_.config.name!r} -> {path}")
    return 0


def _diffusers(run_, out) -> int:
    from noisecraft.errors import NoisecraftError

    try:
        from noisecraft.interop.diffusers_export import export_diffusers
    except ImportError as e:
        raise NoisecraftError(f"--format diffusers is not available in this installation ({e})") from None
    export_diffusers(run_, out)
    print(f"diffusers folder of {run_.config.name!r} -> {out}")
    return 0
