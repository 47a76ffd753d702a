"""`noisecraft sample`: a thin shell over `noisecraft.pipelines` - arguments -> Request -> generate -> PNG files."""

from __future__ import annotations

import argparse
from pathlib import Path

from noisecraft.cli.argtypes import KeyValues, key_value, positive_int


class _ListSamplers(argparse.Action):
    """--list-samplers: print `noisecraft samplers` and exit 0 (before --checkpoint is required)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from noisecraft.cli.samplers_cmd import listing

        print(listing())
        parser.exit(0)


def add_parser(sub) -> None:
    p = sub.add_parser("sample", help="generate images from a trained run")
    p.add_argument("--checkpoint", required=True,
                   help="run directory, checkpoint.safetensors, a diffusers model or pipeline folder, or a Stable "
                        "Diffusion single-file .safetensors")
    p.add_argument("--config-dir",
                   help="for a single-file checkpoint: the local diffusers folder of its family's configs "
                        "(model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/)")
    p.add_argument("--list-samplers", action=_ListSamplers, help="list the samplers, aliases and options, and exit")
    p.add_argument("--sampler", help="sampler name or alias (default: the run's); see --list-samplers")
    p.add_argument("--option", dest="options", type=key_value, action=KeyValues, metavar="KEY=VALUE",
                   help="a sampler option (repeatable), e.g. --option s_churn=0.5 for heun; see --list-samplers")
    p.add_argument("--eta", dest="options", action=KeyValues, key="eta", metavar="ETA",
                   help="shorthand for --option eta=ETA (ddim, ancestral and SDE samplers)")
    p.add_argument("--steps", type=positive_int, help="sampling steps (default: the run's)")
    p.add_argument("--solver", metavar="FILE.json",
                   help="a fitted solver from `noisecraft schedule fit-solver` (sampler 'fitted'; steps = its NFE)")
    p.add_argument("--step-schedule", help="the sampling step schedule: trailing, leading, linspace, karras, "
                                           "exponential, uniform, ays, or a .json from `noisecraft schedule "
                                           "optimise` (default: the run's)")
    p.add_argument("--schedule", dest="step_schedule", help=argparse.SUPPRESS)  # deprecated spelling
    p.add_argument("--seed", type=int, default=0, help="seed; image i uses seed + i (default 0)")
    p.add_argument("--num", type=positive_int, default=16, help="number of images (default 16)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per batch (default 64)")
    p.add_argument("--out", default="samples.png", help="grid PNG path, or a directory for one PNG per image")
    p.add_argument("--trajectory", help="also write the reverse process of image 0, each step labelled with its "
                                        "sigma (.png strip or .gif)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--frames", type=positive_int, help="video models: frames per clip (default: the trained count)")
    p.add_argument("--first-frame", metavar="IMAGE",
                   help="image-to-video models: the first frame (an image, or a video file's first frame)")
    p.add_argument("--atoms", type=positive_int, nargs="+", metavar="N",
                   help="molecule models: atom count(s), one for all molecules or one per molecule (default: drawn "
                        "from the training molecules)")
    p.add_argument("--motif", metavar="FILE.xyz",
                   help="molecule models: scaffold a motif (.xyz or .sdf of one molecule): its atoms keep their "
                        "elements and positions, the rest is generated around them (noisecraft.molecules.motif)")
    add_conditioning_arguments(p)
    c = p.add_argument_group("structure control (ControlNet runs)")
    c.add_argument("--control", metavar="MAP.png",
                   help="the control map (white = edge or stroke) at the model's image size, for every image")
    c.add_argument("--controlnet", metavar="DIR",
                   help="a diffusers ControlNetModel folder to attach to a loaded Stable Diffusion model (then give "
                        "--control IMAGE.png at the image size)")
    c.add_argument("--control-scale", type=float, metavar="S",
                   help="the conditioning scale, a finite number >= 0 (0 = the base model; default: the run's "
                        "conditioning.control_scale, 1)")
    p.add_argument("--lora", action="append", default=[], metavar="FILE[:SCALE]",
                   help="merge a LoRA .safetensors file (diffusers/peft or kohya keys) into the model with this "
                        "scale (default 1); repeatable; keys that match nothing are an error naming them")
    p.add_argument("--embedding", action="append", default=[], metavar="FILE",
                   help="load a textual-inversion embedding (.safetensors, diffusers or A1111 layout) into the text "
                        "encoder; write its token in --prompt; repeatable")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def add_conditioning_arguments(p) -> None:
    g = p.add_argument_group("conditioning and guidance")
    g.add_argument("--prompt", help="text prompt (text-to-image models, e.g. the scenes-text preset)")
    g.add_argument("--negative-prompt", help="guide away from this text instead of the empty prompt")
    g.add_argument("--class", dest="class_ids", type=int, nargs="+", metavar="N",
                   help="class id(s) of a class-conditional model: one for all images or one per image")
    g.add_argument("--guidance", type=float, metavar="S",
                   help="classifier-free guidance scale (1 = the conditional model, 0 = unconditional)")
    g.add_argument("--guidance-interval", type=float, nargs=2, metavar=("LO", "HI"),
                   help="guide only while sigma is in [LO, HI] (Kynkaanniemi et al. 2024)")
    g.add_argument("--guidance-rescale", type=float, default=0.0, metavar="PHI",
                   help="guidance rescale phi in [0, 1] (Lin et al. 2024; default 0 = off)")


def request_from_args(args):
    """The pipelines.Request of the sample command's arguments."""
    from noisecraft.pipelines import Request

    def tup(v):
        return None if v is None else tuple(v)

    conditions = control_condition(args)
    sampler, options, steps = args.sampler, dict(args.options or {}), args.steps
    if getattr(args, "solver", None):  # a fitted solver (noisecraft.samplers.fitted)
        from noisecraft.samplers.fitted import solver_request

        (sampler, steps), options["solver"] = solver_request(args.solver, sampler, steps), args.solver
    if getattr(args, "first_frame", None) is not None:  # image-to-video (noisecraft.conditions.first_frame)
        conditions = {**(conditions or {}), "first-frame": args.first_frame}
    if getattr(args, "atoms", None) is not None:  # molecule models (noisecraft.conditions.atoms)
        conditions = {**(conditions or {}), "atoms": args.atoms[0] if len(args.atoms) == 1 else list(args.atoms)}
    return Request(prompts=None if args.prompt is None else (args.prompt,), negative_prompt=args.negative_prompt,
                   class_ids=tup(args.class_ids), guidance=args.guidance, guidance_interval=tup(args.guidance_interval),
                   guidance_rescale=args.guidance_rescale, sampler=sampler, options=options,
                   steps=steps, step_schedule=args.step_schedule, seed=args.seed, num=args.num,
                   batch_size=args.batch_size, conditions=conditions)


def control_condition(args) -> dict | None:
    """{"control": Control(map, scale)} from --control / --control-scale (the map read as grey in [0, 1])."""
    path, scale = getattr(args, "control", None), getattr(args, "control_scale", None)
    if path is None:
        if scale is not None:
            from noisecraft.errors import NoisecraftError

            raise NoisecraftError("--control-scale given without --control MAP.png")
        return None
    from noisecraft.conditions.control import Control, check_scale
    from noisecraft.eval.image_io import read_single_image

    m = (read_single_image(path, "--control", channels=1) + 1) / 2  # (1, H, W) in [0, 1]
    return {"control": Control(m, None if scale is None else check_scale(scale))}


def check_control(run, args) -> None:
    """--control on a run without a ControlNet: one line naming what the run takes."""
    if getattr(args, "control", None) is None or run.conditions.get("control") is not None:
        return
    from noisecraft.errors import NoisecraftError

    conds = run.conditions
    what = conds.describe() if conds else "an unconditional model"
    raise NoisecraftError(f"--control given, but model {run.config.name!r} has no structure control (it is {what}); "
                          f"train a ControlNet on it: noisecraft train --preset mnist-control-canny "
                          f"conditioning.control_base={args.checkpoint}")


def write_generation(run, request, out, *, callback=None) -> Path:
    """Generate `request` on `run` and write it (`save_generation`)."""
    from noisecraft.pipelines import generate
    from noisecraft.pipelines.outputs import writer_for

    writer = writer_for(run, out)  # a modality's own writer (video, audio, ...), checked before generating
    result = generate(run, request, callback=callback)
    if writer is not None:
        return writer(result, Path(out), run)
    return save_generation(result, out, points=len(run.data_shape) == 1)


def save_generation(result, out, *, points: bool = False) -> Path:
    """Write a `Generation`: a grid PNG (out ends in .png) or one PNG per image at its own size (out is a
    directory, files named by seed), each with its parameters (A1111 layout) and metadata; 1-D data (points) as a
    scatter plot. Shared by sample, img2img and inpaint."""
    from noisecraft.viz import save_grid, save_png, save_points, to_uint8

    out, images, info = Path(out), result.images, result.parameters
    if points:
        save_points(images, out, title=f"{info['model']}: {len(images)} samples")
    elif out.suffix.lower() == ".png":
        save_grid(images, out, parameters=result.infotext(0), info=info)
    else:
        for i, img in enumerate(to_uint8(images)):
            save_png(img, out / f"{result.seeds[i]:06d}.png", parameters=result.infotext(i),
                     info={**info, "seed": result.seeds[i], "num": 1, "grid": False})
    return out


def run(args) -> int:
    from noisecraft.pipelines import load

    loaded = load(args.checkpoint, use_ema=not args.no_ema, device=args.device, config_dir=args.config_dir)
    for embedding in getattr(args, "embedding", None) or []:
        from noisecraft.finetune.embeddings import apply_embedding

        print(f"loaded embedding {apply_embedding(loaded, embedding)!r} from {embedding}")
    if args.lora:
        from noisecraft.interop.lora import apply_lora_specs

        apply_lora_specs(loaded, args.lora)
    if getattr(args, "controlnet", None):
        from noisecraft.interop.diffusers_controlnet import attach_controlnet

        attach_controlnet(loaded, args.controlnet)
    check_control(loaded, args)
    if getattr(args, "frames", None) is not None:  # video models (noisecraft.video.frames)
        from noisecraft.video.frames import with_frames

        loaded = with_frames(loaded, args.frames)
    frames = []

    def record(info):
        frames.append((info["sigma"], info["x"][0].float().cpu(), info["denoised"][0].float().cpu()))

    callback = None
    if args.trajectory:
        callback = record if loaded.autoencoder is None else decoding_callback(loaded, record)
    if getattr(args, "motif", None) is not None:  # molecule models: motif scaffolding
        from noisecraft.molecules.motif import write_scaffolds

        out = write_scaffolds(loaded, request_from_args(args), args.motif, args.out, callback=callback)
    else:
        out = write_generation(loaded, request_from_args(args), args.out, callback=callback)
    print(f"wrote {out}")
    if args.trajectory:
        from noisecraft.viz import save_trajectory

        save_trajectory(first_batch(frames), args.trajectory)
        print(f"wrote {args.trajectory}")
    return 0


def decoding_callback(run, callback):
    """Latent diffusion: pass the callback x_t and the x0 estimate of each batch's first sample decoded through
    the autoencoder (the only one a trajectory shows), so trajectory frames are images, not latents. x_t is
    decoded at unit scale, x_t / sqrt(1 + sigma^2), and scaled back, as viz.trajectory_frames divides by it."""
    def decoded(info):
        s = (1 + info["sigma"] ** 2) ** 0.5
        x = run.to_images(info["x"][:1].float() / s) * s
        callback({**info, "x": x, "denoised": run.to_images(info["denoised"][:1].float())})

    return decoded


def first_batch(frames):
    """The callback saw every batch; keep the steps of the first (image 0's batch)."""
    out, last_sigma = [], float("inf")
    for f in frames:
        if f[0] >= last_sigma:
            break
        out.append(f)
        last_sigma = f[0]
    return out
