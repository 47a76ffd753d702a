"""diffusers folders -> noisecraft runs: `noisecraft.load(folder)` reads a diffusers MODEL folder (config.json
with `_class_name` one of `NETWORKS`) or a PIPELINE folder (model_index.json: unet or transformer, vae,
text_encoder + tokenizer, scheduler) into one `pipelines.Run`, so `generate`, every sampler and the CLI work.

| diffusers                                        | noisecraft                                                |
|--------------------------------------------------|-----------------------------------------------------------|
| UNet2DModel / UNet2DConditionModel /             | `DiffusersNet`: F(x, c_noise, cond) calls the module with |
| DiTTransformer2DModel / Transformer2DModel       | timestep = c_noise (fractional timesteps as floats),      |
|                                                  | encoder_hidden_states = cond["text_tokens"], class_labels |
| scheduler_config.json: betas (beta_schedule,     | `DiscreteSchedule` whose alphas_cumprod are diffusers'    |
| beta_start/end, num_train_timesteps, or          | own (computed in float32 as its schedulers do), so c_noise |
| trained_betas)                                   | of the scheduler's sigmas is its integer timestep         |
| prediction_type epsilon / v_prediction / sample  | Prediction eps / v / x0                                   |
| text_encoder + tokenizer (CLIP, T5)              | `DiffusersTextCondition`: tokens as the pipeline encodes  |
|                                                  | them (padded to the tokenizer's max length), null = ""    |
| vae (AutoencoderKL, scaling_factor)              | `Run.autoencoder` (`noisecraft.autoencoder`)              |

A VP model with x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps is the VE denoiser D(x, sigma) with
sigma_t = sqrt((1 - abar_t) / abar_t) (DESIGN.md): `core.Denoiser` feeds the network c_in x = x / sqrt(1 + sigma^2),
which is diffusers' `scale_model_input` of the Euler-type schedulers, and the network's timestep is c_noise.

Only safetensors weights are read: a folder with pickle weights only (*.bin, *.pt, *.ckpt) is refused without
being opened. Everything the loader does not implement (SDXL's second text encoder and added conditions,
class-conditional U-Nets, zero-terminal-SNR rescaling, Fourier time embeddings) is a one-line CheckpointError.
The scheduler's steps_offset is kept on the run's schedule (`DiffusersSchedule`), so the "leading" step schedule
gives the scheduler's own timesteps; its other sampling settings (its class, timestep spacing, Karras sigmas,
clip_sample) are not applied: `Run.config.sample` takes a sampler of the same family as defaults, and
`Run.extra["scheduler_config"]` keeps the scheduler config as read.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from noisecraft.conditions.base import ConditionSet
from noisecraft.conditions.text import PromptCondition
from noisecraft.errors import CheckpointError, NoisecraftError
from noisecraft.interop.diffusers_files import (
    BETA_SCHEDULES,
    CONFIG,
    MODEL_INDEX,
    SCHEDULER_CONFIG,
    check_weights,
    diffusers_alphas_cumprod,
    from_pretrained,
    read_json,
    require,
)
from noisecraft.schedules.training import DiscreteSchedule

NETWORKS = ("UNet2DModel", "UNet2DConditionModel", "DiTTransformer2DModel", "Transformer2DModel")
NETWORK_KEYS = ("unet", "transformer")  # the network's entry in model_index.json
TEXT_ENCODERS = ("CLIPTextModel", "CLIPTextModelWithProjection", "T5EncoderModel")
PREDICTIONS = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
# the scheduler class -> the noisecraft sampler of the same algorithm (the run's default sampler)
SAMPLER_OF = {"EulerDiscreteScheduler": "euler", "EulerAncestralDiscreteScheduler": "euler_a",
              "DDIMScheduler": "ddim", "HeunDiscreteScheduler": "heun", "LMSDiscreteScheduler": "lms",
              "UniPCMultistepScheduler": "unipc", "DEISMultistepScheduler": "deis",
              "DPMSolverMultistepScheduler": "dpmpp_2m", "DPMSolverSinglestepScheduler": "dpmpp_2s"}
DEFAULT_SCHEDULER = {"_class_name": "DDPMScheduler", "num_train_timesteps": 1000, "beta_start": 1e-4,
                     "beta_end": 0.02, "beta_schedule": "linear", "prediction_type": "epsilon"}  # DDPMScheduler's


# ------------------------------------------------------------------------------------------------ files
def is_diffusers_folder(path) -> bool:
    """A directory with model_index.json, or with a config.json naming a diffusers `_class_name` (our run
    directories have a config.json without one, beside checkpoint.safetensors)."""
    path = Path(path)
    if not path.is_dir() or (path / "checkpoint.safetensors").is_file():
        return False
    if (path / MODEL_INDEX).is_file():
        return True
    if not (path / CONFIG).is_file():
        return False
    try:
        return "_class_name" in json.loads((path / CONFIG).read_text())
    except (OSError, ValueError, TypeError):
        return False


def unsupported_class(where, name) -> CheckpointError:
    return CheckpointError(f"{where}: diffusers class {name!r} is not a network noisecraft loads; supported: "
                           f"{', '.join(NETWORKS)} (model folders), or a pipeline folder (model_index.json) with one")


# --------------------------------------------------------------------------------------------- schedule
@dataclass(frozen=True, eq=False)
class DiffusersSchedule(DiscreteSchedule):
    """A DiscreteSchedule read from a diffusers scheduler config, with its steps_offset (added to every "leading"
    timestep by `schedules.get_sigmas`, as diffusers' set_timesteps does; Stable Diffusion's is 1)."""

    steps_offset: int = 0


def diffusers_schedule(cfg: dict, where="scheduler_config.json"):
    """The DiscreteSchedule of a scheduler config: its betas are chosen so that their float64 cumulative product
    is diffusers' float32 alphas_cumprod (`diffusers_alphas_cumprod`), the table the scheduler really uses. It
    carries the config's steps_offset, which `get_sigmas` adds to "leading" timesteps as diffusers does."""
    abar = diffusers_alphas_cumprod(cfg, where)
    betas = 1 - abar / torch.cat([abar.new_ones(1), abar[:-1]])
    name = "trained" if cfg.get("trained_betas") is not None else BETA_SCHEDULES[cfg.get("beta_schedule", "linear")]
    offset = cfg.get("steps_offset") or 0
    require(isinstance(offset, int) and not isinstance(offset, bool) and 0 <= offset < len(betas), where,
             f"steps_offset must be an integer in [0, {len(betas)}), got {offset!r}")
    return DiffusersSchedule(name=name, betas=betas, steps_offset=offset)


def diffusers_prediction(cfg: dict, where="scheduler_config.json"):
    from noisecraft.core.prediction import Prediction

    kind = cfg.get("prediction_type", "epsilon")
    require(kind in PREDICTIONS, where, f"prediction_type {kind!r} is not supported; supported: "
             f"{', '.join(PREDICTIONS)}")
    return Prediction(PREDICTIONS[kind])


# ---------------------------------------------------------------------------------------------- network
def check_network_config(cfg: dict, where) -> None:
    """Refuse the network variants DiffusersNet does not feed (one line naming the field)."""
    name = cfg.get("_class_name")
    if name not in NETWORKS:
        raise unsupported_class(where, name)
    for key in ("addition_embed_type", "class_embed_type", "num_class_embeds", "encoder_hid_dim"):
        if key == "num_class_embeds" and is_upscaler(cfg):
            continue  # the x4 upscaler's noise level (interop.diffusers_upscale)
        require(cfg.get(key) is None, where, f"{key}={cfg.get(key)!r} (an extra condition) is not supported")
    require(cfg.get("time_embedding_type", "positional") == "positional", where,
             f"time_embedding_type {cfg.get('time_embedding_type')!r} (a continuous-sigma model) is not supported; "
             f"supported: positional")
    if name == "Transformer2DModel":
        require(cfg.get("norm_type") in ("ada_norm_zero", "ada_norm_single"), where,
                 f"norm_type {cfg.get('norm_type')!r} is not supported; supported: ada_norm_zero (DiT), "
                 f"ada_norm_single (PixArt)")


def _context_dim(cfg: dict) -> int:
    name = cfg["_class_name"]
    if name == "UNet2DConditionModel":
        dim = cfg.get("cross_attention_dim", 1280)
        return int(dim if isinstance(dim, int) else dim[0])
    if name == "Transformer2DModel":
        return int(cfg.get("caption_channels") or cfg.get("cross_attention_dim") or 0)
    return 0


def is_upscaler(cfg: dict) -> bool:
    """The Stable Diffusion x4 upscaler's U-Net: 3 image channels beside the latents, the noise level as a class."""
    return cfg.get("_class_name") == "UNet2DConditionModel" and cfg.get("num_class_embeds") is not None and \
        cfg.get("class_embed_type") is None and concat_channels(cfg) == 3


def _num_classes(cfg: dict) -> int:
    name = cfg["_class_name"]
    if is_upscaler(cfg):
        return int(cfg["num_class_embeds"])  # noise levels, fed by the low-res condition
    if name == "DiTTransformer2DModel" or (name == "Transformer2DModel" and cfg.get("norm_type") == "ada_norm_zero"):
        return int(cfg.get("num_embeds_ada_norm") or 0)
    return 0


class DiffusersNet(nn.Module):
    """A diffusers network as a noisecraft network F(x, c_noise, cond): timestep = c_noise (the fractional
    timestep), encoder_hidden_states = cond["text_tokens"] (cond["text_mask"] -> encoder_attention_mask unless it
    is all True), class_labels = cond["class_labels"]. A DiT that learns its variance (out_channels = 2 C) gives
    its first C channels, the noise prediction (as diffusers' DiTPipeline)."""

    def __init__(self, module: nn.Module, config: dict):
        super().__init__()
        from noisecraft.models.conditioning import CondSpec

        self.module, self.class_name = module, config["_class_name"]
        self.concat_channels = concat_channels(config)  # extra input channels (SD inpainting: mask + masked latents)
        self.in_channels = int(config.get("in_channels", 4)) - self.concat_channels  # those of x
        self.cond_spec = CondSpec(num_classes=_num_classes(config), context_dim=_context_dim(config),
                                  concat_channels=self.concat_channels)
        self.additional = bool(self.class_name == "Transformer2DModel" and config.get("norm_type") == "ada_norm_single")
        self.upscaler = is_upscaler(config)
        self.controlnet: nn.Module | None = None  # a diffusers ControlNetModel (interop.diffusers_controlnet)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond: dict | None = None) -> torch.Tensor:
        cond = dict(cond or {})
        control = None if self.controlnet is None else control_inputs(cond, x)  # pops the control keys
        unknown = sorted(set(cond) - set(self.cond_spec.accepts()))
        if unknown:
            raise NoisecraftError(f"this diffusers {self.class_name} takes cond keys "
                                  f"{', '.join(self.cond_spec.accepts()) or '(none)'}; got {', '.join(unknown)}")
        t = c_noise.to(x.dtype).reshape(-1).expand(x.shape[0])  # (B,)
        kw = self._inputs(cond, x)
        if self.concat_channels:  # [x, extra channels], as diffusers' inpainting pipeline concatenates them
            x = torch.cat([x, _concat_input(cond, x, self.concat_channels, self.class_name)], dim=1)
        if control is not None:
            kw.update(control_residuals(self.controlnet, x, t, kw, *control))
        out = self.module(x, timestep=t, return_dict=False, **kw)[0]
        return out[:, :self.in_channels] if out.shape[1] == 2 * self.in_channels else out

    def _inputs(self, cond: dict, x: torch.Tensor) -> dict:
        kw = {}
        if self.cond_spec.context_dim:
            if "text_tokens" not in cond:
                raise NoisecraftError(f"this diffusers {self.class_name} reads text (cond['text_tokens'], width "
                                      f"{self.cond_spec.context_dim}); load its pipeline folder (with text_encoder and "
                                      f"tokenizer) to sample with prompts")
            kw["encoder_hidden_states"] = cond["text_tokens"].to(x.dtype)
            mask = cond.get("text_mask")
            if mask is not None and not bool(mask.all()):
                kw["encoder_attention_mask"] = mask.to(x.dtype)
        if self.cond_spec.num_classes:
            if "class_labels" not in cond:
                raise NoisecraftError(f"this diffusers {self.class_name} is class-conditional; give cond"
                                      f"['class_labels'] (0..{self.cond_spec.num_classes - 1}, "
                                      f"{self.cond_spec.num_classes} = unconditional)")
            kw["class_labels"] = cond["class_labels"]
        if self.additional:
            kw["added_cond_kwargs"] = {"resolution": None, "aspect_ratio": None}
        return kw


# ------------------------------------------------------------------------------- ControlNet residuals
def control_inputs(cond: dict, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(control image (B, C, H, W), scale (B,)) popped from cond, or None when there is none or every scale is 0
    (then the U-Net runs alone: exactly the base)."""
    control, scale = cond.pop("control", None), cond.pop("control_scale", None)
    if control is None:
        return None
    B = x.shape[0]
    if not (isinstance(control, torch.Tensor) and control.ndim == 4 and control.shape[0] in (1, B)):
        got = tuple(control.shape) if isinstance(control, torch.Tensor) else type(control).__name__
        raise NoisecraftError(f"diffusers ControlNet: cond['control'] must be a (1 or {B}, C, H, W) image; got {got}")
    scale = torch.ones(1, device=x.device) if scale is None else scale.to(x.device).reshape(-1)
    if scale.shape[0] not in (1, B):
        raise NoisecraftError(f"diffusers ControlNet: cond['control_scale'] must have 1 or {B} entries; got "
                              f"{scale.shape[0]}")
    if not bool((scale != 0).any()):
        return None
    return control.expand(B, *control.shape[1:]), scale.expand(B)


def control_residuals(controlnet, x: torch.Tensor, t: torch.Tensor, kw: dict, control: torch.Tensor,
                      scale: torch.Tensor) -> dict:
    """The U-Net's extra keyword arguments: the ControlNet's residuals of (x, t, the prompt's tokens, control),
    times the per-sample scale (the diffusers ControlNet multiplies them by its conditioning_scale)."""
    down, mid = controlnet(x, t, encoder_hidden_states=kw.get("encoder_hidden_states"),
                           controlnet_cond=control.to(x.dtype), conditioning_scale=1.0,
                           class_labels=kw.get("class_labels"), return_dict=False)
    s = scale.to(x.dtype).view(-1, 1, 1, 1)
    return {"down_block_additional_residuals": [d * s for d in down], "mid_block_additional_residual": mid * s}


def concat_channels(cfg: dict) -> int:
    """Input channels beyond the output's of a UNet2DConditionModel (9 = 4 + 1 + 4: Stable Diffusion inpainting's
    latents, mask and masked-image latents); 0 for other networks."""
    if cfg.get("_class_name") != "UNet2DConditionModel":
        return 0
    extra = int(cfg.get("in_channels", 4)) - int(cfg.get("out_channels", cfg.get("in_channels", 4)))
    return max(extra, 0)


def _concat_input(cond: dict, x: torch.Tensor, channels: int, class_name: str) -> torch.Tensor:
    v = cond.get("concat")
    if v is None or v.ndim != 4 or v.shape[1] != channels or v.shape[0] not in (1, x.shape[0]) or \
            v.shape[2:] != x.shape[2:]:
        got = tuple(v.shape) if v is not None else "nothing"
        raise NoisecraftError(f"this diffusers {class_name} reads {channels} channels beside x (cond['concat'] of "
                              f"shape (B, {channels}, {x.shape[2]}, {x.shape[3]})); got {got}")
    return v.to(x.dtype).expand(x.shape[0], *v.shape[1:])


def load_network(folder: Path, device) -> tuple[DiffusersNet, dict]:
    cfg = read_json(folder / CONFIG)
    check_network_config(cfg, folder / CONFIG)
    import diffusers

    cls = getattr(diffusers, cfg["_class_name"])
    module = from_pretrained(cls, folder, f"diffusers {cfg['_class_name']}")
    net = DiffusersNet(module.float(), cfg).to(device).eval().requires_grad_(False)
    return net, cfg


def data_shape_of(cfg: dict) -> tuple[int, ...]:
    size = cfg.get("sample_size")
    if size is None:
        raise CheckpointError(f"the {cfg['_class_name']} config has no sample_size; cannot tell the sample shape")
    h, w = (size, size) if isinstance(size, int) else size
    return int(cfg.get("in_channels", 4)) - concat_channels(cfg), int(h), int(w)


# ------------------------------------------------------------------------------------------------- text
class DiffusersTextCondition(PromptCondition):
    """Text prompts encoded as diffusers' pipelines encode them: the tokenizer pads to its model_max_length,
    the text encoder's last hidden states are cond["text_tokens"] (B, L, D). CLIP (Stable Diffusion) reads every
    position, padding included, so text_mask is all True; T5 (PixArt) passes its attention mask on. The null
    text (condition dropout, the unconditional side of guidance) is the encoding of "", a negative prompt
    replaces it."""

    name = "text"

    def __init__(self, tokenizer, encoder, *, class_name: str, masked: bool) -> None:
        super().__init__(None)
        self.tokenizer, self.encoder, self.class_name, self.masked = tokenizer, encoder, class_name, masked
        self.max_tokens = int(tokenizer.model_max_length)
        self.device = next(encoder.parameters()).device

    @torch.no_grad()
    def encode(self, prompts, *, allow_empty: bool = False) -> dict:
        from noisecraft.text.encoders import check_prompts, too_long

        prompts = check_prompts(prompts, allow_empty)
        lengths = [len(ids) for ids in self.tokenizer(prompts, truncation=False)["input_ids"]]
        too_long(lengths, self.max_tokens, prompts)
        batch = self.tokenizer(prompts, padding="max_length", max_length=self.max_tokens, truncation=True,
                               return_tensors="pt")
        ids, mask = batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)
        use_mask = self.masked or bool(getattr(self.encoder.config, "use_attention_mask", False))
        tokens = self.encoder(ids, attention_mask=mask if use_mask else None)[0].float()  # (B, L, D)
        text_mask = mask.bool() if self.masked else torch.ones_like(mask, dtype=torch.bool)
        return {"text_tokens": tokens, "text_mask": text_mask}

    def describe(self) -> str:
        return f"a text-to-image diffusers pipeline (text encoder {self.class_name}); use --prompt"


def load_text_condition(root: Path, index: dict, device) -> DiffusersTextCondition | None:
    """The pipeline's text_encoder + tokenizer as a condition (None when it has none)."""
    entry = index.get("text_encoder")
    if not entry or entry[1] is None:
        return None
    where = root / MODEL_INDEX
    require(entry[1] in TEXT_ENCODERS, where, f"text_encoder {entry[1]!r} is not supported; supported: "
             f"{', '.join(TEXT_ENCODERS)}")
    tok_entry = index.get("tokenizer")
    require(bool(tok_entry) and tok_entry[1] is not None, where, "the pipeline has a text_encoder but no tokenizer")
    import transformers

    tok_cls = getattr(transformers, tok_entry[1], None)
    require(tok_cls is not None, where, f"unknown tokenizer class {tok_entry[1]!r}")
    try:
        tokenizer = tok_cls.from_pretrained(str(root / "tokenizer"), local_files_only=True)
    except Exception as e:
        raise CheckpointError(f"{root / 'tokenizer'}: cannot load the tokenizer: {type(e).__name__}: "
                              f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}") from None
    encoder = from_pretrained(getattr(transformers, entry[1]), root / "text_encoder", f"text encoder {entry[1]}")
    encoder = encoder.float().to(device).eval().requires_grad_(False)
    return DiffusersTextCondition(tokenizer, encoder, class_name=entry[1], masked=entry[1] == "T5EncoderModel")


def class_condition(num_classes: int, config, device):
    from noisecraft.conditions.classes import ClassCondition

    cond = ClassCondition(config)
    cond.class_names = []  # a diffusers folder names no dataset (keeps ClassCondition from looking one up)
    cond.device = torch.device(device)
    return cond


# ---------------------------------------------------------------------------------------------- the run
def run_config(name: str, net_cfg: dict, shape: tuple, scheduler: dict):
    """A RunConfig describing the loaded folder: its name, a network config of its shape, the schedule, and
    sampling defaults of the scheduler's family."""
    from noisecraft.models.dit import DiTConfig
    from noisecraft.models.unet import UNetConfig
    from noisecraft.runconfig import DiffusionConfig, RunConfig, SampleConfig

    classes = _num_classes(net_cfg)
    if net_cfg["_class_name"].startswith("UNet"):
        model, network = "unet", UNetConfig(in_channels=shape[0])
    else:
        p = int(net_cfg.get("patch_size") or 2)
        model, network = "dit", DiTConfig(in_channels=shape[0], input_size=shape[1], patch_size=p, num_classes=classes)
    trained = scheduler.get("trained_betas")
    diffusion = DiffusionConfig(
        schedule="linear" if trained is not None else BETA_SCHEDULES[scheduler.get("beta_schedule", "linear")],
        num_timesteps=len(trained) if trained is not None else int(scheduler.get("num_train_timesteps", 1000)),
        beta_start=float(trained[0] if trained is not None else scheduler.get("beta_start", 1e-4)),
        beta_end=float(trained[-1] if trained is not None else scheduler.get("beta_end", 0.02)),
        prediction=PREDICTIONS[scheduler.get("prediction_type", "epsilon")])
    karras = bool(scheduler.get("use_karras_sigmas"))
    sample = SampleConfig(sampler=SAMPLER_OF.get(scheduler.get("_class_name"), "dpmpp_2m"), steps=25,
                          step_schedule="karras" if karras else "trailing", num=16)
    return RunConfig(name=name, model=model, network=network, diffusion=diffusion, sample=sample)


def _find_scheduler(folder: Path, scheduler_config: dict | None) -> dict:
    if scheduler_config is not None:
        return dict(scheduler_config)
    for path in (folder / SCHEDULER_CONFIG, folder.parent / "scheduler" / SCHEDULER_CONFIG):
        if path.is_file():
            return read_json(path)
    warnings.warn(f"{folder}: no scheduler_config.json beside the model (nor ../scheduler/); assuming diffusers' "
                  f"DDPMScheduler defaults (linear betas 1e-4..0.02 over 1000 steps, epsilon prediction)",
                  stacklevel=3)
    return dict(DEFAULT_SCHEDULER)


def _pipeline_parts(root: Path) -> tuple[Path, dict, dict]:
    """(network folder, model_index, scheduler config) of a pipeline folder; refuses what is not supported."""
    index = read_json(root / MODEL_INDEX)
    where = root / MODEL_INDEX
    keys = [k for k in NETWORK_KEYS if index.get(k) and index[k][1] is not None]
    require(len(keys) == 1, where, f"needs exactly one of {', '.join(NETWORK_KEYS)}, found {keys or 'none'}")
    for extra in ("text_encoder_2", "text_encoder_3", "prior", "image_encoder", "adapter"):
        require(not (index.get(extra) and index[extra][1] is not None), where,
                 f"{index.get('_class_name')} has {extra}, which is not supported (one text encoder only)")
    name = index[keys[0]][1]
    if name not in NETWORKS:
        raise unsupported_class(where, name)
    require((root / "scheduler" / SCHEDULER_CONFIG).is_file(), where, "no scheduler/scheduler_config.json")
    return root / keys[0], index, read_json(root / "scheduler" / SCHEDULER_CONFIG)


def load_diffusers_run(path, *, use_ema: bool = True, device: str = "cpu", scheduler_config: dict | None = None):
    """A diffusers model or pipeline folder -> `pipelines.Run` (module docstring). use_ema is accepted for the
    LOADERS signature; a diffusers folder holds one set of weights (Run.ema is False). scheduler_config: the
    noise schedule of a model folder that has no scheduler_config.json (else diffusers' DDPM defaults, warned)."""
    from noisecraft.core.denoiser import Denoiser
    from noisecraft.pipelines.run import Run

    root = Path(path)
    if (root / MODEL_INDEX).is_file():
        net_dir, index, scheduler = _pipeline_parts(root)
    else:
        net_dir, index = root, {}
        check_network_config(read_json(root / CONFIG), root / CONFIG)
        scheduler = _find_scheduler(root, scheduler_config)
    where = root / "scheduler" / SCHEDULER_CONFIG if index else root / SCHEDULER_CONFIG
    schedule, prediction = diffusers_schedule(scheduler, where), diffusers_prediction(scheduler, where)
    net, net_cfg = load_network(net_dir, device)
    shape = data_shape_of(net_cfg)
    config = run_config(root.resolve().name, net_cfg, shape, scheduler)
    autoencoder = _autoencoder(root, index, shape, device)
    conditions = _conditions(root, index, net, config, device, autoencoder)
    extra = {"format": "diffusers", "class_name": net_cfg["_class_name"], "scheduler_config": scheduler,
             "model_index": index}
    denoiser = Denoiser(net, schedule, prediction).eval()
    run = Run(denoiser, config, shape, conditions, 0, root, autoencoder, False, extra)
    entry = index.get("controlnet")
    if entry and entry[1] is not None:  # a StableDiffusionControlNetPipeline folder
        from noisecraft.interop.diffusers_controlnet import attach_controlnet

        require(entry[1] == "ControlNetModel", root / MODEL_INDEX, f"controlnet {entry[1]!r} is not supported; "
                 f"supported: ControlNetModel (one ControlNet)")
        attach_controlnet(run, root / "controlnet", device=device)
    return run


def _conditions(root: Path, index: dict, net: DiffusersNet, config, device, autoencoder=None) -> ConditionSet:
    out = []
    if net.upscaler:
        from noisecraft.interop.diffusers_upscale import low_res_condition

        out.append(low_res_condition(root, index, net, autoencoder, device))
    elif net.concat_channels:
        from noisecraft.interop.diffusers_inpaint import inpaint_condition

        out.append(inpaint_condition(root, net, autoencoder, device))
    if net.cond_spec.num_classes and not net.upscaler:
        out.append(class_condition(net.cond_spec.num_classes, config, device))
    text = load_text_condition(root, index, device) if index else None
    if text is not None:
        require(net.cond_spec.context_dim > 0, root / MODEL_INDEX, "has a text encoder but its network reads no text")
        width = text.encoder.config.hidden_size if hasattr(text.encoder.config, "hidden_size") \
            else text.encoder.config.d_model
        require(width == net.cond_spec.context_dim, root / MODEL_INDEX,
                 f"the text encoder's width {width} differs from the network's cross-attention width "
                 f"{net.cond_spec.context_dim}")
        out.append(text)
    return ConditionSet(out)


def _autoencoder(root: Path, index: dict, shape: tuple, device):
    entry = index.get("vae")
    if not entry or entry[1] is None:
        return None
    require(entry[1] == "AutoencoderKL", root / MODEL_INDEX, f"vae {entry[1]!r} is not supported; supported: "
             f"AutoencoderKL")
    from noisecraft.autoencoder import load_autoencoder

    check_weights(root / "vae")
    ae = load_autoencoder(root / "vae", device=device)
    require(ae.config.latent_channels == shape[0], root / MODEL_INDEX,
             f"the vae has {ae.config.latent_channels} latent channels, the network takes {shape[0]}")
    return ae
