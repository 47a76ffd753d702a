"""Reading checkpoints written by earlier releases: one migration from any earlier config and weight layout
to today's, applied when a checkpoint is read (`checkpoint.load_checkpoint`), so sampling,
resuming and evaluation see one format.

What changed, and how an old checkpoint is read:

- the network section: `{"model": "unet", "unet": {...}, "mlp": {...}, "dit": {...}}` -> `{"model": "unet",
  "network": {...}}` (the sections of the other models are dropped);
- the layout map became the generic concatenated-channels input: network field `layout_dim` ->
  `concat_channels`, weights `layout_in.*` -> `concat_in.*` (cond key "layout" -> "concat");
- removed experiments: `coord_channels` and the transformer token refiner (`context_refiner_layers`,
  `context_refiner_heads`) of the networks, `text.phrases` / `text.phrase_mode`: a checkpoint that used one
  cannot be read by this release (a CheckpointError says which); at their "off" values they are dropped;
- the token refiner's fields are one section: `context_refiner_kernel` -> `refiner.kernel` (also `width`,
  `max_tokens`, `pool`, `residual`);
- `text.phrase_separators` -> `conditioning.layout_separators`.
"""

from __future__ import annotations

import copy
import dataclasses

from noisecraft.errors import CheckpointError

MODEL_SECTIONS = ("unet", "mlp", "dit")
REMOVED_NETWORK_FIELDS = {"coord_channels": False, "context_refiner_layers": 0, "context_refiner_heads": None}
RENAMED_NETWORK_FIELDS = {"layout_dim": "concat_channels"}
REFINER_PREFIX = "context_refiner_"  # flat refiner fields -> the nested `refiner` section (kernel, width, ...)
RENAMED_MODULES = {"layout_in": "concat_in"}  # module name (a path segment of a parameter) -> today's
REMOVED_TEXT_FIELDS = {"phrases": 0, "phrase_mode": "add"}


def migrate_config(config: dict, where: str = "checkpoint") -> dict:
    """An earlier release's run config dict -> today's (module docstring); today's configs pass unchanged."""
    config = copy.deepcopy(config)
    if "network" not in config and any(k in config for k in MODEL_SECTIONS):
        model = config.get("model", "unet")
        sections = {k: config.pop(k) for k in MODEL_SECTIONS if k in config}
        if model not in sections:
            raise CheckpointError(f"{where}: its config names model {model!r} but has no {model!r} section")
        config["network"] = sections[model]
    net = config.get("network")
    if isinstance(net, dict):
        for old, off in REMOVED_NETWORK_FIELDS.items():
            if old in net:
                value = net.pop(old)
                if off is not None and value != off:
                    raise CheckpointError(f"{where} was trained with {config.get('model')}.{old}={value!r}, an "
                                          f"experiment this release removed (see benchmarks/scenes_text.md); "
                                          f"read it with noisecraft <= 0.1.0")
        for old, new in RENAMED_NETWORK_FIELDS.items():
            if old in net:
                net[new] = net.pop(old)
        moved = {k[len(REFINER_PREFIX):]: net.pop(k) for k in list(net) if k.startswith(REFINER_PREFIX)}
        if moved:
            net["refiner"] = moved
    text = config.get("text")
    if isinstance(text, dict):
        for old, off in REMOVED_TEXT_FIELDS.items():
            if old in text and text.pop(old) != off:
                raise CheckpointError(f"{where} was trained with text.{old} set, an experiment this release "
                                      f"removed; read it with noisecraft <= 0.1.0")
        separators = text.pop("phrase_separators", None)
        if separators is not None:
            config.setdefault("conditioning", {})["layout_separators"] = separators
    return config


def migrate_weights(state: dict | None) -> dict | None:
    """A network state dict with the renamed modules of earlier releases (module docstring)."""
    if state is None:
        return None
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        out[".".join(RENAMED_MODULES.get(p, p) for p in parts[:-1]) + "." + parts[-1] if len(parts) > 1 else key] = \
            value
    return out


def migrate_checkpoint(ckpt):
    """A `checkpoint.Checkpoint` of any release, with today's config and parameter names."""
    config = migrate_config(ckpt.config, str(ckpt.path))
    phema = None if ckpt.phema is None else {k: migrate_weights(v) for k, v in ckpt.phema.items()}
    return dataclasses.replace(ckpt, config=config, model=migrate_weights(ckpt.model), ema=migrate_weights(ckpt.ema),
                               phema=phema)

