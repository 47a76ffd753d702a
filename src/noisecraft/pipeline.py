"""Transitional: the names of the generation path before `noisecraft.pipelines` (removed at the end of the move)."""

from noisecraft.pipelines import MAX_NUM, batch_cond, load
from noisecraft.pipelines import sample_batches as generate

load_denoiser = load

__all__ = ["MAX_NUM", "batch_cond", "generate", "load_denoiser"]
