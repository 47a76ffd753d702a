"""A1111 request bodies -> noisecraft `Request`s, with the server's limits (a `LimitError` names the limit)."""

from __future__ import annotations

import secrets

from noisecraft.errors import NoisecraftError
from noisecraft.pipelines import Request


class LimitError(NoisecraftError):
    """A request over one of the server's limits (answered 413 for sizes, 422 otherwise)."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


def check_limits(config, body, served) -> int:
    """The number of images; LimitError naming the limit that body exceeds or the size the model serves."""
    for name in ("batch_size", "n_iter"):
        if getattr(body, name) < 1:
            raise LimitError(f"{name} must be >= 1, got {getattr(body, name)}")
    num = body.batch_size * body.n_iter
    if num > config.max_images:
        raise LimitError(f"batch_size x n_iter = {num} images is over this server's limit of {config.max_images} "
                         f"images per request")
    if body.steps is not None and not 1 <= body.steps <= config.max_steps:
        raise LimitError(f"steps must be in [1, {config.max_steps}] (this server's limit), got {body.steps}")
    check_size(config, body, served)
    return num


def check_size(config, body, served) -> None:
    h, w = served.size
    for name in ("width", "height"):
        value = getattr(body, name)
        if value is not None and value < 1:
            raise LimitError(f"{name} must be a positive number of pixels, got {value}")
    width, height = body.width or w * served.scale, body.height or h * served.scale
    if width * height > config.max_pixels:
        raise LimitError(f"width x height = {width}x{height} is over this server's limit of {config.max_pixels} "
                         f"pixels per image", status=413)
    allowed = {(w, h), (w * served.scale, h * served.scale)}
    if (width, height) not in allowed:
        sizes = " or ".join(f"{a}x{b}" for a, b in sorted(allowed))
        raise LimitError(f"model {served.name!r} generates {sizes} images (width x height); got {width}x{height}")


def to_request(body, served, num: int) -> Request:
    """The noisecraft Request of an A1111 body. cfg_scale guides when the model has a condition and one is given
    (a prompt or class); an empty prompt means no prompt."""
    run = served.run
    prompts = (body.prompt,) if body.prompt else None
    classes = tuple(body.class_ids) if body.class_ids else None
    sampler = body.sampler_name or body.sampler_index
    schedule = None if body.scheduler in (None, "", "Automatic", "automatic") else body.scheduler.lower()
    conditional = any(c.guidable for c in run.conditions)
    guided = conditional and (prompts or classes) and body.cfg_scale != 1
    seed = secrets.randbelow(2**31) if body.seed == -1 else body.seed
    if seed < 0:
        raise NoisecraftError(f"seed must be -1 (random) or an integer >= 0, got {body.seed}")
    return Request(prompts=prompts, negative_prompt=body.negative_prompt or None if prompts else None,
                   class_ids=classes, guidance=float(body.cfg_scale) if guided else None, sampler=sampler,
                   steps=body.steps, step_schedule=schedule, seed=seed, num=num, batch_size=num)
