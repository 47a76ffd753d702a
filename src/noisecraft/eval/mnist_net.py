"""The MNIST feature network: a small CNN classifier trained on noisecraft's MNIST "train" split by
`scripts/train_mnist_classifier.py`; its features are the penultimate layer (128 ReLU units), its
logits the 10 digit classes.

Input: (N, 1, 28, 28) in [-1, 1] (noisecraft's pixel convention). The weights ship with the package as
`noisecraft/eval/weights/mnist_classifier.safetensors`; its metadata records the test-split accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from noisecraft.eval.common import WeightsError

INPUT_SIZE = 28
FEATURE_DIM = 128
FORMAT = "noisecraft.mnist_classifier"
WEIGHTS_NAME = "mnist_classifier.safetensors"


def _conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class MnistClassifier(nn.Module):
    """28x28 -> conv32 conv32 pool -> conv64 conv64 pool -> conv128 -> global mean -> fc128 (features)
    -> fc10 (logits). About 160k parameters."""

    def __init__(self, dropout: float = 0.3):
        super().__init__()
        self.body = nn.Sequential(_conv(1, 32), _conv(32, 32), nn.MaxPool2d(2),   # (N, 32, 14, 14)
                                  _conv(32, 64), _conv(64, 64), nn.MaxPool2d(2),  # (N, 64, 7, 7)
                                  _conv(64, 128))                                 # (N, 128, 7, 7)
        self.fc1 = nn.Linear(128, FEATURE_DIM)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(FEATURE_DIM, 10)

    def forward(self, x):
        h = self.body(x).mean(dim=(2, 3))  # (N, 128)
        features = F.relu(self.fc1(h))     # (N, 128): the penultimate layer
        return features, self.fc2(self.dropout(features))


def bundled_weights_path() -> Path:
    """The package's weights file; WeightsError if it was never trained."""
    path = Path(__file__).parent / "weights" / WEIGHTS_NAME
    if not path.is_file():
        raise WeightsError(f"the MNIST feature network's weights are missing ({path}); create them with "
                           f"`python scripts/train_mnist_classifier.py`")
    return path


def read_metadata(path) -> dict:
    """The JSON metadata of a classifier weights file (accuracy, training settings)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return {k: json.loads(v) for k, v in meta.items()}


def load_mnist_classifier(path=None) -> MnistClassifier:
    """The trained classifier (strict load), in eval mode."""
    from safetensors.torch import load_file

    from noisecraft.eval.effnet import load_strict

    path = Path(path) if path is not None else bundled_weights_path()
    if not path.is_file():
        raise WeightsError(f"MNIST classifier weights not found: {path}")
    try:
        meta = read_metadata(path)
        state = load_file(str(path))
    except Exception as e:
        raise WeightsError(f"cannot read MNIST classifier weights {path}: {type(e).__name__}: {e}") from None
    if meta.get("format") != FORMAT:
        raise WeightsError(f"{path} is not a noisecraft MNIST classifier (metadata format {meta.get('format')!r})")
    return load_strict(MnistClassifier(), state, path)


def save_mnist_classifier(net: MnistClassifier, path, metadata: dict) -> None:
    """Write the weights as safetensors with JSON metadata (format, accuracy, settings)."""
    from safetensors.torch import save

    from noisecraft.files import atomic_write_bytes

    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    meta = {k: json.dumps(v) for k, v in {"format": FORMAT, **metadata}.items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(path), save(tensors, metadata=meta))


def accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy of `net` on (N, 1, 28, 28) images in [-1, 1]."""
    net.eval()
    correct = 0
    with torch.no_grad():
        for s in range(0, len(images), batch_size):
            _, logits = net(images[s:s + batch_size])
            correct += int((logits.argmax(1) == labels[s:s + batch_size]).sum())
    return correct / len(images)
