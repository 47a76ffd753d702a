"""Sample an exported loop graph (`noisecraft export --format onnx --what loop`) with numpy and onnxruntime only.

This file imports neither torch nor the rest of noisecraft, so it runs on a machine with just

    pip install numpy onnxruntime pillow
    python onnx_run.py loop.onnx --num 16 --seed 0 --class 3 --guidance 2 --out grid.png

(copy the file anywhere; `noisecraft onnx-sample` is the same code). As a library:

    from onnx_run import load_loop, sample
    session, meta = load_loop("loop.onnx")
    samples = sample(session, meta, num=16, seed=0, class_ids=[3], guidance=2.0)   # (16, *shape) float32

Noise: image i is drawn from numpy's PCG64 seeded seed + i, so it does not depend on `num`; the images differ
from those of `noisecraft sample` (torch's generator) for the same seed, but their distribution is the same. To
reproduce a torch run exactly, pass its unit-normal noise as `noise=`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np

METADATA_KEY = "noisecraft"  # as in onnx_export (not imported: that module needs torch)


class OnnxRunError(ValueError):
    """A model file or argument this runner cannot use (one line, no traceback, from the command line)."""


def load_loop(path):
    """(onnxruntime session, the graph's noisecraft metadata) of an exported loop graph."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own types for missing and invalid files
        raise OnnxRunError(f"{path}: not a readable ONNX model ({str(e).splitlines()[0]})") from None
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    meta = json.loads(raw) if raw else None
    if not meta or meta.get("kind") != "loop":
        raise OnnxRunError(f"{path}: not a noisecraft loop graph (export one with noisecraft export --what loop)")
    return session, meta


def unit_noise(shape, num: int, seed: int) -> np.ndarray:
    """(num, *shape) float32 N(0, I) noise; image i from numpy's default_rng(seed + i)."""
    return np.stack([np.random.default_rng(seed + i).standard_normal(shape, dtype=np.float32) for i in range(num)])


def sample(session, meta: dict, *, num: int = 1, seed: int = 0, class_ids=None, guidance: float | None = None,
           noise: np.ndarray | None = None, **cond) -> np.ndarray:
    """num samples of a loop graph. class_ids: one id for all or one per image (None: the null label, i.e.
    unconditional); guidance: the CFG scale w (None: 1, the conditional model); cond: text_tokens etc."""
    if num < 1:
        raise OnnxRunError(f"num must be >= 1, got {num}")
    inputs = meta["inputs"]
    x = unit_noise(meta["data_shape"], num, seed) if noise is None else np.asarray(noise, np.float32)
    feed = {"noise": x}
    if "class_labels" in inputs:
        k = meta["num_classes"]
        ids = [k] if class_ids is None else list(class_ids)
        if class_ids is not None and any(not 0 <= int(c) < k for c in ids):
            raise OnnxRunError(f"class id out of range; this model has {k} classes: 0..{k - 1}")
        if len(ids) not in (1, len(x)):
            raise OnnxRunError(f"give one class id or one per image ({len(x)}), got {len(ids)}")
        feed["class_labels"] = np.broadcast_to(np.asarray(ids, np.int64), (len(x),)).copy()
    elif class_ids is not None:
        raise OnnxRunError("class ids given, but this model is not class-conditional")
    for key in ("text_tokens", "text_mask", "text_pooled"):
        if key in inputs:
            if key not in cond:
                raise OnnxRunError(f"this model needs {key} (the text encoder's output; see noisecraft.text)")
            feed[key] = np.asarray(cond[key])
    if "guidance" in inputs:
        feed["guidance"] = np.asarray(1.0 if guidance is None else guidance, np.float32)
    elif guidance is not None:
        raise OnnxRunError("guidance given, but this model is unconditional")
    return session.run(None, feed)[0]


def grid(samples: np.ndarray, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """(N, C, H, W) samples in [-1, 1] -> one (H', W', C) uint8 grid (noisecraft.viz.grid_image's layout)."""
    arr = np.clip(np.rint((samples + 1) * 127.5), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    n, h, w, c = arr.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    out = np.zeros((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, nrow)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = arr[i]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Sample a noisecraft ONNX loop graph with onnxruntime (no torch).")
    p.add_argument("model", help="the .onnx file from noisecraft export --format onnx --what loop")
    p.add_argument("--num", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--class", dest="class_id", type=int, default=None)
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--out", default="grid.png", help="PNG grid (.npy: the raw samples)")
    args = p.parse_args(argv)
    try:
        session, meta = load_loop(args.model)
        x = sample(session, meta, num=args.num, seed=args.seed, guidance=args.guidance,
                   class_ids=None if args.class_id is None else [args.class_id])
    except OnnxRunError as e:
        print(f"onnx_run: error: {e}", file=sys.stderr)
        return 2
    if meta.get("latent") and not args.out.endswith(".npy"):
        print("onnx_run: error: a latent model's samples are latents (no decoder in the graph); use --out FILE.npy",
              file=sys.stderr)
        return 2
    if args.out.endswith(".npy"):
        np.save(args.out, x)
    else:
        from PIL import Image

        g = grid(x)
        Image.fromarray(g[..., 0] if g.shape[-1] == 1 else g).save(args.out)
    print(f"{len(x)} samples -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
