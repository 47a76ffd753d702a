"""The request a run's preview grid (written after training) is drawn with."""

from __future__ import annotations

from noisecraft.pipelines.request import Request


def preview_request(config, dataset, num: int) -> Request:
    """Classes 0, 1, ... in turn for a class-conditional run, the dataset's first distinct captions in turn for a
    text-conditional one, no guidance; seed 0. Unconditional runs: a plain request for num images."""
    if config.text.encoder != "none" and dataset.captions:
        distinct = list(dict.fromkeys(dataset.captions))[:max(1, min(num, 8))]
        return Request(prompts=tuple(distinct[i % len(distinct)] for i in range(num)), num=num)
    num_classes = getattr(config.network, "num_classes", 0)
    if num_classes:
        return Request(class_ids=tuple(i % num_classes for i in range(num)), num=num)
    return Request(num=num)
