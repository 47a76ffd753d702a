"""The server's settings: limits, the queue, batching and the safeguards."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ServeConfig:
    max_queue: int = 16                      # jobs waiting (not running) before a new one gets 429
    max_batch: int = 16                      # images the worker stacks into one network batch
    batch_window: float = 0.005              # seconds the worker waits for compatible jobs to join a batch
    max_pixels: int = 1024 * 1024            # width x height of one output image
    max_steps: int = 150                     # sampling steps of one request
    max_images: int = 16                     # images of one request (batch_size x n_iter)
    max_body: int = 16 * 1024 * 1024         # request body bytes (413 above)
    api_keys: tuple[str, ...] = ()           # bearer keys; empty: no key needed
    rate_limit: float = 0.0                  # requests per minute per key (or per client address); 0: none
    blocked_terms: tuple[str, ...] = ()      # the prompt filter's terms (normalised, matched as words)
    image_checker: Callable | None = None    # checker(rgb uint8 (H, W, 3), info dict) -> None to keep, or a reason
    watermark: bool = True                   # the invisible watermark on every output
    keep_jobs: int = 256                     # finished jobs kept for GET /v1/jobs/{id}
