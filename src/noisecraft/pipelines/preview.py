"""The request a run's preview grid (written after training) is drawn with."""

from __future__ import annotations

from noisecraft.pipelines.request import Request


def preview_request(config, dataset, num: int, conditions=None) -> Request:
    """Classes 0, 1, ... in turn for a class-conditional run, the dataset's first distinct captions in turn for a
    text-conditional one, no guidance; seed 0. Unconditional runs: a plain request for num images. conditions (the
    run's ConditionSet): the values its conditions preview from the dataset (a super-resolution model's
    low-resolution images, a ControlNet's maps, an inpainting model's masked images)."""
    values = conditions.preview(dataset, num) if conditions else {}
    extra = {"conditions": values} if values else {}
    if config.text.encoder != "none" and dataset.captions:
        distinct = list(dict.fromkeys(dataset.captions))[:max(1, min(num, 8))]
        return Request(prompts=tuple(distinct[i % len(distinct)] for i in range(num)), num=num, **extra)
    num_classes = getattr(config.network, "num_classes", 0)
    if num_classes:
        return Request(class_ids=tuple(i % num_classes for i in range(num)), num=num, **extra)
    return Request(num=num, **extra)
