"""Conditions ("providers"): what a model is conditioned on, from a training batch or a user's request.

`conditions_for(config)` gives a run's `ConditionSet`: class labels when the network has `num_classes`,
text when `text.encoder` is set, layout grounding with `conditioning.layout`, then every name in
`conditioning.conditions` from the `CONDITIONS` registry (where a new condition registers itself with
`@register("name")`). See `noisecraft.conditions.base` for the protocol.
"""

from __future__ import annotations

from noisecraft.conditions.atoms import AtomCondition  # molecules (registers 'atoms')
from noisecraft.conditions.base import CONDITIONS, Condition, ConditionSet, merge, register, where_dropped
from noisecraft.conditions.classes import ClassCondition, per_image
from noisecraft.conditions.config import ConditioningConfig
from noisecraft.conditions.control import Control, ControlCondition
from noisecraft.conditions.first_frame import FirstFrameCondition  # image-to-video (registers 'first-frame')
from noisecraft.conditions.inflate import InflateCondition  # video U-Net from an image run (registers 'inflate')
from noisecraft.conditions.inpaint import InpaintCondition
from noisecraft.conditions.low_res import LowResCondition
from noisecraft.conditions.text import TEXT_IDS, PromptCondition, TextCondition, TextEncoderNet
from noisecraft.errors import unknown_name


def conditions_for(config) -> ConditionSet:
    """The conditions of a run config, in order: class, text, layout, then conditioning.conditions."""
    out = []
    if getattr(config.network, "num_classes", 0):
        out.append(ClassCondition(config))
    if config.text.encoder != "none":
        out.append(TextCondition(config))
    if config.conditioning.layout:
        from noisecraft.conditions.layout import LayoutCondition

        out.append(LayoutCondition(config))
    for name in config.conditioning.conditions:
        if name not in CONDITIONS:
            raise unknown_name("condition", name, CONDITIONS)
        out.append(CONDITIONS[name](config))
    return ConditionSet(out, config.conditioning.cond_dropout)


__all__ = ["AtomCondition", "CONDITIONS", "ClassCondition", "Condition", "ConditionSet", "ConditioningConfig",
           "Control", "ControlCondition", "FirstFrameCondition", "InflateCondition", "InpaintCondition",
           "LowResCondition",
           "PromptCondition",
           "TEXT_IDS", "TextCondition", "TextEncoderNet", "conditions_for", "merge", "per_image", "register",
           "where_dropped"]
