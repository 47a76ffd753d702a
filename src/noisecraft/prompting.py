"""From a user's request (prompt, negative prompt, class id, guidance) to the cond a sampler passes, for a
loaded run; with the checks that turn a request the model cannot serve into one clear error.

    request = Request(prompts=["a small red circle"], guidance=3.0)
    denoiser, cond = conditioned(loaded, request, num=16)
    images = generate(denoiser, sigmas, loaded.data_shape, num=16, seed=0, cond=cond)

Conditions follow `noisecraft.models.conditioning`: a class-conditional model gets "class_labels" (its null
label `num_classes` is the unconditional one); a text-conditional model gets its encoder's tokens / mask /
pooled vector, with the empty prompt "" as the unconditional text (as in training's condition dropout) or,
for negative prompting, the negative prompt. With a guidance scale the denoiser is wrapped in
`noisecraft.guidance.ClassifierFreeGuidance` (scale, sigma interval, rescale).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from noisecraft.errors import NoisecraftError


@dataclass(frozen=True)
class Request:
    """What to condition on. prompts / class_ids: one entry (used for every image) or one per image."""

    prompts: tuple[str, ...] | None = None
    negative_prompt: str | None = None
    class_ids: tuple[int, ...] | None = None
    guidance: float | None = None                  # CFG scale w (1: conditional model, no guidance)
    guidance_interval: tuple[float, float] | None = None  # guide only for sigma in [lo, hi]
    guidance_rescale: float = 0.0                  # phi of guidance rescale

    @property
    def guided(self) -> bool:
        return self.guidance is not None or self.guidance_interval is not None or self.guidance_rescale != 0


def model_conditions(config) -> tuple[int, bool]:
    """(num_classes, takes text) of a run config."""
    return getattr(config.network, "num_classes", 0), config.text.encoder != "none"


def _describe(config) -> str:
    num_classes, text = model_conditions(config)
    if text:
        return f"a text-to-image model (text encoder {config.text.encoder!r}); use --prompt"
    if num_classes:
        return f"a class-conditional model with {num_classes} classes; use --class 0..{num_classes - 1}"
    return "an unconditional model; it takes no --prompt, --class or guidance"


def check_request(config, request: Request) -> None:
    """Raise NoisecraftError for a request the model cannot serve (naming what it can)."""
    num_classes, text = model_conditions(config)
    what = f"model {config.name!r} is {_describe(config)}"
    if request.prompts is not None and not text:
        raise NoisecraftError(f"--prompt given, but {what}")
    if request.negative_prompt is not None and request.prompts is None:
        raise NoisecraftError("--negative-prompt needs --prompt" if text else f"--negative-prompt given, but {what}")
    if request.class_ids is not None:
        if not num_classes:
            raise NoisecraftError(f"--class given, but {what}")
        names = _class_names(config)
        for c in request.class_ids:
            if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < num_classes:
                raise NoisecraftError(f"class id {c!r} is out of range; this model has {num_classes} classes: "
                                      f"0..{num_classes - 1}{names}")
    if request.guided:
        from noisecraft.guidance.cfg import check_interval, check_scale

        check_scale(1.0 if request.guidance is None else request.guidance)
        check_interval(request.guidance_interval)
        if not 0 <= check_scale(request.guidance_rescale, "guidance rescale phi") <= 1:
            raise NoisecraftError(f"guidance rescale phi must be in [0, 1], got {request.guidance_rescale}")
    if request.guided and not (num_classes or text):
        raise NoisecraftError(f"guidance needs a conditional model, but {what}")
    if request.guided and request.prompts is None and request.class_ids is None:
        raise NoisecraftError("guidance needs a condition to guide towards: give --prompt" if text else
                              "guidance needs a condition to guide towards: give --class")


def _class_names(config) -> str:
    from noisecraft.data import load_dataset

    try:
        names = load_dataset(config.data.dataset, root=config.data.root, split=config.data.split, limit=1).class_names
    except NoisecraftError:
        return ""
    if not names:
        return ""
    shown = ", ".join(f"{i}={n}" for i, n in enumerate(names[:12]))
    return f" ({shown}{', ...' if len(names) > 12 else ''})"


def text_encoder_of(loaded):
    """The text encoder of a loaded run: the trainable one inside its network, else built from its config."""
    net = loaded.denoiser.net
    if hasattr(net, "text_encoder"):
        return net.text_encoder
    from noisecraft.text import build_text_encoder

    return build_text_encoder(loaded.config.text)


def text_cond(loaded, prompts, *, allow_empty: bool = False, encoder=None) -> dict:
    """The text part of cond for `prompts` (the routes the run was trained with: tokens and/or pooled)."""
    encoder = encoder if encoder is not None else text_encoder_of(loaded)
    with torch.no_grad():
        tokens, mask, pooled = encoder.encode(list(prompts), allow_empty=allow_empty)
    c = loaded.config.conditioning
    device = next(loaded.denoiser.net.parameters()).device
    out = {"text_tokens": tokens.to(device), "text_mask": mask.to(device)} if c.text_tokens else {}
    if c.text_pooled:
        out["text_pooled"] = pooled.to(device)
    return out


def _per_image(values, num: int, what: str):
    if len(values) not in (1, num):
        raise NoisecraftError(f"give one {what} or one per image ({num}); got {len(values)}")
    return list(values) * (num if len(values) == 1 else 1)


def conditions(loaded, request: Request, num: int, seed: int | None = None) -> tuple[dict | None, dict | None]:
    """(cond, uncond) for `num` images: cond per image (or None), uncond with batch 1 (or None). A layout-grounded
    run draws image i's layout from seed + i (`noisecraft.text.layout.layout_generators`, a stream apart from the
    noise's); seed None gives every image the planner's mean layout."""
    check_request(loaded.config, request)
    num_classes, text = model_conditions(loaded.config)
    device = next(loaded.denoiser.net.parameters()).device
    cond, uncond = {}, {}
    if num_classes:
        ids = _per_image(request.class_ids, num, "class id") if request.class_ids is not None else [num_classes] * num
        cond["class_labels"] = torch.tensor(ids, dtype=torch.long, device=device)
        uncond["class_labels"] = torch.tensor([num_classes], dtype=torch.long, device=device)
    if text:
        encoder = text_encoder_of(loaded)
        if request.prompts is not None:
            prompts = _per_image(request.prompts, num, "prompt")
            unique = sorted(set(prompts))
            table = text_cond(loaded, unique, encoder=encoder)
            rows = torch.tensor([unique.index(p) for p in prompts], device=device)
            cond.update({k: v[rows] for k, v in table.items()})
        else:  # no prompt: the unconditional model (the empty prompt)
            cond.update(text_cond(loaded, [""], allow_empty=True, encoder=encoder))
            cond = {k: v.expand(num, *v.shape[1:]) for k, v in cond.items()} if num > 1 else cond
        negative = request.negative_prompt
        uncond.update(text_cond(loaded, [negative if negative is not None else ""], allow_empty=negative is None,
                                encoder=encoder))
    if loaded.layout is not None:
        _add_layout(loaded, request, num, cond, uncond, device, seed)
    return (cond or None), (uncond or None)


def _add_layout(loaded, request: Request, num: int, cond: dict, uncond: dict, device, seed: int | None) -> None:
    """A layout-conditioned model: the planner's boxes for each prompt painted as cond["layout"] (drawn per image
    from seed + i, or the mean boxes); the zero map (no layout) for no prompt and for the unconditional /
    negative side, as condition dropout in training."""
    size = tuple(loaded.data_shape[1:])
    zeros = torch.zeros(1, loaded.config.unet.layout_dim, *size, device=device)
    uncond["layout"] = zeros
    if request.prompts is None:
        cond["layout"] = zeros.expand(num, *zeros.shape[1:])
        return
    from noisecraft.text.layout import layout_generators

    prompts = _per_image(request.prompts, num, "prompt")
    generators = None if seed is None else layout_generators(seed, num)
    cond["layout"] = loaded.layout.map(prompts, size, generators).to(device)  # (num, P, H, W)


def conditioned(loaded, request: Request, num: int, seed: int | None = None):
    """(denoiser, cond): the run's denoiser, wrapped in classifier-free guidance when the request asks for it
    (seed: a layout-grounded run's per-image layouts, see `conditions`)."""
    cond, uncond = conditions(loaded, request, num, seed)
    if not request.guided:
        return loaded.denoiser, cond
    from noisecraft.guidance import ClassifierFreeGuidance

    scale = 1.0 if request.guidance is None else request.guidance
    return ClassifierFreeGuidance(loaded.denoiser, scale, uncond=uncond, interval=request.guidance_interval,
                                  rescale=request.guidance_rescale), cond


def describe_request(request: Request) -> dict:
    """The request's set fields as plain JSON-able values (for PNG metadata)."""
    out = {}
    for key, value in vars(request).items():
        if value is not None and value != 0.0:
            out[key] = list(value) if isinstance(value, tuple) else value
    return out


def preview_request(config, dataset, num: int) -> Request:
    """The after-training preview of a conditional run: classes 0, 1, ... in turn, or the dataset's first
    distinct captions in turn; no guidance. Unconditional runs: an empty request."""
    num_classes, text = model_conditions(config)
    if text and dataset.captions:
        distinct = list(dict.fromkeys(dataset.captions))[:max(1, min(num, 8))]
        return Request(prompts=tuple(distinct[i % len(distinct)] for i in range(num)))
    if num_classes:
        return Request(class_ids=tuple(i % num_classes for i in range(num)))
    return Request()
