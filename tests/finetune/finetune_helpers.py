"""Helpers of the fine-tuning tests: a concept folder, random LoRA B, a network input for a run."""

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "interop"))  # diffusers_tiny (tiny diffusers parts)


def write_concept(folder: Path, n: int = 6, size: int = 32, seed: int = 0) -> Path:
    """n grey PNGs of a 'framed blob' concept (a square frame around a random blob)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = np.zeros((size, size), np.uint8)
        img[2:-2, 2:4] = img[2:-2, -4:-2] = img[2:4, 2:-2] = img[-4:-2, 2:-2] = 255
        b = max(2, size // 5)
        y, x = rng.integers(size // 4, size - size // 4 - b, 2)
        img[y:y + b, x:x + b] = 200
        Image.fromarray(img, "L").save(folder / f"{i:02d}.png")
    return folder


def random_lora_b(net, seed: int = 0, std: float = 0.3) -> None:
    """Give every LoRA B a random value (a fresh LoRA has B = 0 and changes nothing)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * std)


def net_input(run, batch: int = 3, seed: int = 5):
    """(x, c_noise, cond) for a run's network: random x, three noise levels, the run's cond for a prompt/class."""
    from noisecraft.pipelines import Request

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *run.data_shape, generator=g)
    sigma = torch.tensor([0.05, 0.8, 20.0])[:batch]
    text = run.conditions.get("text") is not None if run.conditions else False
    klass = run.conditions.get("class") is not None if run.conditions else False
    request = Request(prompts=("bold serif capital letter G",) if text else None,
                      class_ids=(3,) if klass else None, num=batch)
    cond = run.conditions.request(request, batch, None)[0] if (text or klass) else None
    return x, sigma, cond
