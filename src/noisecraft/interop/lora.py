"""LoRA files applied to a loaded network by merging them into its weights.

A LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models", eq. 3) changes a
layer's weight W (out, in) by a low-rank product:

    W' = W + s * (alpha / r) * B @ A          # A = down (r, in), B = up (out, r), s = the user's scale

For a convolution, A is (r, in, kh, kw) and B is (out, r, 1, 1), and B @ A is taken on the
flattened kernels. `load_lora` reads the three key layouts found in the wild into one
representation (`LoRA`: diffusers module name -> `LoRALayer`):

    peft / diffusers >= 0.26   unet.down_blocks.0.attentions.0....attn1.to_q.lora_A.weight / lora_B.weight
    diffusers, older           unet....attn1.to_q.lora.down.weight / lora.up.weight,
                               ....attn1.processor.to_q_lora.down.weight (attention processors)
    kohya (sd-scripts)         lora_unet_down_blocks_0_..._attn1_to_q.lora_down.weight / lora_up.weight / alpha
                               (lora_te_ / lora_te1_ / lora_te2_ for the text encoders)

`alpha` comes from `<name>.alpha` keys or diffusers' `lora_adapter_metadata`; where a file has
neither, alpha = r (scale 1), the peft/diffusers convention. Only safetensors files are read:
pickle files are refused before anything in them is unpickled.

`apply_lora` merges several LoRAs at once and returns a `LoRAReport` whose `unmerge()` puts the
exact original weights back. Keys that match no layer are listed by name in the report (and
warned about, or an error with `strict=True`); nothing in a file is dropped silently.

Not read: LyCORIS (LoHa/LoKr), DoRA magnitudes and full-weight diffs are listed as unsupported keys;
kohya SDXL files in the original LDM naming (lora_unet_input_blocks_...) are listed as unmatched.
Known peer difference: with transformers >= 5 (flat CLIPTextModel), diffusers 0.42's
`lora_state_dict` + `load_lora_into_text_encoder` leaves a kohya file's text-encoder attention
layers (q/k/v/out_proj) out with only a log line; here they are applied like the peft-key file.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from noisecraft.errors import CheckpointError, NoisecraftError

# the component prefixes a file may use, and kohya's spelling of them
COMPONENTS = ("unet", "text_encoder", "text_encoder_2", "transformer")
_KOHYA_COMPONENTS = {"lora_unet_": "unet", "lora_te_": "text_encoder", "lora_te1_": "text_encoder",
                     "lora_te2_": "text_encoder_2", "lora_transformer_": "transformer"}

# key suffix -> role; the first match wins (longest, most specific first)
_SUFFIXES = (
    (re.compile(r"\.lora_A(?:\.[\w-]+)?\.weight$"), "down"),        # peft (optionally with an adapter name)
    (re.compile(r"\.lora_B(?:\.[\w-]+)?\.weight$"), "up"),
    (re.compile(r"\.lora_B(?:\.[\w-]+)?\.bias$"), "up_bias"),       # peft's lora_bias
    (re.compile(r"\.lora_linear_layer\.down\.weight$"), "down"),    # diffusers' old text-encoder layers
    (re.compile(r"\.lora_linear_layer\.up\.weight$"), "up"),
    (re.compile(r"\.lora\.down\.weight$"), "down"),                 # diffusers' LoRACompatibleLinear
    (re.compile(r"\.lora\.up\.weight$"), "up"),
    (re.compile(r"\.lora_down\.weight$"), "down"),                  # kohya
    (re.compile(r"\.lora_up\.weight$"), "up"),
    (re.compile(r"_lora\.down\.weight$"), "down_proc"),             # attention processors: processor.to_q_lora
    (re.compile(r"_lora\.up\.weight$"), "up_proc"),
    (re.compile(r"\.alpha$"), "alpha"),
)

# diffusers / transformers module-name words that contain an underscore, to undo kohya's flattening
_COMPOUNDS = sorted((tuple(w.split("_")) for w in (
    "down_blocks", "up_blocks", "mid_block", "transformer_blocks", "single_transformer_blocks", "to_q", "to_k",
    "to_v", "to_out", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out", "proj_in", "proj_out",
    "time_emb_proj", "conv_shortcut", "conv_in", "conv_out", "conv_norm_out", "time_embedding", "linear_1",
    "linear_2", "add_embedding", "class_embedding", "encoder_hid_proj", "text_model", "self_attn", "q_proj",
    "k_proj", "v_proj", "out_proj", "final_layer_norm", "token_embedding", "position_embedding",
    "norm_out", "proj_mlp", "time_text_embed", "context_embedder", "x_embedder",
)), key=len, reverse=True)

_TOKENS = itertools.count()  # one per LoRAReport, to tell merges apart on a parameter's merge stack
_PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")


@dataclass(frozen=True)
class LoRALayer:
    """One layer's low-rank update: W' = W + s * (alpha / r) * up @ down."""

    down: torch.Tensor                 # A: (r, in) or (r, in, kh, kw)
    up: torch.Tensor                   # B: (out, r) or (out, r, 1, 1)
    alpha: float                       # the file's alpha; r where the file has none (scale 1)
    key: str                           # the layer's name as written in the file
    up_bias: torch.Tensor | None = None  # peft's lora_bias (out,), scaled like the weight

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    def delta(self) -> torch.Tensor:
        """(alpha / r) * up @ down in float32, shaped like the layer's weight: (out, in) or (out, in, kh, kw)."""
        A = self.down.float().flatten(1)  # (r, in * kh * kw)
        B = self.up.float().flatten(1)    # (out, r)
        return ((self.alpha / self.rank) * (B @ A)).reshape(self.up.shape[0], *self.down.shape[1:])


@dataclass(frozen=True)
class LoRA:
    """A LoRA file read into one form, whatever its key layout."""

    layers: dict[str, LoRALayer]       # diffusers module name, with the file's component ("unet.", ...) if any
    unsupported: tuple[str, ...] = ()  # keys not LoRA down/up/alpha (LyCORIS, DoRA, full weights): never applied
    format: str = "peft"               # "peft", "diffusers-old" or "kohya"
    path: str | None = None

    @property
    def components(self) -> set[str]:
        return {n.split(".", 1)[0] for n in self.layers if n.split(".", 1)[0] in COMPONENTS}


# ----------------------------------------------------------------------------------------------
# reading


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of a safetensors file; pickle files are refused unopened."""
    if not path.is_file():
        raise CheckpointError(f"LoRA file {str(path)!r} does not exist")
    with open(path, "rb") as f:
        head = f.read(8)
    if path.suffix.lower() in _PICKLE_SUFFIXES or head[:2] == b"PK" or head[:1] == b"\x80":
        raise CheckpointError(f"LoRA file {str(path)!r} is a pickle (torch.save) file, which could run code when "
                              f"loaded; only .safetensors LoRA files are read (convert: safetensors.torch.save_file)")
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types (SafetensorError, OSError, ...)
        raise CheckpointError(f"LoRA file {str(path)!r} is not a readable safetensors file "
                              f"(truncated or corrupt?): {_one_line(e)}") from None
    return tensors, metadata


def _kohya_name(stem: str) -> tuple[str, str]:
    """lora_unet_down_blocks_0_attentions_0_proj_in -> ('unet', 'down_blocks.0.attentions.0.proj_in')."""
    for prefix, component in sorted(_KOHYA_COMPONENTS.items(), key=lambda kv: -len(kv[0])):
        if stem.startswith(prefix):
            tokens, words, i = stem[len(prefix):].split("_"), [], 0
            while i < len(tokens):
                n = next((len(c) for c in _COMPOUNDS if tuple(tokens[i:i + len(c)]) == c), 1)
                words.append("_".join(tokens[i:i + n]))
                i += n
            return component, ".".join(words)
    raise CheckpointError(f"kohya LoRA key {stem!r} has no known prefix; allowed: {', '.join(_KOHYA_COMPONENTS)}")


def _processor_name(stem: str) -> str:
    """An attention processor's layer name -> the layer: attn1.processor.to_out -> attn1.to_out.0."""
    stem = stem.replace(".processor.", ".")
    if stem.startswith("text_encoder"):
        for old, new in (("to_q", "q_proj"), ("to_k", "k_proj"), ("to_v", "v_proj"), ("to_out", "out_proj")):
            stem = re.sub(rf"\.{old}$", f".{new}", stem)
        return stem
    return re.sub(r"\.to_out$", ".to_out.0", stem)


def _split_key(key: str) -> tuple[str, str] | None:
    """A file key -> (the layer's name in the file, role), or None for a key of no LoRA kind."""
    for pattern, role in _SUFFIXES:
        m = pattern.search(key)
        if m:
            return key[: m.start()], role
    return None


def _metadata_alphas(metadata: dict[str, str]) -> dict:
    """diffusers' `lora_adapter_metadata` (peft LoraConfig fields, optionally per component) as a dict."""
    raw = metadata.get("lora_adapter_metadata")
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"LoRA metadata 'lora_adapter_metadata' is not JSON: {_one_line(e)}") from None


def _config_alpha(config: dict, name: str, rank: int) -> float | None:
    """The alpha peft's LoraConfig (read from metadata) gives to layer `name`, or None."""
    component, _, rest = name.partition(".")
    get = (lambda k: config.get(f"{component}.{k}", config.get(k))) if component in COMPONENTS else config.get
    rest = rest if component in COMPONENTS else name
    alpha = get("lora_alpha")
    for pattern, value in (get("alpha_pattern") or {}).items():
        if re.fullmatch(rf"(.*\.)?{pattern}", rest):
            alpha = value
    if alpha is None:
        return None
    return float(alpha) * (math.sqrt(rank) if get("use_rslora") else 1.0)  # rsLoRA: alpha / sqrt(r)


def _group_keys(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, dict], list[str], str]:
    """File keys -> {layer name in diffusers naming: {role: tensor, 'key': stem}}, unsupported keys, format."""
    groups: dict[str, dict] = {}
    unsupported, kinds = [], set()
    for key, tensor in tensors.items():
        split = _split_key(key)
        if split is None:
            unsupported.append(key)
            continue
        stem, role = split
        if stem.startswith("lora_"):
            kinds.add("kohya")
            component, rest = _kohya_name(stem)
            name = f"{component}.{rest}"
        elif role.endswith("_proc"):
            kinds.add("diffusers-old")
            name, role = _processor_name(stem), role[: -len("_proc")]
        elif role == "alpha" and stem.endswith("_lora"):  # processor.to_q_lora.alpha
            name = _processor_name(stem[: -len("_lora")])
        else:
            kinds.add("diffusers-old" if ".lora_A" not in key and ".lora_B" not in key and role != "alpha" else "peft")
            name = stem
        entry = groups.setdefault(name, {"key": stem})
        if role in entry:
            raise CheckpointError(f"LoRA file has two {role} tensors for layer {name!r} (keys named {stem!r})")
        entry[role] = tensor
    fmt = "kohya" if "kohya" in kinds else "diffusers-old" if "diffusers-old" in kinds else "peft"
    return groups, unsupported, fmt


def _layer(name: str, entry: dict, config: dict) -> LoRALayer:
    down, up = entry.get("down"), entry.get("up")
    if down is None or up is None:
        raise CheckpointError(f"LoRA layer {entry['key']!r} has {'an up' if down is None else 'a down'} "
                              f"tensor but no {'down' if down is None else 'up'} tensor")
    if down.ndim not in (2, 4) or up.ndim != down.ndim or up.shape[1] != down.shape[0]:
        raise CheckpointError(f"LoRA layer {entry['key']!r}: down {tuple(down.shape)} and up {tuple(up.shape)} "
                              f"are not (r, in[, kh, kw]) and (out, r[, 1, 1])")
    if up.ndim == 4 and up.shape[2:] != (1, 1):
        raise CheckpointError(f"LoRA layer {entry['key']!r}: an up kernel of {tuple(up.shape[2:])} is not supported "
                              f"(only (1, 1), the LoRA/LoCon layout)")
    rank = down.shape[0]
    alpha = float(entry["alpha"]) if "alpha" in entry else _config_alpha(config, name, rank)
    return LoRALayer(down=down, up=up, alpha=rank if alpha is None else alpha, key=entry["key"],
                     up_bias=entry.get("up_bias"))


def load_lora(path) -> LoRA:
    """A LoRA `.safetensors` file (peft, older diffusers or kohya keys) -> `LoRA`."""
    path = Path(path)
    tensors, metadata = _read_safetensors(path)
    groups, unsupported, fmt = _group_keys(tensors)
    alphas_only = [e["key"] for e in groups.values() if set(e) == {"key", "alpha"}]
    groups = {n: e for n, e in groups.items() if set(e) != {"key", "alpha"}}
    if not groups:
        shown = ", ".join(sorted(tensors)[:5]) or "no tensors"
        raise CheckpointError(f"{str(path)!r} is a safetensors file but not a LoRA: no lora_A/lora_B, lora.down/up "
                              f"or lora_down/lora_up keys (it holds {len(tensors)} tensors: {shown}...)")
    config = _metadata_alphas(metadata)
    layers = {name: _layer(name, entry, config) for name, entry in groups.items()}
    unsupported = tuple(sorted(unsupported + [f"{k}.alpha" for k in alphas_only]))
    return LoRA(layers=layers, unsupported=unsupported, format=fmt, path=str(path))


# ----------------------------------------------------------------------------------------------
# applying


@dataclass
class LoRAReport:
    """What `apply_lora` did. `unmerge()` (alias `remove()`) restores the exact original weights."""

    applied: dict[str, int]            # module name -> how many LoRAs were merged into it
    unmatched: list[str]               # layer names (as in the file) that match no module: not applied
    unsupported: list[str]             # keys of a kind that is not applied (LyCORIS, DoRA, full weights)
    other_components: list[str] = field(default_factory=list)  # layers for a component other than `prefix`
    _originals: dict = field(default_factory=dict, repr=False)  # module name -> (param, original weight)
    _token: int = field(default_factory=lambda: next(_TOKENS), repr=False)

    def unmerge(self) -> None:
        """Put back the weights as they were before the merge, bit for bit."""
        changed = [n for n, (p, _) in self._originals.items() if not _on_top(p, self._token)]
        if changed:
            raise NoisecraftError(f"cannot unmerge: {len(changed)} merged weights changed after the merge (e.g. "
                                  f"{changed[0]!r}); unmerge LoRAs merged later first, and not after training")
        with torch.no_grad():
            for param, original in self._originals.values():
                param.copy_(original)
                stack = param.__dict__["_noisecraft_lora"]
                stack.pop()
                if stack:  # the weights are again exactly as the merge below this one left them
                    stack[-1][1] = param._version
        self._originals.clear()

    remove = unmerge


def _normalize_prefix(prefix: str) -> str:
    return prefix if not prefix or prefix.endswith(".") else prefix + "."


def _resolve(module: nn.Module, name: str, modules: dict[str, nn.Module], flat: dict[str, str]) -> str | None:
    """The module name a LoRA layer name targets: as written, without transformers' old `text_model.`
    level, or (for kohya's flattened names) the module whose name with `.` -> `_` is the same."""
    candidates = [name]
    if name.startswith("text_model.") and not hasattr(module, "text_model"):
        candidates.append(name[len("text_model."):])  # CLIPTextModel is flat in transformers >= 5
    for candidate in candidates:
        if candidate in modules:
            return candidate
    for candidate in candidates:
        if candidate.replace(".", "_") in flat:
            return flat[candidate.replace(".", "_")]
    return None


def _target_weight(name: str, target: nn.Module, delta: torch.Tensor) -> torch.Tensor:
    """`delta` shaped like `target`'s weight; an error naming the module and both shapes if it cannot be."""
    weight = getattr(target, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise NoisecraftError(f"LoRA layer {name!r} targets a {type(target).__name__}, which has no weight "
                              f"(only Linear and Conv layers take a LoRA)")
    if delta.shape == weight.shape:
        return delta
    one_by_one = weight.ndim > 2 and all(k == 1 for k in weight.shape[2:])
    if (delta.ndim == 2 and one_by_one) or (weight.ndim == 2 and all(k == 1 for k in delta.shape[2:])):
        if delta.numel() == weight.numel() and delta.shape[:2] == weight.shape[:2]:
            return delta.reshape(weight.shape)  # a linear LoRA on a 1x1 conv, or the other way round: exact
    raise NoisecraftError(f"LoRA layer {name!r}: the update is {tuple(delta.shape)} but the module's weight is "
                          f"{tuple(weight.shape)}")


def _plan(module, loras, prefix):
    """Sum the scaled updates per module, checking every shape before any weight is touched."""
    modules = dict(module.named_modules())
    flat = {n.replace(".", "_"): n for n in modules if n}
    deltas: dict[str, list] = {}
    unmatched, others, unsupported = [], [], []
    for lora, scale in loras:
        unsupported += list(lora.unsupported)
        for name, layer in lora.layers.items():
            if not name.startswith(prefix):
                others.append(layer.key)
                continue
            target = _resolve(module, name[len(prefix):], modules, flat)
            if target is None:
                unmatched.append(layer.key)
                continue
            delta = float(scale) * _target_weight(target, modules[target], layer.delta())
            bias = None if layer.up_bias is None else float(scale) * (layer.alpha / layer.rank) * layer.up_bias.float()
            entry = deltas.setdefault(target, [0, None, 0])
            entry[0] = entry[0] + delta
            entry[1] = bias if entry[1] is None else entry[1] + (0 if bias is None else bias)
            entry[2] += 1
    return modules, deltas, unmatched, others, unsupported


def _on_top(param: torch.Tensor, token: int) -> bool:
    """Whether the last merge into `param` is the one with `token`, and nothing changed it since."""
    stack = param.__dict__.get("_noisecraft_lora") or [[None, None]]
    return stack[-1][0] == token and stack[-1][1] == param._version


def _merge(param: torch.Tensor, delta: torch.Tensor, report: LoRAReport, key: str) -> None:
    """param += delta (in float32), keeping the original for unmerge and a [token, version] on the
    parameter's merge stack so that an unmerge out of order is refused."""
    with torch.no_grad():
        report._originals[key] = (param, param.detach().clone())
        param.copy_((param.float() + delta.to(param.device)).to(param.dtype))
    param.__dict__.setdefault("_noisecraft_lora", []).append([report._token, param._version])


def apply_lora(module: nn.Module, loras, *, prefix: str = "", strict: bool = False) -> LoRAReport:
    """Merge `loras` ([(LoRA or path, scale), ...]) into `module`'s weights at once:
    W' = W + sum_i scale_i * (alpha_i / r_i) * up_i @ down_i.

    `prefix` selects the layers of one component and strips it (e.g. "unet" for a UNet, "text_encoder"
    for a CLIP text model); "" takes every layer as named in the file. Layers matching no module are
    listed in the report and warned about (an error with `strict=True`), as are unsupported keys;
    a shape mismatch is an error naming the module and both shapes, raised before any weight changes.
    """
    loras = [(lora if isinstance(lora, LoRA) else load_lora(lora), scale) for lora, scale in loras]
    prefix = _normalize_prefix(prefix)
    modules, deltas, unmatched, others, unsupported = _plan(module, loras, prefix)
    problems = _problems(unmatched, unsupported, loras, prefix)
    if problems and strict:
        raise NoisecraftError(problems)
    if problems:
        warnings.warn(problems, stacklevel=2)
    report = LoRAReport(applied={}, unmatched=unmatched, unsupported=unsupported, other_components=others)
    for target, (delta, bias, count) in deltas.items():
        _merge(modules[target].weight, delta, report, target)
        if bias is not None:
            if getattr(modules[target], "bias", None) is None:
                raise NoisecraftError(f"LoRA layer {target!r} has a lora_B bias but the module has no bias")
            _merge(modules[target].bias, bias, report, target + ".bias")
        report.applied[target] = count
    return report


def _problems(unmatched, unsupported, loras, prefix) -> str:
    """One line naming every key that will not be applied, or ''."""
    parts = []
    if unmatched:
        hint = ""
        components = set().union(*(lora.components for lora, _ in loras))
        if not prefix and components:
            hint = f" (the file's layers are prefixed {sorted(components)}; pass prefix=)"
        parts.append(f"{len(unmatched)} LoRA layers match no module{hint}: {', '.join(unmatched)}")
    if unsupported:
        parts.append(f"{len(unsupported)} keys are not LoRA down/up/alpha, not applied: {', '.join(unsupported)}")
    return "; ".join(parts)


# ----------------------------------------------------------------------------------------------
# runs


def _components_of_run(run) -> dict[str, nn.Module]:
    """The modules of a Run that a LoRA's components target: {'unet' (or 'transformer'): ..., 'text_encoder': ...}.

    `noisecraft.interop.diffusers_load` runs hold the diffusers network as `run.denoiser.net.module`
    (DiffusersNet) and the text encoder as the `encoder` of a text condition (DiffusersTextCondition);
    any other network is taken as it is (our own UNet / DiT: the file's names must be ours). A text
    encoder in `run.extra["text_encoder"]` is used too.
    """
    net = run.denoiser.net
    inner = _diffusers_inner(net)
    network = inner if inner is not None else net
    kind = type(network).__name__
    found = {"transformer" if "Transformer" in kind or kind == "DiT" else "unet": network}  # DiT: our transformer
    for condition in getattr(run, "conditions", None) or ():
        encoder = getattr(condition, "encoder", None)
        if isinstance(encoder, nn.Module) and type(encoder).__module__.startswith("transformers."):
            found.setdefault("text_encoder", encoder)
    extra = getattr(run, "extra", None) or {}
    for key in ("text_encoder", "text_encoder_2"):
        if isinstance(extra.get(key), nn.Module):
            found.setdefault(key, extra[key])
    return found


def _diffusers_inner(net: nn.Module) -> nn.Module | None:
    """The diffusers module a noisecraft network wraps (DiffusersNet.module, or any direct child), or None."""
    candidates = [net, getattr(net, "module", None), *net.children()]
    return next((m for m in candidates if isinstance(m, nn.Module) and type(m).__module__.startswith("diffusers.")),
                None)


def apply_lora_to_run(run, loras, *, strict: bool = False) -> dict[str, LoRAReport]:
    """Merge [(path or LoRA, scale), ...] into a loaded Run: each file's `unet.` (or `transformer.`) layers
    into its network, `text_encoder.` layers into its text encoder; layers without a component prefix go
    to the network. Returns {component: report}. Layers for a component the run lacks are listed in the
    network's report and warned about; with `strict=True` they (or any unmatched layer) are an error and
    no weight changes."""
    loras = [(lora if isinstance(lora, LoRA) else load_lora(lora), scale) for lora, scale in loras]
    parts = _components_of_run(run)
    network = next(iter(parts))  # 'unet' or 'transformer': where unprefixed layers go
    missing = [layer.key for lora, _ in loras for n, layer in lora.layers.items()
               if n.split(".", 1)[0] in COMPONENTS and n.split(".", 1)[0] not in parts]
    message = f"the run has no module for {len(missing)} LoRA layers: {', '.join(missing)}"
    if missing and strict:
        raise NoisecraftError(message)
    reports = {}
    try:
        for component, module in parts.items():
            selected = [(_select(lora, component, network), scale) for lora, scale in loras]
            reports[component] = apply_lora(module, selected, prefix="", strict=strict)
    except NoisecraftError:
        for report in reversed(list(reports.values())):  # all or nothing
            report.unmerge()
        raise
    if missing:
        warnings.warn(message, stacklevel=2)
        reports[network].unmatched.extend(missing)
    return reports


def _select(lora: LoRA, component: str, network: str) -> LoRA:
    """The layers of `lora` for `component`, its prefix removed; unprefixed layers belong to the `network`."""
    layers = {}
    for name, layer in lora.layers.items():
        head, _, rest = name.partition(".")
        if head == component:
            layers[rest] = layer
        elif head not in COMPONENTS and component == network:
            layers[name] = layer
    unsupported = lora.unsupported if component == network else ()
    return LoRA(layers=layers, unsupported=unsupported, format=lora.format, path=lora.path)


def parse_lora_spec(spec: str) -> tuple[str, float]:
    """'FILE[:SCALE]' (the CLI's --lora) -> (FILE, SCALE); SCALE defaults to 1."""
    path, sep, scale = spec.rpartition(":")
    if not sep or not scale or "/" in scale or "\\" in scale:
        return spec, 1.0
    try:
        return path, float(scale)
    except ValueError:
        raise NoisecraftError(f"--lora {spec!r}: the scale after ':' must be a number, e.g. style.safetensors:0.8") \
            from None


def apply_lora_specs(run, specs, *, strict: bool = True) -> dict[str, LoRAReport]:
    """`apply_lora_to_run` for the CLI's --lora FILE[:SCALE] values (none: nothing happens)."""
    if not specs:
        return {}
    return apply_lora_to_run(run, [parse_lora_spec(spec) for spec in specs], strict=strict)
