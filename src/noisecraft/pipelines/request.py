"""What a user asks of a run: the conditions, the sampler and its options, guidance, seed and number."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from noisecraft.errors import NoisecraftError

MAX_NUM = 4096  # the most images one request may ask for


@dataclass(frozen=True)
class Request:
    """One generation. prompts / class_ids: one entry (used for every image) or one per image; conditions:
    values of further conditions by name (e.g. {"mask": tensor}); None fields take the run's defaults
    (its config's `sample` section)."""

    prompts: tuple[str, ...] | None = None
    negative_prompt: str | None = None
    class_ids: tuple[int, ...] | None = None
    conditions: dict[str, Any] | None = None
    guidance: float | None = None                  # CFG scale w (1: the conditional model, 0: unconditional)
    guidance_interval: tuple[float, float] | None = None  # guide only for sigma in [lo, hi]
    guidance_rescale: float = 0.0                  # phi of guidance rescale (Lin et al. 2024)
    sampler: str | None = None                     # name or alias (samplers.ALIASES); None: the run's
    options: dict[str, Any] = field(default_factory=dict)  # the sampler's options (samplers.options(name))
    steps: int | None = None                       # sampling steps; None: the run's
    step_schedule: str | None = None               # karras, uniform, ...; None: the alias's or the run's
    seed: int = 0                                  # image i's noise comes from seed + i
    num: int = 1                                   # number of images
    batch_size: int = 64                           # images per network batch (does not change the images)

    @property
    def guided(self) -> bool:
        return self.guidance is not None or self.guidance_interval is not None or self.guidance_rescale != 0

    def check(self) -> None:
        """The checks that need no model: counts and seed (NoisecraftError naming the field). Guidance values are
        checked once, by the guidance wrapper (`noisecraft.guidance.ClassifierFreeGuidance`)."""
        for name, low, high in (("num", 1, MAX_NUM), ("batch_size", 1, MAX_NUM), ("steps", 1, 10_000)):
            value = getattr(self, name)
            if value is None and name == "steps":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise NoisecraftError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise NoisecraftError(f"seed must be an integer >= 0, got {self.seed!r}")

    def describe(self) -> dict:
        """The conditioning fields that are set, as JSON-able values (for image metadata)."""
        out = {}
        for key in ("prompts", "negative_prompt", "class_ids", "guidance", "guidance_interval", "guidance_rescale"):
            value = getattr(self, key)
            if value is not None and value != 0.0:
                out[key] = list(value) if isinstance(value, tuple) else value
        if self.conditions:
            out["conditions"] = sorted(self.conditions)
        return out
