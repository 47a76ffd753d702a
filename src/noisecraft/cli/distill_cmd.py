"""`noisecraft distill`: make a few-step student from a trained run (consistency distillation, consistency
training, easy consistency tuning, guided LCM-style distillation, rectified-flow reflow, sCM), then write loss.png and
a preview grid sampled with the student's own sampler."""

from __future__ import annotations

from noisecraft.cli.argtypes import positive_float, positive_int
from noisecraft.distill_config import METHODS  # light: dataclasses and errors only


def add_parser(sub) -> None:
    p = sub.add_parser("distill", help="make a 1-4 step student of a trained run",
                       description="Distil --teacher RUN into a few-step student in --out: cd (consistency "
                                   "distillation), ct (consistency training, iCT), ect (easy consistency tuning), "
                                   "lcm (guided distillation, the guidance scale as an input), reflow (rectified "
                                   "flow, then one step) or scm (continuous-time consistency distillation, sCD, "
                                   "TrigFlow; EDM teachers). Sample it with --sampler consistency --steps 1|2|4. Field "
                                   "overrides such as distill.num_scales=40 or train.lr=1e-4 follow as positional "
                                   "arguments.")
    p.add_argument("--teacher", required=True, help="the trained run directory to distil")
    p.add_argument("--method", required=True, choices=METHODS, help="the few-step method")
    p.add_argument("--minutes", type=positive_float, help="stop after this much wall time")
    p.add_argument("--steps", type=positive_int, help="stop after this many steps")
    p.add_argument("--out", required=True, help="student run directory (also a valid --checkpoint)")
    p.add_argument("--resume", action="store_true", help="continue the student in --out exactly where it stopped")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("overrides", nargs="*", metavar="section.field=value", help="config overrides")


def run(args) -> int:
    from noisecraft.distill.trainer import Distiller, student_config
    from noisecraft.errors import NoisecraftError
    from noisecraft.training.distributed import teardown

    if args.minutes is None and args.steps is None:
        raise NoisecraftError("give --minutes or --steps (the distillation's budget)")
    config = student_config(args.teacher, args.method, steps=args.steps, minutes=args.minutes,
                            overrides=tuple(args.overrides))
    try:
        distiller = Distiller(config, args.out, resume=args.resume, device=args.device)
        result = distiller.run()
        if distiller.dist.is_main:
            _after(distiller)
    finally:
        teardown()
    loss = "n/a" if result["loss"] is None else f"{result['loss']:.4g}"
    print(f"distilled ({args.method}) to step {result['step']} in {result['seconds']:.0f} s (loss {loss}) -> "
          f"{args.out}\n  sample: noisecraft sample --checkpoint {args.out} --sampler consistency --steps 2")
    return 0


def _after(distiller) -> None:
    """loss.png and samples.png (the student's default sampler and steps)."""
    from noisecraft.cli.sample_cmd import write_generation
    from noisecraft.pipelines import load
    from noisecraft.pipelines.preview import preview_request
    from noisecraft.viz import plot_loss

    out = distiller.out_dir
    if distiller.log:
        plot_loss(distiller.log, out / "loss.png", title=f"{distiller.config.name}: distillation loss")
    write_generation(load(out), preview_request(distiller.config, distiller.data, distiller.config.sample.num),
                     out / "samples.png")
