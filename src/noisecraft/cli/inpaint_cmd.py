"""`noisecraft inpaint`: inpainting and outpainting (`noisecraft.editing.inpaint`: a mask-conditioned run, or
training-free on any run) -> PNG files."""

from __future__ import annotations

from noisecraft.cli.argtypes import KeyValues, key_value, positive_int


def add_parser(sub) -> None:
    from noisecraft.cli.sample_cmd import add_conditioning_arguments

    p = sub.add_parser("inpaint", help="inpaint or outpaint an image (mask-conditioned run, or any run training-free)")
    p.add_argument("--checkpoint", required=True, help="run directory, checkpoint file or diffusers folder")
    p.add_argument("--image", required=True, help="the image (PNG, JPEG, ...) of the model's size and channels; "
                                                  "with --outpaint, smaller by the pad (the model's canvas) or "
                                                  "of the model's size (a U-Net run: the canvas grows by the pad)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--mask", help="binary mask of the image's size: white = regenerate, black = keep")
    where.add_argument("--outpaint", type=int, nargs=4, metavar=("L", "T", "R", "B"),
                       help="outpaint: regenerate L, T, R, B pixels left, top, right and bottom of the image")
    p.add_argument("--method", default="auto",
                   help="auto (default: trained for a mask-conditioned run, else replace), trained, replace (the "
                        "replacement method, any run and sampler) or repaint (RePaint resampling)")
    p.add_argument("--jump", type=positive_int, default=10, help="RePaint jump length j (default 10)")
    p.add_argument("--resample", type=positive_int, default=10, help="RePaint resamplings r (default 10)")
    p.add_argument("--sampler", help="sampler name or alias (default: the run's; ddpm for repaint)")
    p.add_argument("--option", dest="options", type=key_value, action=KeyValues, metavar="KEY=VALUE",
                   help="a sampler option (repeatable); see `noisecraft samplers`")
    p.add_argument("--steps", type=positive_int, help="sampling steps (default: the run's)")
    p.add_argument("--step-schedule", help="the sampling step schedule (default: the run's)")
    p.add_argument("--seed", type=int, default=0, help="seed; image i uses seed + i (default 0)")
    p.add_argument("--num", type=positive_int, default=1, help="number of images (default 1)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per batch (default 64)")
    p.add_argument("--out", default="inpainted.png",
                   help="grid PNG path, or a directory for one PNG per image at the image's size")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    add_conditioning_arguments(p)


def _read(path: str, what: str, channels=None):
    from noisecraft.eval.image_io import read_single_image

    return read_single_image(path, what, channels=channels)


def run(args) -> int:
    from noisecraft.cli.sample_cmd import request_from_args, save_generation
    from noisecraft.editing.inpaint import METHODS, inpaint, outpaint
    from noisecraft.errors import unknown_name
    from noisecraft.pipelines import load

    if args.method not in METHODS:
        raise unknown_name("inpainting method (--method)", args.method, METHODS)
    loaded = load(args.checkpoint, use_ema=not args.no_ema, device=args.device)
    image = _read(args.image, "--image")
    options = {"method": args.method, "jump": args.jump, "resample": args.resample}
    request = request_from_args(args)
    if args.outpaint:
        result = outpaint(loaded, image, tuple(args.outpaint), request, **options)
    else:
        mask = (_read(args.mask, "--mask", channels=1) + 1) / 2  # 0 (black) .. 1 (white)
        result = inpaint(loaded, image, mask, request, **options)
    out = save_generation(result, args.out)
    print(f"wrote {out}")
    return 0
