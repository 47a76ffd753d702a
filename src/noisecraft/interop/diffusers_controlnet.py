"""ControlNets in the diffusers format (`ControlNetModel`, Zhang, Rao & Agrawala 2023, "Adding Conditional Control
to Text-to-Image Diffusion Models") on loaded Stable Diffusion runs.

    run = noisecraft.load("sd-folder")                         # a StableDiffusionPipeline folder
    attach_controlnet(run, "controlnet-canny")                 # a ControlNetModel folder (config.json + safetensors)
    generate(run, Request(prompts=("a house",), conditions={"control": Control(edges, scale=0.8)}))

A `StableDiffusionControlNetPipeline` folder (model_index.json with a `controlnet` entry) loads with its ControlNet
attached. The ControlNet reads the same input as the U-Net (the scaled latents x, the timestep, the prompt's
tokens) plus the control image c (B, C, H, W) in [0, 1] at the image's resolution (diffusers' control image
processor does not normalise it to [-1, 1]); its residuals, times the conditioning scale s, are added to the U-Net's
skip connections and to its middle block (`down_block_additional_residuals`, `mid_block_additional_residual`), as
the diffusers pipeline does (eq. 2 of the paper). Under classifier-free guidance both branches get the same image and
scale (the pipeline's default, guess_mode=False). Scale 0, or no control image, is exactly the base U-Net. A grey
map (one channel) is given to every channel of a ControlNet that reads colour images.
"""

from __future__ import annotations

from pathlib import Path

import torch

from noisecraft.conditions.base import Condition, ConditionSet
from noisecraft.conditions.control import ControlCondition
from noisecraft.errors import CheckpointError, NoisecraftError

CONTROLNET_CLASS = "ControlNetModel"


class DiffusersControlCondition(ControlCondition):
    """The control image of a diffusers ControlNet (request value: a map tensor or a `Control`; see
    `noisecraft.conditions.control.ControlCondition`)."""

    def __init__(self, map_channels: int, size: tuple[int, int], device, default_scale: float = 1.0) -> None:
        Condition.__init__(self, None)
        self.map_channels, self.size, self.default_scale = int(map_channels), tuple(size), float(default_scale)
        self.kind, self.factor, self.base_path, self.canny_sigma = "control image", 1, "", 1.0
        self.device = torch.device(device)

    def load(self, run_dir, net, device, data_shape: tuple) -> None:
        """Nothing to read: `attach_controlnet` sets the condition up."""

    def describe(self) -> str:
        return (f"a diffusers ControlNet on {self.map_channels}-channel control images of size "
                f"{'x'.join(map(str, self.size))}; use --control MAP.png and --control-scale S >= 0")


def attach_controlnet(run, folder, *, device=None, default_scale: float = 1.0):
    """Attach the diffusers ControlNetModel in `folder` to a loaded Stable Diffusion run (module docstring): the run
    then takes request.conditions["control"]. Returns the run. One-line errors for a run that is not a diffusers
    UNet2DConditionModel, a folder that is not a ControlNetModel, or one made for another U-Net (the mismatched
    fields named)."""
    from noisecraft.interop.diffusers_files import CONFIG, from_pretrained, read_json
    from noisecraft.pipelines.run import image_shape

    net = run.denoiser.net  # a DiffusersNet (interop.diffusers_load) has a controlnet slot
    if not (hasattr(net, "controlnet") and getattr(net, "class_name", None) == "UNet2DConditionModel"):
        what = getattr(net, "class_name", type(net).__name__)
        raise NoisecraftError(f"a diffusers ControlNet controls a loaded Stable Diffusion U-Net "
                              f"(UNet2DConditionModel); model {run.config.name!r} is a {what}. For noisecraft runs, "
                              f"train one: noisecraft train --preset mnist-control-canny conditioning.control_base=RUN")
    folder = Path(folder)
    if not (folder / CONFIG).is_file():
        raise CheckpointError(f"{folder}: not a diffusers ControlNetModel folder (no config.json)")
    cfg = read_json(folder / CONFIG)
    if cfg.get("_class_name") != CONTROLNET_CLASS:
        raise CheckpointError(f"{folder / CONFIG}: _class_name is {cfg.get('_class_name')!r}; expected "
                              f"{CONTROLNET_CLASS!r}")
    factor = 1 if run.autoencoder is None else run.autoencoder.factor
    _check_fits(folder, cfg, dict(net.module.config), factor)
    import diffusers

    device = run.device if device is None else device
    controlnet = from_pretrained(diffusers.ControlNetModel, folder, f"diffusers {CONTROLNET_CLASS}")
    net.controlnet = controlnet.float().to(device).eval().requires_grad_(False)
    size = image_shape(run.data_shape, run.autoencoder)[1:]
    condition = DiffusersControlCondition(int(cfg.get("conditioning_channels", 3)), size, device, default_scale)
    others = [c for c in run.conditions if c.name != condition.name]
    run.conditions = ConditionSet([*others, condition], run.conditions.p if run.conditions else 0.0)
    run.extra["controlnet"] = str(folder)
    return run


def _check_fits(folder: Path, cfg: dict, unet: dict, factor: int) -> None:
    """The ControlNet was made for this U-Net (widths, blocks, cross-attention, input channels) and its control
    encoder downsamples by the autoencoder's factor."""
    diffs = [f"{key}: ControlNet {cfg.get(key)!r}, U-Net {unet.get(key)!r}"
             for key in ("in_channels", "block_out_channels", "layers_per_block", "cross_attention_dim")
             if key in cfg and _norm(cfg[key]) != _norm(unet.get(key))]
    widths = cfg.get("conditioning_embedding_out_channels") or (16, 32, 96, 256)
    if 2 ** (len(widths) - 1) != factor:
        diffs.append(f"its control encoder downsamples by {2 ** (len(widths) - 1)} "
                     f"(conditioning_embedding_out_channels {list(widths)}), the autoencoder by {factor}")
    if diffs:
        raise CheckpointError(f"{folder}: this ControlNet was made for another U-Net: {'; '.join(diffs)}")


def _norm(v):
    return list(v) if isinstance(v, list | tuple) else v


__all__ = ["DiffusersControlCondition", "attach_controlnet"]
