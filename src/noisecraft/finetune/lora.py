"""LoRA adapters trained on a network through `peft`, and the adapter files they are saved in.

LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models", eq. 3): a frozen layer W (out, in)
gets a trainable low-rank update, h = W x + (alpha / r) B A x, with A (r, in) drawn at random and B (out, r) = 0,
so a fresh adapter leaves the network's function exactly as it was. For a convolution, A is a conv with the
layer's kernel (r, in, kh, kw) and B a 1x1 conv (out, r, 1, 1) (peft's LoRA Conv layer).

    names = add_lora(net, LoRAConfig(rank=4, targets=("attention",)))   # peft layers injected, base frozen
    ... train ...
    save_lora("style.safetensors", net, config, base=base_info(run))     # unet.<module>.lora_A.weight, ...

Targets are groups or layer names. Groups: "attention" (the linear projections of every attention module: our
U-Net's qkv / proj, its cross-attention's q / kv / proj, the DiT's qkv / proj, diffusers' to_q / to_k / to_v /
to_out.0), "conv" (every convolution), "feedforward" (the linear layers of the feed-forward blocks: ff.*, mlp.*),
"linear" (every linear layer). A layer name matches exactly or as a dotted suffix (peft's rule); a target that
matches nothing is an error listing the layers there are.

Files: safetensors with the keys of peft and diffusers >= 0.26 (`unet.` or `transformer.` + the module name +
`.lora_A.weight` / `.lora_B.weight`), the peft LoraConfig fields in the metadata entry diffusers writes
(`lora_adapter_metadata`) and ours in `noisecraft_adapter` (JSON: method, base model hash, rank, alpha, targets,
layers, steps). `noisecraft.interop.lora` reads them back (and kohya / older diffusers files) and merges them
with a scale, several at once. Our U-Net's fused `qkv` has diffusers' to_q / to_k / to_v stacked along its output
axis, so its LoRA is theirs with A shared and B split in three (`to_diffusers_lora`): exactly the same update.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from noisecraft.errors import CheckpointError, ConfigError, NoisecraftError

GROUPS = ("attention", "conv", "feedforward", "linear")
METADATA_KEY = "noisecraft_adapter"
PEFT_METADATA_KEY = "lora_adapter_metadata"  # what diffusers' save_lora_weights writes and lora_state_dict reads
_LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_WEIGHT_READERS = ("Upsample",)  # our modules that read a child layer's weight rather than calling it
_FF_WORDS = {"ff", "mlp", "ffn", "feed_forward", "feedforward"}


@dataclass(frozen=True)
class LoRAConfig:
    """What LoRA to train.

    rank:     r, the rank of the update B A (>= 1)
    alpha:    the update is scaled by alpha / r; None = r (scale 1, the peft/diffusers default)
    dropout:  dropout on the LoRA branch's input during training (0 = none)
    targets:  groups (attention, conv, feedforward, linear) and/or layer names (see the module docstring)
    """

    rank: int = 4
    alpha: float | None = None
    dropout: float = 0.0
    targets: tuple[str, ...] = ("attention",)

    def __post_init__(self):
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ConfigError(f"lora.rank must be an integer >= 1, got {self.rank!r}")
        if self.alpha is not None and not float(self.alpha) > 0:
            raise ConfigError(f"lora.alpha must be > 0 (or None for alpha = rank), got {self.alpha!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"lora.dropout must be in [0, 1), got {self.dropout!r}")
        if isinstance(self.targets, str) or not self.targets:
            raise ConfigError(f"lora.targets must be a non-empty list of groups ({', '.join(GROUPS)}) or layer names, "
                              f"got {self.targets!r}")
        object.__setattr__(self, "targets", tuple(self.targets))

    @property
    def lora_alpha(self) -> float:
        return float(self.rank if self.alpha is None else self.alpha)


# ---------------------------------------------------------------------------------------------------- targets
def lora_layers(net: nn.Module) -> dict[str, nn.Module]:
    """The layers a LoRA can target (Linear and Conv), by module name, in order. Left out: layers whose parent
    reads their weight instead of calling them (our U-Net's Upsample folds its 3x3 conv into a transposed conv),
    where a peft layer would never run."""
    modules = dict(net.named_modules())

    def called(name: str) -> bool:
        parent = modules.get(name.rpartition(".")[0])
        return not (type(parent).__name__ in _WEIGHT_READERS and type(parent).__module__.startswith("noisecraft."))

    return {n: m for n, m in modules.items()
            if n and isinstance(m, _LAYER_TYPES) and "lora_" not in n and ".base_layer" not in n and called(n)}


def _attention_owner(modules: dict[str, nn.Module], name: str) -> bool:
    """Whether layer `name` is a direct projection of an attention module (ModuleLists in between are skipped:
    diffusers' to_out.0)."""
    parent = name.rpartition(".")[0]
    while parent in modules and isinstance(modules[parent], nn.ModuleList):
        parent = parent.rpartition(".")[0]
    owner = modules.get(parent)
    kind = type(owner).__name__ if owner is not None else ""
    return ("Attention" in kind or "Attn" in kind) and not isinstance(owner, nn.Sequential)


def group_layers(net: nn.Module, group: str) -> list[str]:
    """The layer names of one target group (module docstring)."""
    layers, modules = lora_layers(net), dict(net.named_modules())
    if group == "attention":
        return [n for n, m in layers.items() if isinstance(m, nn.Linear) and _attention_owner(modules, n)]
    if group == "conv":
        return [n for n, m in layers.items() if not isinstance(m, nn.Linear)]
    if group == "feedforward":
        return [n for n, m in layers.items() if isinstance(m, nn.Linear) and _FF_WORDS & set(n.split("."))]
    if group == "linear":
        return [n for n, m in layers.items() if isinstance(m, nn.Linear)]
    raise NoisecraftError(f"unknown LoRA target group {group!r}; groups: {', '.join(GROUPS)}")


def resolve_targets(net: nn.Module, targets) -> list[str]:
    """Groups and layer names -> the layer names they select, in the network's order. A target that selects
    nothing is an error naming it and listing the groups and every layer there is."""
    layers = lora_layers(net)
    chosen: set[str] = set()
    for target in targets:
        if target in GROUPS:
            found = group_layers(net, target)
        else:
            found = [n for n in layers if n == target or n.endswith("." + target)]
        if not found:
            what = f"group {target!r} selects no layer" if target in GROUPS else f"target {target!r} matches no layer"
            raise NoisecraftError(f"LoRA {what} of this {type(net).__name__}; groups: {', '.join(GROUPS)}; "
                                  f"available layers ({len(layers)}): {', '.join(layers)}")
        chosen.update(found)
    return [n for n in layers if n in chosen]


# ------------------------------------------------------------------------------------------------- injection
def _peft():
    try:
        import peft
    except ImportError as e:
        raise NoisecraftError("LoRA training needs peft: pip install 'noisecraft[finetune]' (or pip install peft)") \
            from e
    return peft


def peft_config(config: LoRAConfig, names: list[str]):
    """The peft LoraConfig of a LoRAConfig whose targets resolved to `names` (full module names)."""
    return _peft().LoraConfig(r=config.rank, lora_alpha=config.lora_alpha, lora_dropout=float(config.dropout),
                              target_modules=list(names), init_lora_weights=True, bias="none")


def add_lora(net: nn.Module, config: LoRAConfig, *, adapter: str = "default") -> list[str]:
    """Inject fresh LoRA layers (B = 0) into `net` in place through peft and freeze everything else; returns the
    names of the layers that got one. The network keeps its class and forward signature."""
    if any("lora_A" in n for n, _ in net.named_modules()):
        raise NoisecraftError(f"this {type(net).__name__} already has LoRA layers; train a new LoRA on a freshly "
                              f"loaded base (or merge the old one into it first)")
    names = resolve_targets(net, config.targets)
    _peft().inject_adapter_in_model(peft_config(config, names), net, adapter_name=adapter)
    for name, p in net.named_parameters():
        p.requires_grad_("lora_" in name)
    return names


def lora_state(net: nn.Module, *, adapter: str = "default") -> dict[str, torch.Tensor]:
    """The LoRA tensors of a network with injected layers: {module.lora_A.weight: A, module.lora_B.weight: B}."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(net, adapter_name=adapter).items()}


def attach_lora(net: nn.Module, path, *, scale: float = 1.0, component: str | None = None,
                adapter: str = "default") -> list[str]:
    """Inject the LoRA of an adapter file into `net` unmerged (peft layers computing W x + s (alpha/r) B A x at
    every forward); the file's `component.` prefix is removed. Several adapters (each its own `adapter` name) are
    active together. Returns the layer names. Use `merge_lora` (or
    noisecraft.interop.lora) to fold adapters into the weights instead."""
    info, tensors = read_lora_file(path)
    prefix = f"{component or info.get('component', 'unet')}."
    state = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in tensors.items()}
    names = sorted({k.rsplit(".lora_", 1)[0] for k in state})
    modules = lora_layers(net)
    missing = [n for n in names if n not in modules]
    if missing:
        raise NoisecraftError(f"{path}: {len(missing)} LoRA layers match no layer of this {type(net).__name__}: "
                              f"{', '.join(missing)}")
    rank = int(next(v for k, v in state.items() if k.endswith("lora_A.weight")).shape[0])
    config = LoRAConfig(rank=rank, alpha=float(info.get("alpha", rank)), targets=tuple(names))
    peft = _peft()
    with warnings.catch_warnings():  # "Already found a peft_config attribute": a second adapter, as intended
        warnings.simplefilter("ignore", UserWarning)
        peft.inject_adapter_in_model(peft_config(config, names), net, adapter_name=adapter)
    result = peft.set_peft_model_state_dict(net, state, adapter_name=adapter)
    unexpected = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    if unexpected:
        raise NoisecraftError(f"{path}: LoRA tensors not loaded: {', '.join(unexpected)}")
    for module in net.modules():
        scaling = getattr(module, "scaling", None)
        if isinstance(scaling, dict) and adapter in scaling:
            scaling[adapter] *= float(scale)
        if isinstance(getattr(module, "lora_A", None), nn.ModuleDict) and hasattr(module, "set_adapter"):
            module.set_adapter(list(module.lora_A.keys()))  # every attached adapter active at once
    net.requires_grad_(False)
    return names


# ------------------------------------------------------------------------------------------------------ files
def base_hash(net: nn.Module) -> str:
    """SHA-256 of a network's weights (names, dtypes, shapes and bytes; LoRA layers left out): the base model
    an adapter was trained on."""
    from noisecraft.files import content_digest

    state = {k.replace(".base_layer", ""): v for k, v in net.state_dict().items() if "lora_" not in k}
    return content_digest(state, {})


def save_lora(path, state: dict[str, torch.Tensor], config: LoRAConfig, *, layers: list[str], component: str,
              info: dict) -> Path:
    """Write an adapter file atomically: `component.` + each tensor name of `state` (peft's names), the peft
    LoraConfig fields in `lora_adapter_metadata` (keyed `component.r`, ..., as diffusers' save_lora_weights
    writes them and its load_lora_adapter reads them) and {kind, rank, alpha, targets, layers, component} +
    `info` (method, base_hash, base, steps, ...) in `noisecraft_adapter`."""
    from safetensors.torch import save

    from noisecraft.files import atomic_write_bytes

    tensors = {f"{component}.{k}": v.detach().cpu().contiguous() for k, v in state.items()}
    for name, t in tensors.items():
        if not torch.isfinite(t).all():
            raise CheckpointError(f"refusing to save a LoRA with non-finite values in {name}")
    peft_fields = {"r": config.rank, "lora_alpha": config.lora_alpha, "lora_dropout": float(config.dropout),
                   "target_modules": list(layers), "bias": "none", "use_rslora": False, "use_dora": False,
                   "init_lora_weights": True}
    ours = {"kind": "lora", "rank": config.rank, "alpha": config.lora_alpha, "dropout": float(config.dropout),
            "targets": list(config.targets), "layers": list(layers), "component": component, **info}
    packed = {f"{component}.{k}": v for k, v in peft_fields.items()}  # diffusers keys them by component
    metadata = {"format": "pt", PEFT_METADATA_KEY: json.dumps(packed), METADATA_KEY: json.dumps(ours)}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(path), save(tensors, metadata=metadata))
    return Path(path)


def read_lora_file(path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(our metadata (empty for a foreign file), the tensors) of a LoRA safetensors file; pickles refused."""
    from noisecraft.interop.lora import _read_safetensors

    tensors, metadata = _read_safetensors(Path(path))
    raw = metadata.get(METADATA_KEY)
    try:
        info = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: its {METADATA_KEY} metadata is not JSON") from None
    return info, tensors


# ------------------------------------------------------------------------------------------- using adapters
def network_of(run) -> tuple[str, nn.Module]:
    """(component, module) of a run that LoRAs train and load into: our U-Net / DiT ('unet' / 'transformer'), or
    the diffusers model inside a loaded diffusers run."""
    from noisecraft.interop.lora import _components_of_run

    component, module = next(iter(_components_of_run(run).items()))
    return component, module


def check_base(run, path, info: dict) -> None:
    """Warn when an adapter was trained on other weights than the run's (it may still apply: same layers)."""
    expected = info.get("base_hash")
    if not expected:
        return
    actual = base_hash(network_of(run)[1])
    if actual != expected:
        warnings.warn(f"{path} was trained on base {info.get('base', '?')!r} (weights {expected[:12]}), not on these "
                      f"weights ({actual[:12]}); applying it anyway", stacklevel=3)


def merge_lora(run, adapters, *, strict: bool = True) -> dict:
    """Merge adapter files into a run's weights: [(path, scale), ...] (several at once, W' = W + sum_i s_i
    (alpha_i / r_i) B_i A_i; noisecraft.interop.lora.apply_lora_to_run). Returns {component: LoRAReport}; undo
    with `unmerge_lora(reports)`. With strict (the default) a layer that matches nothing is an error listing
    every such layer by name (an adapter for another architecture), and no weight changes."""
    from noisecraft.interop.lora import apply_lora_to_run

    adapters = [(str(p), float(s)) for p, s in adapters]
    for path, _ in adapters:
        info, _ = read_lora_file(path)
        check_base(run, path, info)
    return apply_lora_to_run(run, adapters, strict=strict)


def unmerge_lora(reports: dict) -> None:
    """Put back the exact weights from before `merge_lora` (the LoRAs merged last are taken out first)."""
    for report in reversed(list(reports.values())):
        report.unmerge()


# --------------------------------------------------------------------------------------------- diffusers names
def to_diffusers_lora(state: dict[str, torch.Tensor], unet_config) -> dict[str, torch.Tensor]:
    """Our U-Net's LoRA tensors (peft names of our modules) -> the same LoRA on diffusers' UNet2DModel names (the
    model `noisecraft export --format diffusers` writes): one-to-one renames, and our fused qkv's LoRA as to_q /
    to_k / to_v with A shared and B split along the output axis (B A split by rows: the same update)."""
    from noisecraft.interop.diffusers_export import _one_to_one_pairs

    renames, attentions = _one_to_one_pairs(unet_config)
    names = dict(renames)
    fused = {f"{ours}.qkv": theirs for ours, theirs in attentions}
    out: dict[str, torch.Tensor] = {}
    for key, t in state.items():
        module, _, part = key.partition(".lora_")
        if module in fused:
            for i, q in enumerate(("to_q", "to_k", "to_v")):
                piece = t if part.startswith("A") else t.chunk(3, dim=0)[i]
                out[f"{fused[module]}.{q}.lora_{part}"] = piece.clone().contiguous()
        elif module in names:
            out[f"{names[module]}.lora_{part}"] = t.clone().contiguous()
        else:
            raise NoisecraftError(f"LoRA layer {module!r} has no diffusers UNet2DModel counterpart")
    return out


def export_diffusers_lora(path, unet_config, out) -> Path:
    """Rewrite an adapter file of our U-Net for the diffusers folder it exports as (`to_diffusers_lora`); the
    metadata is kept, with the diffusers layer names as peft target_modules."""
    info, tensors = read_lora_file(path)
    component = info.get("component", "unet")
    prefix = component + "."
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    converted = to_diffusers_lora(state, unet_config)
    layers = sorted({k.rsplit(".lora_", 1)[0] for k in converted})
    config = LoRAConfig(rank=int(info.get("rank", 1)), alpha=info.get("alpha"), dropout=info.get("dropout", 0.0),
                        targets=tuple(info.get("targets") or ("attention",)))
    extra = {k: v for k, v in info.items() if k not in ("kind", "rank", "alpha", "dropout", "targets", "layers",
                                                        "component")}
    return save_lora(out, converted, config, layers=layers, component="unet", info={**extra, "naming": "diffusers"})
