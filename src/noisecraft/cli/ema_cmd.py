"""`noisecraft ema`: reconstruct a post-hoc EMA of any length from a run's snapshots (Karras et al. 2024).

Writes a normal checkpoint whose EMA weights are the reconstruction; `noisecraft sample --checkpoint OUT`
then samples from it."""

from __future__ import annotations

from noisecraft.cli.argtypes import positive_float, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser("ema", help="reconstruct a post-hoc EMA (EDM2) of any sigma_rel from a run's snapshots",
                       description="Solve for the combination of the run's stored power-function EMA snapshots "
                                   "(train.phema_sigma_rels) that best matches the EMA profile with relative "
                                   "width --sigma-rel at --step, and write it as a loadable checkpoint.")
    p.add_argument("--checkpoint", required=True, help="run directory trained with train.phema_sigma_rels")
    p.add_argument("--sigma-rel", type=positive_float, required=True,
                   help="relative standard deviation of the EMA profile, in (0, 0.2887); EDM2 sweeps 0.01-0.25")
    p.add_argument("--step", type=positive_int, default=None, help="training time t (default: the last snapshot)")
    p.add_argument("--out", default=None, help="output run directory (default: DIR/posthoc-ema-<sigma_rel>)")


def run(args) -> int:
    from pathlib import Path

    from noisecraft.training.posthoc_ema import write_posthoc_checkpoint

    out = Path(args.out) if args.out else Path(args.checkpoint) / f"posthoc-ema-{args.sigma_rel:g}"
    info = write_posthoc_checkpoint(args.checkpoint, out, args.sigma_rel, step=args.step)
    used = sum(1 for s in info["snapshots"] if abs(s["coefficient"]) > 1e-12)
    print(f"post-hoc EMA sigma_rel={args.sigma_rel:g} (gamma={info['gamma']:.3f}) at step {info['step']} from "
          f"{used} snapshot profiles -> {out}")
    return 0
