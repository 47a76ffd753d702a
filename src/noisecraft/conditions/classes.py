"""Class labels: the network's class embedding (`cond["class_labels"]`), with label `num_classes` as the null
label of classifier-free guidance (Ho & Salimans 2022, Sec. 3.2)."""

from __future__ import annotations

import torch

from noisecraft.conditions.base import Condition, register
from noisecraft.errors import ConfigError, DataError, NoisecraftError


@register("class")
class ClassCondition(Condition):
    """A dataset's integer labels; the run's network has `num_classes` > 0 (the class embedding's size)."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self.num_classes = int(getattr(config.network, "num_classes", 0))
        self.class_names: list[str] | None = None

    def network_fields(self) -> dict[str, int]:
        return {"num_classes": self.num_classes}

    def setup(self, dataset, net, device, progress: bool = False) -> None:
        super().setup(dataset, net, device, progress)
        if dataset.labels is None:
            raise DataError(f"the network is class-conditional (num_classes={self.num_classes}) but dataset "
                            f"{dataset.name!r} has no labels")
        if dataset.num_classes != self.num_classes:
            raise ConfigError(f"the network's num_classes={self.num_classes} does not match dataset "
                              f"{dataset.name!r} with {dataset.num_classes} classes")
        self.labels = dataset.labels.to(self.device)

    def from_batch(self, idx):
        return {"class_labels": self.labels[idx]}

    def null(self, n: int) -> dict:
        return {"class_labels": torch.full((n,), self.num_classes, dtype=torch.long, device=self.device)}

    def given(self, request) -> bool:
        return request.class_ids is not None

    def check_request(self, request) -> None:
        for c in request.class_ids or ():
            if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < self.num_classes:
                raise NoisecraftError(f"class id {c!r} is out of range; this model has {self.num_classes} classes: "
                                      f"0..{self.num_classes - 1}{self._names()}")

    def from_request(self, request, num: int, seed=None) -> dict:
        ids = per_image(request.class_ids, num, "class id")
        return {"class_labels": torch.tensor(ids, dtype=torch.long, device=self.device)}

    def describe(self) -> str:
        return f"a class-conditional model with {self.num_classes} classes; use --class 0..{self.num_classes - 1}"

    def _names(self) -> str:
        names = self.class_names
        if names is None:
            from noisecraft.data import load_dataset

            d = self.config.data
            try:
                names = load_dataset(d.dataset, root=d.root, split=d.split, limit=1).class_names or []
            except NoisecraftError:
                names = []
            self.class_names = names
        if not names:
            return ""
        shown = ", ".join(f"{i}={n}" for i, n in enumerate(names[:12]))
        return f" ({shown}{', ...' if len(names) > 12 else ''})"


def per_image(values, num: int, what: str) -> list:
    """One value for every image, or one per image: the list of num values."""
    if len(values) not in (1, num):
        raise NoisecraftError(f"give one {what} or one per image ({num}); got {len(values)}")
    return list(values) * (num if len(values) == 1 else 1)
