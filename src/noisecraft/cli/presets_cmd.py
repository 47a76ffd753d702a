"""`noisecraft presets`: list the training presets."""

from __future__ import annotations


def add_parser(sub) -> None:
    sub.add_parser("presets", help="list the training presets")


def run(args) -> int:
    from noisecraft.presets import PRESETS

    for name, cfg in PRESETS.items():
        d = cfg.diffusion
        minutes = f"{cfg.train.minutes:g} min" if cfg.train.minutes else f"{cfg.train.steps} steps"
        print(f"{name:12s} data={cfg.data.dataset:10s} net={cfg.model!s:5s} schedule={d.schedule:8s} "
              f"prediction={d.prediction:5s} {minutes}")
    return 0
