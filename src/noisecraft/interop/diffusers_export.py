"""noisecraft runs -> diffusers pipeline folders, and diffusers `UNet2DModel` folders -> our `UNet`.

Our 2-D U-Net computes the same function as diffusers' `UNet2DModel` (tests/models/test_unet.py), so a run whose
parts all have a diffusers counterpart exports as a folder `DDPMPipeline.from_pretrained(folder)` loads:

    model_index.json                       {"_class_name": "DDPMPipeline", "unet": ..., "scheduler": ...}
    unet/config.json                       UNet2DModel config (`unet2d_config`)
    unet/diffusion_pytorch_model.safetensors
    scheduler/scheduler_config.json        DDPMScheduler with our betas (`trained_betas`) and prediction_type

What maps (everything else is a NoisecraftError naming the part and what is supported):

| noisecraft                                   | diffusers                                              |
|----------------------------------------------|--------------------------------------------------------|
| UNet, dims 2, no text/pooled/vector/concat   | UNet2DModel ((Attn)DownBlock2D / (Attn)UpBlock2D)      |
| num_classes K (label K = the null label)     | num_class_embeds = K + 1, class_embed_type None        |
| discrete beta schedule (linear, cosine, ...) | DDPMScheduler, trained_betas = our betas (float64 ->   |
|                                              | JSON, read back by diffusers as float32)               |
| prediction eps / v / x0                      | prediction_type epsilon / v_prediction / sample        |

A class-conditional export loads with `DDPMPipeline.from_pretrained` too, but `DDPMPipeline.__call__` passes no
class labels: call the UNet2DModel with `class_labels` (K = unconditional) and drive the scheduler yourself.

Weight names (`unet2d_key_pairs`): one table in both directions, `to_diffusers_unet2d` (export) and
`from_diffusers_unet2d` (import). Every name is renamed one to one except our fused attention projection
`qkv` (3C, C), which is diffusers' `to_q`, `to_k`, `to_v` stacked along the output axis.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from noisecraft.errors import CheckpointError, NoisecraftError

DIFFUSERS_VERSION = "0.30.0"  # the config format written (read by diffusers >= 0.30)
MODEL_INDEX = "model_index.json"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
SCHEDULER_FILE = "scheduler_config.json"
SUPPORTED = ("supported: model 'unet' with dims 2, unconditional or class-conditional (no text, pooled, vector, "
             "concat, layout or refiner inputs), pixel-space, a discrete beta schedule (linear, scaled_linear, "
             "cosine, sigmoid) and prediction eps, v or x0")
_PREDICTION_TYPES = {"eps": "epsilon", "v": "v_prediction", "x0": "sample"}
_BETA_SCHEDULE_NAMES = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2",
                        "sigmoid": "sigmoid"}
_RES_NAMES = (("norm1", "norm1"), ("conv1", "conv1"), ("emb_proj", "time_emb_proj"), ("norm2", "norm2"),
              ("conv2", "conv2"), ("skip", "conv_shortcut"))
_QKV = ("to_q", "to_k", "to_v")


def _unsupported(part: str) -> NoisecraftError:
    return NoisecraftError(f"diffusers export: {part} has no exact diffusers counterpart; {SUPPORTED}")


# ---------------------------------------------------------------------------------------------------------------
# Configs: UNetConfig <-> UNet2DModel config


def unet2d_config(cfg, sample_size: int | None = None) -> dict:
    """The diffusers UNet2DModel config.json of a UNetConfig (NoisecraftError for a part UNet2DModel lacks)."""
    check_unet2d_exportable(cfg)
    attn, levels = set(cfg.attention_levels), range(len(cfg.channel_mult))
    return {
        "_class_name": "UNet2DModel", "_diffusers_version": DIFFUSERS_VERSION,
        "sample_size": sample_size, "in_channels": cfg.in_channels, "out_channels": cfg.output_channels,
        "center_input_sample": False, "time_embedding_type": "positional",
        "time_embedding_dim": cfg.time_embed_mult * cfg.base_channels,
        "freq_shift": 0, "flip_sin_to_cos": True,
        "down_block_types": ["AttnDownBlock2D" if lv in attn else "DownBlock2D" for lv in levels],
        "up_block_types": ["AttnUpBlock2D" if lv in attn else "UpBlock2D" for lv in reversed(levels)],
        "block_out_channels": list(cfg.widths), "layers_per_block": cfg.num_res_blocks,
        "mid_block_scale_factor": 1, "downsample_padding": 1, "downsample_type": "conv", "upsample_type": "conv",
        "dropout": cfg.dropout, "act_fn": "silu", "attention_head_dim": cfg.head_channels,
        "norm_num_groups": cfg.norm_groups, "attn_norm_num_groups": cfg.norm_groups, "norm_eps": 1e-5,
        "resnet_time_scale_shift": "scale_shift" if cfg.scale_shift_norm else "default",
        "add_attention": cfg.mid_attention, "class_embed_type": None,
        "num_class_embeds": cfg.num_classes + 1 if cfg.num_classes else None, "num_train_timesteps": None,
    }


def check_unet2d_exportable(cfg) -> None:
    """NoisecraftError naming the first part of a UNetConfig that UNet2DModel cannot express exactly."""
    from noisecraft.models.unet import UNetConfig

    if not isinstance(cfg, UNetConfig):
        raise _unsupported(f"a network config of type {type(cfg).__name__}")
    if cfg.dims != 2:
        raise _unsupported(f"a {cfg.dims}-D U-Net (UNet2DModel is 2-D)")
    if cfg.context_dim:
        raise _unsupported("text cross-attention (our CrossAttentionBlock: GroupNorm self-attention, then LayerNorm "
                           "cross-attention and a GELU feed-forward, no proj_in/proj_out; UNet2DConditionModel's "
                           "Transformer2DModel has proj_in/proj_out and a GEGLU feed-forward)")
    for name, what in (("pooled_dim", "a pooled text embedding (text_pooled)"), ("vector_dim", "a vector input"),
                       ("concat_channels", "concatenated input channels (concat / layout / mask inputs)")):
        if getattr(cfg, name):
            raise _unsupported(f"{what}, UNetConfig.{name} = {getattr(cfg, name)}")
    if cfg.refiner.kernel:
        raise _unsupported("the token refiner (UNetConfig.refiner)")


def _require(ok: bool, where, message: str) -> None:
    if not ok:
        raise CheckpointError(f"{where}: {message}")


def unet_config_from_diffusers(d: dict, where="unet/config.json"):
    """A diffusers UNet2DModel config -> the UNetConfig computing the same function (CheckpointError naming the
    setting when the model is a variant our U-Net does not implement)."""
    from noisecraft.models.unet import UNetConfig

    def get(key, default):
        return d.get(key, default)

    _require(d.get("_class_name") == "UNet2DModel", where, f"describes a {d.get('_class_name')!r}, not a "
             "'UNet2DModel' (noisecraft imports UNet2DModel U-Nets)")
    expected = {"center_input_sample": False, "time_embedding_type": "positional", "freq_shift": 0,
                "flip_sin_to_cos": True, "mid_block_scale_factor": 1, "downsample_padding": 1,
                "downsample_type": "conv", "upsample_type": "conv", "act_fn": "silu", "norm_eps": 1e-5,
                "class_embed_type": None}
    for key, value in expected.items():
        _require(get(key, value) == value, where, f"{key} = {get(key, value)!r} is not supported; allowed: {value!r}")
    widths = tuple(get("block_out_channels", (224, 448, 672, 896)))
    down = tuple(get("down_block_types", ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D")))
    up = tuple(get("up_block_types", ("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D")))
    _require(len(down) == len(up) == len(widths), where, "down/up block types and block_out_channels differ in length")
    _require(set(down) <= {"DownBlock2D", "AttnDownBlock2D"} and set(up) <= {"UpBlock2D", "AttnUpBlock2D"}, where,
             f"block types {down} / {up} unsupported; allowed: (Attn)DownBlock2D / (Attn)UpBlock2D")
    attn = tuple(i for i, b in enumerate(down) if b == "AttnDownBlock2D")
    _require(attn == tuple(len(up) - 1 - i for i, b in reversed(list(enumerate(up))) if b == "AttnUpBlock2D"),
             where, "attention in the down and up blocks of different levels is not supported")
    base = widths[0]
    _require(all(w % base == 0 for w in widths), where, f"block_out_channels {widths} must be multiples of the first")
    groups = int(get("norm_num_groups", 32))
    shift = get("resnet_time_scale_shift", "default")
    _require(shift in ("default", "scale_shift"), where, f"resnet_time_scale_shift {shift!r} unsupported; allowed: "
             "default, scale_shift")
    attn_groups = get("attn_norm_num_groups", None)
    _require(attn_groups == groups or (attn_groups is None and shift == "default"), where,
             f"attn_norm_num_groups {attn_groups!r} must equal norm_num_groups {groups}")
    mid = bool(get("add_attention", True))
    head = get("attention_head_dim", 8)
    attn_widths = {widths[i] for i in attn} | ({widths[-1]} if mid else set())
    if head is None:  # one head per attention layer: one head width only if every attention width is the same
        _require(len(attn_widths) <= 1, where, "attention_head_dim None with attention at several widths")
        head = attn_widths.pop() if attn_widths else base
    emb = get("time_embedding_dim", None) or 4 * base
    _require(emb % base == 0, where, f"time_embedding_dim {emb} must be a multiple of block_out_channels[0] {base}")
    classes = get("num_class_embeds", None)
    _require(classes is None or int(classes) >= 2, where, f"num_class_embeds {classes} must be None or >= 2 "
             "(the last class is noisecraft's null label)")
    c_in, c_out = int(get("in_channels", 3)), int(get("out_channels", 3))
    return UNetConfig(in_channels=c_in, out_channels=None if c_out == c_in else c_out, dims=2,
                      base_channels=base, channel_mult=tuple(w // base for w in widths),
                      num_res_blocks=int(get("layers_per_block", 2)), attention_levels=attn, head_channels=int(head),
                      dropout=float(get("dropout", 0.0)), norm_groups=groups, scale_shift_norm=shift == "scale_shift",
                      num_classes=int(classes) - 1 if classes else 0, mid_attention=mid, time_embed_mult=emb // base)


# ---------------------------------------------------------------------------------------------------------------
# Weights: one name table, both directions


def unet2d_key_pairs(cfg) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(renames, attentions) for a UNetConfig: module-prefix pairs (ours, diffusers') whose weight/bias map one to
    one, and attention-block prefix pairs (ours, diffusers') whose `qkv` is diffusers' to_q/to_k/to_v stacked."""
    renames = [("time_mlp.0", "time_embedding.linear_1"), ("time_mlp.2", "time_embedding.linear_2"),
               ("conv_in", "conv_in"), ("norm_out", "conv_norm_out"), ("conv_out", "conv_out")]
    renames += [("class_emb", "class_embedding")] if cfg.num_classes else []
    attentions: list[tuple[str, str]] = []

    def res(ours: str, theirs: str) -> None:
        renames.extend((f"{ours}.{a}", f"{theirs}.{b}") for a, b in _RES_NAMES)

    levels, n, attn = len(cfg.channel_mult), cfg.num_res_blocks, set(cfg.attention_levels)
    k = 0
    for level in range(levels):
        for j in range(n):
            res(f"down.{k}.0", f"down_blocks.{level}.resnets.{j}")
            if level in attn:
                attentions.append((f"down.{k}.1", f"down_blocks.{level}.attentions.{j}"))
            k += 1
        if level < levels - 1:
            renames.append((f"down.{k}.0.conv", f"down_blocks.{level}.downsamplers.0.conv"))
            k += 1
    res("mid.0", "mid_block.resnets.0")
    res(f"mid.{1 + cfg.mid_attention}", "mid_block.resnets.1")
    attentions += [("mid.1", "mid_block.attentions.0")] if cfg.mid_attention else []
    for i, level in enumerate(reversed(range(levels))):
        for j in range(n + 1):
            p = f"up.{i * (n + 1) + j}"
            res(f"{p}.0", f"up_blocks.{i}.resnets.{j}")
            if level in attn:
                attentions.append((f"{p}.1", f"up_blocks.{i}.attentions.{j}"))
            if level > 0 and j == n:
                renames.append((f"{p}.{1 + (level in attn)}.conv", f"up_blocks.{i}.upsamplers.0.conv"))
    return renames, attentions


def _check_consumed(state: dict, used: set, where: str) -> None:
    left = sorted(set(state) - used)
    if left:
        raise CheckpointError(f"{where}: {len(left)} weight(s) with no counterpart, e.g. {left[:4]}")


def _one_to_one_pairs(cfg):
    """(our name, diffusers' name) of every module mapped one to one (attention norms and output projections
    included), and the attention pairs whose fused qkv is split / stacked."""
    renames, attentions = unet2d_key_pairs(cfg)
    return renames + [(f"{o}.{a}", f"{t}.{b}") for o, t in attentions
                      for a, b in (("norm", "group_norm"), ("proj", "to_out.0"))], attentions


def to_diffusers_unet2d(cfg, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our UNet state dict -> UNet2DModel state dict (fresh contiguous tensors, ready for safetensors)."""
    check_unet2d_exportable(cfg)
    renames, attentions = _one_to_one_pairs(cfg)
    out, used = {}, set()
    for ours, theirs in renames:
        for p in ("weight", "bias"):
            if f"{ours}.{p}" in state:
                out[f"{theirs}.{p}"] = state[f"{ours}.{p}"]
                used.add(f"{ours}.{p}")
    for ours, theirs in attentions:
        for p in ("weight", "bias"):
            for name, part in zip(_QKV, state[f"{ours}.qkv.{p}"].chunk(3, dim=0)):
                out[f"{theirs}.{name}.{p}"] = part
            used.add(f"{ours}.qkv.{p}")
    _check_consumed(state, used, "our U-Net")
    return {k: v.detach().cpu().clone().contiguous() for k, v in out.items()}


def from_diffusers_unet2d(cfg, state: dict[str, torch.Tensor], where="UNet2DModel weights") -> dict[str, torch.Tensor]:
    """UNet2DModel state dict -> our UNet state dict (the exact inverse of `to_diffusers_unet2d`)."""
    renames, attentions = _one_to_one_pairs(cfg)
    out, used = {}, set()
    for ours, theirs in renames:
        for p in ("weight", "bias"):
            if f"{theirs}.{p}" in state:
                out[f"{ours}.{p}"] = state[f"{theirs}.{p}"]
                used.add(f"{theirs}.{p}")
    for ours, theirs in attentions:
        for p in ("weight", "bias"):
            keys = [f"{theirs}.{name}.{p}" for name in _QKV]
            missing = [key for key in keys if key not in state]
            _require(not missing, where, f"missing attention weights {missing}")
            out[f"{ours}.qkv.{p}"] = torch.cat([state[key] for key in keys], dim=0)
            used.update(keys)
    _check_consumed(state, used, where)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Schedules: DiscreteSchedule + Prediction <-> DDPMScheduler config


def scheduler_config(schedule, prediction) -> dict:
    """The DDPMScheduler config of a discrete schedule and prediction (NoisecraftError for the others)."""
    from noisecraft.schedules.training import DiscreteSchedule

    if not isinstance(schedule, DiscreteSchedule):
        raise _unsupported(f"the {getattr(schedule, 'name', type(schedule).__name__)!r} schedule (diffusers' "
                           "DDPM/DDIM schedulers are discrete-time beta schedules)")
    kind = getattr(prediction, "kind", prediction)
    if kind not in _PREDICTION_TYPES:
        raise _unsupported(f"prediction {kind!r}")
    betas = schedule.betas.to(torch.float64)
    return {
        "_class_name": "DDPMScheduler", "_diffusers_version": DIFFUSERS_VERSION,
        "num_train_timesteps": len(betas), "beta_start": float(betas[0]), "beta_end": float(betas[-1]),
        "beta_schedule": _BETA_SCHEDULE_NAMES.get(schedule.name, "linear"), "trained_betas": betas.tolist(),
        "prediction_type": _PREDICTION_TYPES[kind], "variance_type": "fixed_small", "clip_sample": False,
        "clip_sample_range": 1.0, "thresholding": False, "timestep_spacing": "leading", "steps_offset": 0,
        "rescale_betas_zero_snr": False,
    }


def schedule_from_diffusers(d: dict, where="scheduler/scheduler_config.json"):
    """A DDPM/DDIM-style scheduler config -> (DiscreteSchedule, Prediction). Betas: `trained_betas` when given
    (exact), else diffusers' named `beta_schedule` with beta_start / beta_end."""
    from noisecraft.core.prediction import Prediction
    from noisecraft.schedules.training import DiscreteSchedule, make_betas

    kinds = {v: k for k, v in _PREDICTION_TYPES.items()}
    ptype = d.get("prediction_type", "epsilon")
    _require(ptype in kinds, where, f"prediction_type {ptype!r} unsupported; allowed: {', '.join(kinds)}")
    _require(not d.get("rescale_betas_zero_snr", False), where, "rescale_betas_zero_snr is not supported")
    names = {v: k for k, v in _BETA_SCHEDULE_NAMES.items()}
    name = names.get(d.get("beta_schedule", "linear"))
    _require(name is not None, where, f"beta_schedule {d.get('beta_schedule')!r} unsupported; allowed: "
             f"{', '.join(names)}")
    if d.get("trained_betas") is not None:
        betas = torch.tensor(d["trained_betas"], dtype=torch.float64)
    else:
        betas = make_betas(name, int(d.get("num_train_timesteps", 1000)), float(d.get("beta_start", 1e-4)),
                           float(d.get("beta_end", 0.02)))
    return DiscreteSchedule(name=name, betas=betas), Prediction(kinds[ptype])


# ---------------------------------------------------------------------------------------------------------------
# Folders


def _check_run(run) -> None:
    from noisecraft.models.unet import UNet

    model = getattr(run.config, "model", None)
    if model != "unet":
        raise _unsupported(f"model {model!r}" + (" (DiT variants)" if model == "dit" else ""))
    if not isinstance(run.denoiser.net, UNet):
        raise _unsupported(f"a {type(run.denoiser.net).__name__} network (a condition wrapping the U-Net)")
    check_unet2d_exportable(run.denoiser.net.config)  # names text cross-attention, concat inputs, ... first
    if run.autoencoder is not None:
        raise _unsupported("a latent run (diffusers' unconditional latent pipeline LDMPipeline takes a VQModel, not "
                           "an AutoencoderKL; the autoencoder alone exports with "
                           "noisecraft.autoencoder.interop.save_diffusers)")
    layout = getattr(getattr(run.config, "conditioning", None), "layout", None)
    if layout:
        raise _unsupported("layout conditioning")
    names = [c.name for c in run.conditions] if run.conditions else []
    extra = [n for n in names if n != "class"]
    if extra:
        raise _unsupported(f"condition(s) {', '.join(extra)}")


def export_diffusers(run, out_dir) -> Path:
    """Write `run` as a diffusers DDPMPipeline folder (module docstring) and return the folder.
    NoisecraftError naming the part when the run does not map onto diffusers exactly."""
    from safetensors.torch import save

    from noisecraft.files import atomic_write_bytes, atomic_write_json

    _check_run(run)
    net, denoiser = run.denoiser.net, run.denoiser
    cfg = net.config
    sched = scheduler_config(denoiser.schedule, denoiser.prediction)
    unet_cfg = unet2d_config(cfg, sample_size=int(run.data_shape[-1]) if run.data_shape else None)
    weights = to_diffusers_unet2d(cfg, net.state_dict())
    out = Path(out_dir)
    (out / "unet").mkdir(parents=True, exist_ok=True)
    (out / "scheduler").mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "unet" / WEIGHTS_FILE, save(weights, metadata={"format": "pt"}))
    atomic_write_json(out / "unet" / CONFIG_FILE, unet_cfg)
    atomic_write_json(out / "scheduler" / SCHEDULER_FILE, sched)
    atomic_write_json(out / MODEL_INDEX, {"_class_name": "DDPMPipeline", "_diffusers_version": DIFFUSERS_VERSION,
                                          "scheduler": ["diffusers", "DDPMScheduler"],
                                          "unet": ["diffusers", "UNet2DModel"]})
    return out


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read the diffusers config: {e}") from None


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = folder / WEIGHTS_FILE
    if not path.is_file():
        pickle = " (diffusion_pytorch_model.bin is a pickle file and is never loaded: unsafe; save as safetensors)" \
            if (folder / "diffusion_pytorch_model.bin").is_file() else ""
        raise CheckpointError(f"{folder}: no {WEIGHTS_FILE}{pickle}")
    try:
        return load_file(str(path))
    except Exception as e:  # SafetensorError, OSError
        raise CheckpointError(f"{path} is corrupt or unreadable: {type(e).__name__}: {e}") from None


def import_unet2d(folder):
    """A diffusers UNet2DModel folder (or a pipeline folder with unet/) -> our UNet with its weights (eval mode,
    the stored dtype)."""
    from noisecraft.models.unet import UNet

    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file() and (folder / "unet" / CONFIG_FILE).is_file():
        folder = folder / "unet"
    cfg = unet_config_from_diffusers(_read_json(folder / CONFIG_FILE), folder / CONFIG_FILE)
    state = from_diffusers_unet2d(cfg, _read_weights(folder), folder / WEIGHTS_FILE)
    dtypes = {t.dtype for t in state.values()}
    net = UNet(cfg).to(dtypes.pop() if len(dtypes) == 1 else torch.float32)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{folder}: weights do not fit the U-Net of its config: {e}") from None
    return net.eval()


def import_schedule(folder):
    """A diffusers pipeline folder's scheduler/scheduler_config.json -> (DiscreteSchedule, Prediction)."""
    folder = Path(folder)
    path = folder / "scheduler" / SCHEDULER_FILE
    if not path.is_file():
        path = folder / SCHEDULER_FILE
    return schedule_from_diffusers(_read_json(path), path)
