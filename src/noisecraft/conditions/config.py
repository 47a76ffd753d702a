"""The `conditioning` section of a run config (`RunConfig.conditioning`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from noisecraft.errors import require


@dataclass(frozen=True)
class ConditioningConfig:
    cond_dropout: float = 0.1       # P(a training sample gets the null condition), for CFG (Ho & Salimans 2022)
    text_tokens: bool = True        # with a text encoder: feed its token sequence (cross-attention, sets context_dim)
    text_pooled: bool = True        # with a text encoder: feed its pooled vector (sets pooled_dim)
    layout: bool = False            # layout-grounded: a planner puts each object phrase in a box, the U-Net reads
                                    # the map of phrase embeddings (noisecraft.conditions.layout; data with boxes)
    layout_planner_steps: int = 1500  # training steps of the layout planner
    layout_separators: tuple[str, ...] | None = None  # words that cut a prompt into object phrases (None: default)
    conditions: tuple[str, ...] = ()  # further conditions by name (noisecraft.conditions.CONDITIONS), in order
    # super-resolution ("low-res" in conditions; noisecraft.conditions.low_res, SR3 + noise conditioning augmentation)
    low_res_factor: int = 2           # the low-resolution image is 1/factor of the run's size (area downsampling)
    low_res_aug_max: float = 0.3      # training augmentation levels s ~ U[0, max] (Ho et al. 2022, Sec. 4.2)
    low_res_aug_sample: float = 0.05  # the fixed level at sampling (noisecraft upscale --aug-level)
    # structure control (condition "control", a ControlNet; noisecraft.conditions.control)
    control_base: str = ""          # the frozen base run the ControlNet trains on (a run directory)
    control_map: str = "canny"      # the control map: canny (edges) or scribble (stroke skeletons)
    control_scale: float = 1.0      # the default conditioning scale at sampling (0 = the base model)
    control_canny_sigma: float = 1.0  # Gaussian sigma (pixels) of the Canny edge detector
    control_factor: int = 1         # the map's size over the network input's: 1 in pixel space, a latent run's
                                    # autoencoder factor f (the map encoder then downsamples by f, as SD's ControlNet)

    def __post_init__(self):
        require(0 <= self.cond_dropout < 1, "conditioning.cond_dropout", f"must be in [0, 1), got {self.cond_dropout}")
        require(isinstance(self.layout, bool), "conditioning.layout", f"expected true or false, got {self.layout!r}")
        require(isinstance(self.layout_planner_steps, int) and self.layout_planner_steps >= 1,
               "conditioning.layout_planner_steps", f"must be an integer >= 1, got {self.layout_planner_steps!r}")
        require(self.layout_separators is None or all(isinstance(s, str) and s.strip() for s in self.layout_separators),
               "conditioning.layout_separators", f"must be a list of non-empty strings, got {self.layout_separators!r}")
        require(len(set(self.conditions)) == len(self.conditions), "conditioning.conditions",
               f"names a condition twice: {list(self.conditions)}")
        require(not {"class", "text", "layout"} & set(self.conditions), "conditioning.conditions",
               "class, text and layout are set by network.num_classes, text.encoder and conditioning.layout")
        require(isinstance(self.low_res_factor, int) and not isinstance(self.low_res_factor, bool)
                and 2 <= self.low_res_factor <= 16, "conditioning.low_res_factor",
                f"must be an integer in 2..16, got {self.low_res_factor!r}")
        for field in ("low_res_aug_max", "low_res_aug_sample"):
            value = getattr(self, field)
            require(isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1,
                    f"conditioning.{field}", f"must be a number in [0, 1], got {value!r}")
        require(isinstance(self.control_base, str), "conditioning.control_base",
               f"expected a run directory (string), got {self.control_base!r}")
        require(self.control_map in ("canny", "scribble"), "conditioning.control_map",
               f"must be one of canny, scribble; got {self.control_map!r}")
        require(self.control_factor in (1, 2, 4, 8, 16), "conditioning.control_factor",
                f"must be one of 1, 2, 4, 8, 16 (1 in pixel space, else the autoencoder's factor), got "
                f"{self.control_factor!r}")
        for name in ("control_scale", "control_canny_sigma"):
            v = getattr(self, name)
            require(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0,
                   f"conditioning.{name}", f"must be a finite number >= 0, got {v!r}")
