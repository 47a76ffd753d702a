"""The `points-shapes` preset: class-conditional point-cloud diffusion on the primitive shapes (Point-E style).

The point transformer (`noisecraft.models.point_transformer`, 4 blocks of width 128) on the 128-point clouds of
`shapes-points` (`noisecraft.points.shapes`), conditioned on the shape kind (6 classes, null label 6, condition
dropout 0.1 for classifier-free guidance, Ho & Salimans 2022), EDM preconditioning and loss (Karras et al. 2022;
the clouds have a per-coordinate std of about 0.42, hence sigma_data = 0.5), Heun sampling on Karras steps. Sized for
a CPU (benchmarks/modalities.md, "Point clouds"). A text-conditional run uses the captions ("a tall cylinder"):
preset `points-shapes-text`.
"""

from __future__ import annotations

from dataclasses import replace

from noisecraft.conditions.config import ConditioningConfig
from noisecraft.models.point_transformer import POINT_TRANSFORMER_PRESETS
from noisecraft.points.shapes import KINDS
from noisecraft.runconfig import DataConfig, DiffusionConfig, RunConfig, SampleConfig, TrainConfig
from noisecraft.text.config import TextConfig

POINTS_SHAPES = RunConfig(
    name="points-shapes",
    model="point-transformer",
    network=replace(POINT_TRANSFORMER_PRESETS["shapes"], num_classes=len(KINDS)),
    diffusion=DiffusionConfig(schedule="edm", prediction="edm", weighting="simple", sigma_data=0.5),
    data=DataConfig(dataset="shapes-points", split="train"),
    conditioning=ConditioningConfig(cond_dropout=0.1),
    train=TrainConfig(batch_size=32, lr=5e-4, warmup_steps=100, ema_decay=0.999, steps=1_000_000, minutes=12.0,
                      checkpoint_every=250),
    sample=SampleConfig(sampler="heun", steps=32, step_schedule="karras", num=16),
)

# Text-to-point-cloud on the captions ("a tall cylinder", "a flat box"): the bundled MiniLM's tokens through
# cross-attention in every block and its pooled sentence vector added to the conditioning vector.
POINTS_SHAPES_TEXT = replace(POINTS_SHAPES, name="points-shapes-text", network=POINT_TRANSFORMER_PRESETS["shapes"],
                             text=TextConfig(encoder="minilm", max_tokens=16))

POINT_PRESETS: dict[str, RunConfig] = {"points-shapes": POINTS_SHAPES, "points-shapes-text": POINTS_SHAPES_TEXT}
