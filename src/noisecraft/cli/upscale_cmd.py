"""`noisecraft upscale`: super-resolution of a low-resolution picture with one SR run or a chain of them, or a
whole Imagen-style cascade from a base run; a thin shell over `noisecraft.editing.upscale`, writing PNGs as
`noisecraft sample` does."""

from __future__ import annotations

from noisecraft.cli.argtypes import positive_int


def add_parser(sub) -> None:
    p = sub.add_parser("upscale", help="super-resolution: upscale an image, or run a cascade from a base model")
    p.add_argument("--checkpoint", action="append", required=True, metavar="SR",
                   help="a super-resolution run (e.g. preset glyphs-sr-32); repeat for a chain, lowest first")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", help="the low-resolution picture (the first SR run's size / factor, its channels)")
    src.add_argument("--base", metavar="BASE_RUN", help="a base run to sample first (a cascade, e.g. glyphs-16)")
    p.add_argument("--num", type=positive_int, default=1, help="number of outputs (default 1)")
    p.add_argument("--aug-level", type=float, metavar="A",
                   help="noise conditioning augmentation level in [0, 1] at every SR stage (default: each run's "
                        "conditioning.low_res_aug_sample); a loaded Stable Diffusion upscaler takes its integer "
                        "noise level in [0, max_noise_level] (default 20)")
    p.add_argument("--class", dest="class_ids", type=int, nargs="+", metavar="N",
                   help="class id(s) for SR runs (and base) that are class-conditional")
    p.add_argument("--prompt", help="text prompt for text-conditional runs")
    p.add_argument("--guidance", type=float, metavar="S", help="classifier-free guidance scale (class or prompt)")
    p.add_argument("--sampler", help="sampler name or alias for the SR stages (default: each run's)")
    p.add_argument("--steps", type=positive_int, help="sampling steps of the SR stages (default: each run's)")
    p.add_argument("--seed", type=int, default=0, help="seed; output i uses seed + i at every stage (default 0)")
    p.add_argument("--out", default="upscaled.png", help="grid PNG path, or a directory for one PNG per image")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def run(args) -> int:
    from dataclasses import replace

    from noisecraft.cli.sample_cmd import save_generation
    from noisecraft.editing import upscale as sr
    from noisecraft.errors import NoisecraftError
    from noisecraft.eval.image_io import read_single_image
    from noisecraft.pipelines import Request, generate, load

    runs = [load(path, device=args.device) for path in args.checkpoint]
    for r in runs:
        c = sr.sr_condition(r)
        if args.aug_level is not None:
            try:
                c.checked_level(args.aug_level)
            except NoisecraftError as e:
                raise NoisecraftError(f"--aug-level for {r.config.name!r}: {e}") from None
    request = Request(prompts=None if args.prompt is None else (args.prompt,),
                      class_ids=None if args.class_ids is None else tuple(args.class_ids), guidance=args.guidance,
                      sampler=args.sampler, steps=args.steps, seed=args.seed, num=args.num)
    if args.base:
        base = load(args.base, device=args.device)
        plain = Request(seed=args.seed, num=args.num)
        base_request = request if base.conditions else plain
        images = generate(base, replace(base_request, sampler=None, steps=None)).images.clamp(-1, 1)
    else:
        images = read_single_image(args.image, "--image")
        sr.check_low_res(runs[0], images, args.num)
    result = None
    for r in runs:
        result = sr.upscale(r, images, request, aug_level=args.aug_level)
        images = result.images.clamp(-1, 1)
    out = save_generation(result, args.out)
    c, h, w = result.images.shape[1:]
    print(f"wrote {out} ({len(result.images)} of {h}x{w}x{c})")
    return 0
