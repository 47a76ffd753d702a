"""`noisecraft img2img`: SDEdit (--strength) or editing by ODE inversion (--invert) of one image toward a
condition; a thin shell over `noisecraft.editing.img2img`, writing PNGs as `noisecraft sample` does."""

from __future__ import annotations

from noisecraft.cli.argtypes import positive_int


def add_parser(sub) -> None:
    p = sub.add_parser("img2img", help="edit an image: SDEdit or ODE inversion toward a prompt or class")
    p.add_argument("--checkpoint", required=True, help="run directory or checkpoint (as for `noisecraft sample`)")
    p.add_argument("--image", required=True, help="the input picture (its size and channels must be the model's)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--strength", type=float, default=0.75,
                     help="SDEdit strength in [0, 1]: 0 returns the image, 1 is plain sampling (default 0.75)")
    how.add_argument("--invert", action="store_true",
                     help="invert the image by the probability-flow ODE (unconditionally), then re-sample toward "
                          "the condition with the same deterministic sampler (ddim, euler, heun, dpmpp_2m)")
    p.add_argument("--refine", type=int, default=None, metavar="K",
                   help="with --invert: fixed-point iterations per step for an exact inverse (ddim, euler, heun; "
                        "default 1, one extra network call per step; 0 for the plain inverse)")
    p.add_argument("--prompt", help="text prompt toward which to edit (text-conditional models)")
    p.add_argument("--class", dest="class_ids", type=int, nargs="+", metavar="N", help="target class id(s)")
    p.add_argument("--guidance", type=float, metavar="S", help="classifier-free guidance scale")
    p.add_argument("--sampler", help="sampler name or alias (default: the run's)")
    p.add_argument("--steps", type=positive_int, help="sampling steps (default: the run's)")
    p.add_argument("--seed", type=int, default=0, help="seed; output i uses seed + i (default 0)")
    p.add_argument("--num", type=positive_int, default=1, help="number of outputs (default 1)")
    p.add_argument("--out", default="img2img.png", help="grid PNG path, or a directory for one PNG per image")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def run(args) -> int:
    from noisecraft.cli.sample_cmd import save_generation
    from noisecraft.editing import img2img as edit
    from noisecraft.eval.image_io import read_single_image
    from noisecraft.pipelines import Request, load

    if not args.invert:
        edit.check_strength(args.strength)
    loaded = load(args.checkpoint, device=args.device)
    want = edit.image_shape(loaded)
    image = read_single_image(args.image, "--image")
    edit.check_image(loaded, image, 1)
    target = Request(prompts=None if args.prompt is None else (args.prompt,),
                     class_ids=None if args.class_ids is None else tuple(args.class_ids), guidance=args.guidance,
                     sampler=args.sampler, steps=args.steps, seed=args.seed, num=args.num)
    if args.invert:
        result = edit.edit_by_inversion(loaded, image, Request(), target, refine=args.refine)
    else:
        result = edit.img2img(loaded, image, target, args.strength)
    out = save_generation(result, args.out)
    print(f"wrote {out} ({len(result.images)} of {want[0]}x{want[1]}x{want[2]})")
    return 0
