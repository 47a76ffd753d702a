"""ControlNet: structure control of a frozen U-Net (Zhang, Rao & Agrawala 2023, "Adding Conditional Control to
Text-to-Image Diffusion Models", Sec. 3.1-3.2).

A trainable copy of the base U-Net's encoder (input convolution, time/class/vector embeddings, every down block and
the middle block) reads the noisy input plus an encoding of the control map c (an edge map, a scribble, ...). The
copy's output after every block goes through a zero-initialised 1x1 convolution Z into the frozen base: added to
the skip connection that block feeds and to the output of the middle block. In the paper's notation (eq. 1-2),
for a block F with frozen weights Theta,

    y   = F(x; Theta)                                                        (1)
    y_c = F(x; Theta) + Z(F(x + Z(c; Theta_z1); Theta_c); Theta_z2)          (2)

with Theta_c a trainable copy of Theta. Here Z(c; Theta_z1) is the condition encoder of Sec. 3.2 (a small
convolutional network from the map to the width of the first level, its last layer zero-initialised), added to the
copy's first feature map; in pixel space the map has the input's resolution and the encoder needs no strides, and
for a latent run (a map f times the latents' size) it downsamples by f with stride-2 convolutions, as the paper's
encoder does for Stable Diffusion (512 x 512 maps to 64 x 64 latents). A conditioning scale s multiplies every
residual (the "control strength" of the reference implementation's sampling): the skip h_i becomes h_i + s
Z_i(h^c_i).

Because every Z starts at zero, a fresh ControlNet adds exactly zero: the controlled model's output equals the
base model's bit for bit (and so does s = 0, at any time). Gradients still reach the copy through Z's weights
(dZ/dW = the copy's features), which is why training starts from the base's behaviour instead of from noise.

    net = ControlledUNet(base_unet, ControlNet(base_unet, map_channels=1))
    net(x, c_noise, {"control": maps, "control_scale": scale, **base_cond})

`cond["control"]` (B, C_map, *S) and `cond["control_scale"]` (B,) are read (and removed) here; the rest of `cond`
goes to the base as usual (class labels, text tokens, ...), and the copy reads the same embeddings and tokens.
The state-dict keys are the base's under `base.` and the ControlNet's under `control.`; a base U-Net's own keys
are unchanged.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from noisecraft.errors import ConfigError, NoisecraftError
from noisecraft.models.conditioning import check_cond, refined_context
from noisecraft.models.unet import CONV, ConcatSkip, UNet, group_norm_silu

CONTROL_KEYS = ("control", "control_scale")  # the cond keys a ControlledUNet consumes


def zero_module(module: nn.Module) -> nn.Module:
    """`module` with every parameter set to zero (the paper's "zero convolution", Sec. 3.1)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ConditionEncoder(nn.Module):
    """The control map c (B, C_map, *S f) -> features (B, C_0, *S) added to the copy's first feature map (Zhang et
    al. 2023, Sec. 3.2: "a tiny network E(.) of four convolution layers"): 3x3 convolutions with SiLU, widths
    `hidden`, then log2(f) stride-2 3x3 convolutions with SiLU for a map f times the input's size (a latent run:
    the map is at the image's resolution, the paper's 512 -> 64 encoder for Stable Diffusion), then a
    zero-initialised 3x3 convolution to C_0 (so a fresh encoder adds 0)."""

    def __init__(self, map_channels: int, out_channels: int, dims: int, hidden: tuple[int, ...] = (16, 16, 32),
                 factor: int = 1):
        super().__init__()
        if factor not in (1, 2, 4, 8, 16):
            raise ConfigError(f"ControlNet map factor must be one of 1, 2, 4, 8, 16, got {factor!r}")
        conv, layers, ch = CONV[dims], [], map_channels
        for width in hidden:
            layers += [conv(ch, width, 3, padding=1), nn.SiLU()]
            ch = width
        for _ in range(factor.bit_length() - 1):  # log2(factor) downsamplings
            layers += [conv(ch, ch, 3, padding=1, stride=2), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.out = zero_module(conv(ch, out_channels, 3, padding=1))

    def forward(self, c: Tensor) -> Tensor:
        return self.out(self.body(c))


class ControlNet(nn.Module):
    """The trainable half (module docstring): copies of the base's embeddings, input convolution, down blocks and
    middle block, the condition encoder, and one zero 1x1 convolution per skip connection plus one for the middle
    block. Initialised from `base` (its current weights; `copy_from(base)` copies them again later).

    forward(x, c_noise, cond, control, context) -> (residuals for the skips, in the order the base appends them,
    residual for the middle block's output), unscaled."""

    def __init__(self, base: UNet, map_channels: int = 1, hidden: tuple[int, ...] = (16, 16, 32),
                 factor: int = 1) -> None:
        super().__init__()
        if not isinstance(base, UNet):
            raise ConfigError(f"a ControlNet controls a U-Net (model = 'unet'); got {type(base).__name__}")
        if not (isinstance(map_channels, int) and map_channels >= 1):
            raise ConfigError(f"ControlNet map_channels must be an integer >= 1, got {map_channels!r}")
        cfg = base.config
        self.config, self.map_channels, self.factor, self.memory_format = cfg, map_channels, factor, base.memory_format
        for name in ("time_mlp", "class_emb", "cond_emb", "conv_in", "concat_in", "down", "mid"):
            setattr(self, name, copy.deepcopy(getattr(base, name)))
        self.hint = ConditionEncoder(map_channels, cfg.base_channels, cfg.dims, hidden, factor)
        skip_chs = [cfg.base_channels] + [_out_channels(block) for block in base.down]
        conv = CONV[cfg.dims]
        self.zero_convs = nn.ModuleList(zero_module(conv(ch, ch, 1)) for ch in skip_chs)
        self.zero_mid = zero_module(conv(cfg.widths[-1], cfg.widths[-1], 1))
        self.to(memory_format=self.memory_format)

    def copied_names(self) -> tuple[str, ...]:
        return tuple(n for n in ("time_mlp", "class_emb", "cond_emb", "conv_in", "concat_in", "down", "mid")
                     if getattr(self, n) is not None)

    @torch.no_grad()
    def copy_from(self, base: UNet) -> None:
        """Set the copied modules to `base`'s weights (the paper's initialisation: Theta_c <- Theta)."""
        for name in self.copied_names():
            getattr(self, name).load_state_dict(getattr(base, name).state_dict())

    def forward(self, x: Tensor, c_noise: Tensor, cond: dict, control: Tensor, context) -> tuple[list[Tensor], Tensor]:
        emb = UNet._embed(self, c_noise, cond, x.shape[0])  # the copy's own time / class / vector embedding
        emb_act = nn.functional.silu(emb)
        h = self.conv_in(x.contiguous(memory_format=self.memory_format))  # (B, C_0, *S)
        if cond.get("concat") is not None:
            h = h + self.concat_in(cond["concat"].to(x.dtype).contiguous(memory_format=self.memory_format))
        h = h + self.hint(control.to(x.dtype).contiguous(memory_format=self.memory_format))  # x + Z(c) in eq. 2
        outs = [self.zero_convs[0](h)]
        for block, zero in zip(self.down, self.zero_convs[1:]):
            h = block(h, emb_act, context)
            outs.append(zero(h))
        h = self.mid(h, emb_act, context)
        return outs, self.zero_mid(h)


def _out_channels(block: nn.Module) -> int:
    """Output channels of a U-Net down block (its last convolution's)."""
    convs = [m for m in block.modules() if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d)]
    return convs[-1].out_channels


class ControlledUNet(nn.Module):
    """A frozen base U-Net with a ControlNet (module docstring). forward(x, c_noise, cond) as the U-Net's, plus
    cond["control"] (B, map_channels, *S) and cond["control_scale"] (B,) (batch 1 is broadcast). Without
    "control", or with every scale 0, it is exactly the base."""

    def __init__(self, base: UNet, control: ControlNet) -> None:
        super().__init__()
        self.base, self.control = base, control

    @property
    def config(self):
        return self.base.config

    def forward(self, x: Tensor, c_noise: Tensor, cond: dict | None = None) -> Tensor:
        cond = dict(cond or {})
        control, scale = cond.pop("control", None), cond.pop("control_scale", None)
        base = self.base
        if control is None:
            return base(x, c_noise, cond or None)
        B = x.shape[0]
        control, scale = self._check_control(control, scale, x)
        if not bool((scale != 0).any()):
            return base(x, c_noise, cond or None)
        c_noise = base._check_input(x, c_noise)
        cond = check_cond(cond, B, base.config.cond_spec, "UNet", spatial=x.shape[2:])
        context, pooled = refined_context(base.refiner, cond)
        res, res_mid = self.control(x, c_noise, cond, control, context)
        s = scale.to(x.dtype).view(B, *[1] * (x.ndim - 1))
        # the base U-Net's forward (models/unet.py), with s Z(...) added to each skip and to the middle block
        emb_act = nn.functional.silu(base._embed(c_noise, cond, B) + pooled)
        h = base.conv_in(x.contiguous(memory_format=base.memory_format))
        if cond.get("concat") is not None:
            h = h + base.concat_in(cond["concat"].to(x.dtype).contiguous(memory_format=base.memory_format))
        skips = [h]
        for block in base.down:
            h = block(h, emb_act, context)
            skips.append(h)
        skips = [h_i + s * r_i for h_i, r_i in zip(skips, res)]
        h = base.mid(h, emb_act, context) + s * res_mid
        for block in base.up:
            h = block(ConcatSkip.apply(h, skips.pop(), base.memory_format), emb_act, context)
        return base.conv_out(group_norm_silu(h, base.norm_out)).contiguous()

    def _check_control(self, control, scale, x: Tensor) -> tuple[Tensor, Tensor]:
        B, C, f = x.shape[0], self.control.map_channels, self.control.factor
        expected = (C, *(s * f for s in x.shape[2:]))
        if not (isinstance(control, Tensor) and control.is_floating_point() and control.ndim == x.ndim
                and control.shape[0] in (1, B) and tuple(control.shape[1:]) == expected):
            got = tuple(control.shape) if isinstance(control, Tensor) else type(control).__name__
            times = f" times {f}" if f > 1 else ""
            raise NoisecraftError(f"ControlNet: cond['control'] must be a float tensor of shape ({B} or 1, "
                                  f"{', '.join(map(str, expected))}) (the input's spatial size{times}); got {got}")
        if scale is None:
            scale = torch.ones(1, device=x.device)
        if not (isinstance(scale, Tensor) and scale.ndim == 1 and scale.shape[0] in (1, B)):
            got = tuple(scale.shape) if isinstance(scale, Tensor) else type(scale).__name__
            raise NoisecraftError(f"ControlNet: cond['control_scale'] must be a tensor of shape ({B},) or (1,); "
                                  f"got {got}")
        return control.expand(B, *control.shape[1:]), scale.to(x.device).expand(B)


__all__ = ["CONTROL_KEYS", "ConditionEncoder", "ControlNet", "ControlledUNet", "zero_module"]
