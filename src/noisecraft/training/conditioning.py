"""The trainer's hook into the run's conditions (`noisecraft.conditions`): a transitional adapter."""

from __future__ import annotations

from noisecraft.conditions import conditions_for


class Conditioner:
    """The batch conditions of a training run: `conditioner(idx, gen)` -> cond, `prepare(out_dir)` once."""

    def __init__(self, config, dataset, net, device="cpu", progress: bool = True):
        self.conditions = conditions_for(config)
        self.conditions.setup(dataset, net, device, progress)

    def __call__(self, idx, gen):
        return self.conditions.batch(idx, gen)

    def prepare(self, out_dir, progress: bool = False) -> None:
        self.conditions.prepare(out_dir, progress)
