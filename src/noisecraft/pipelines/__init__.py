"""Loading runs and generating from them: the one path the CLI, the benchmarks, evaluation and (later) the
server share. `load(path)` -> `Run`; `generate(run, Request(...))` -> `Generation`."""

from noisecraft.pipelines.generate import (
    Generation,
    Plan,
    batch_cond,
    check_request,
    conditioned,
    generate,
    plan,
    sample_batches,
)
from noisecraft.pipelines.loading import LOADERS, load
from noisecraft.pipelines.request import MAX_NUM, Request
from noisecraft.pipelines.run import Run, load_checkpoint_run, sample_shape

__all__ = ["Generation", "LOADERS", "MAX_NUM", "Plan", "Request", "Run", "batch_cond", "check_request", "conditioned",
           "generate", "load", "load_checkpoint_run", "plan", "sample_batches", "sample_shape"]
