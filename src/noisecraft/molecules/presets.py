"""The `molecules` preset: E(3)-equivariant diffusion of small organic molecules (Hoogeboom et al. 2022).

The EGNN denoiser (`noisecraft.models.egnn`) with EDM preconditioning and loss (Karras et al. 2022) on the
bundled molecules (`noisecraft.molecules.data`), the atoms condition for the atom mask and the zero centre-of-mass
noise, Heun sampling on Karras steps. Sized for a CPU (benchmarks/modalities.md, "Molecules").
"""

from __future__ import annotations

from noisecraft.conditions.config import ConditioningConfig
from noisecraft.models.egnn import EGNN_PRESETS
from noisecraft.runconfig import DataConfig, DiffusionConfig, RunConfig, SampleConfig, TrainConfig

MOLECULES = RunConfig(
    name="molecules",
    model="egnn",
    network=EGNN_PRESETS["molecules"],
    diffusion=DiffusionConfig(schedule="edm", prediction="edm", weighting="simple", sigma_data=0.5),
    data=DataConfig(dataset="molecules", split="train"),
    conditioning=ConditioningConfig(cond_dropout=0.0, conditions=("atoms",)),
    train=TrainConfig(batch_size=64, lr=1e-3, warmup_steps=200, ema_decay=0.999, steps=3400, minutes=60.0,
                      checkpoint_every=500),
    sample=SampleConfig(sampler="heun", steps=40, step_schedule="karras", num=16),
)

MOLECULE_PRESETS: dict[str, RunConfig] = {"molecules": MOLECULES}
