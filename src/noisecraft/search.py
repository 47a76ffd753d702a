"""Similarity search with diffusion features: embed images with a denoiser's activations, index them with faiss.

    emb = DiffusionEmbedder(run, sigma=0.5, layer="mid")        # or PixelEmbedder(), EffNetEmbedder()
    index = build_index(emb, dataset.images, ids=..., dataset={"name": "mnist", "split": "train"})
    index.save("INDEX_DIR");  index = load_index("INDEX_DIR")
    scores, ids = search(index, queries, k=10, run=run)         # (N, k) cosine similarities and item ids

Diffusion features (after Baranchuk et al. 2022, "Label-Efficient Semantic Segmentation with Diffusion
Models", and Xiang et al. 2023, "Denoising Diffusion Autoencoders are Unified Self-supervised Learners"):
an image x0 is noised to x = x0 + sigma * n (the VE view of `core.Denoiser`) with a *fixed* noise image n
(drawn once from a generator seeded `seed + d` for draw d = 0 .. draws-1, the same n for every image), the
denoiser D(x, sigma) is run, and a forward hook on one block of its network records the activation h. The
embedding is the activation average-pooled to `pool x pool` cells, flattened, averaged over the draws and
L2-normalised. Since n does not depend on the image or the batch, an image's embedding is deterministic
and independent of the batch it is computed in. The network runs only up to the hooked block.

Layers (`layer`): U-Net: "mid" (the middle block), "down<l>" / "up<l>" (the last encoder / decoder block of
resolution level l, 0 = full resolution). DiT: "mid" (block depth // 2), "block<i>". Class-conditional runs
are evaluated with the null label (cond None); latent runs embed the autoencoder's latents of the images.

Baselines: `PixelEmbedder` (pixels mapped to [0, 1], so the background is 0, flattened, L2-normalised) and
`EffNetEmbedder` (noisecraft.eval.features' EfficientNet-Lite0 features, L2-normalised).

The index is a faiss IndexFlatIP on the unit vectors: inner product = cosine similarity, exact search. Files:
INDEX_DIR/index.faiss (faiss.write_index) and INDEX_DIR/index.json (the embedder's spec: kind, run path,
run step and weight fingerprint, sigma, layer, pool, draws, seed; the dataset; the item ids and labels).
No pickle anywhere.

noise="inversion" forms x by exact probability-flow ODE inversion instead (`noisecraft.editing.img2img.invert`,
DDIM inversion, Song et al. 2021a, Sec. 4.3): x(sigma) is the point whose deterministic (Euler = DDIM) sampling
trajectory over `inversion_steps` log-spaced levels sigma > ... > INVERSION_SIGMA_MIN > 0 ends at x0. It is
deterministic without any noise draw (draws must be 1) and costs about inversion_steps +
INVERSION_FINAL_ITERATIONS network calls per image (the fixed noise: one partial call).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from noisecraft.errors import NoisecraftError

INDEX_FILE, META_FILE = "index.faiss", "index.json"
FORMAT = "noisecraft-search-index/1"
NOISE = ("fixed", "inversion")
INVERSION_SIGMA_MIN = 0.02  # the lowest nonzero level of the inversion schedule
INVERSION_FINAL_ITERATIONS = 5  # fixed-point iterations inverting the last step (D is nearly I at sigma_min)


class _Stop(Exception):
    """Raised by the hook to end the forward pass once the hooked block has run."""


def l2_normalise(v: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32); an all-zero row stays zero."""
    v = np.asarray(v, np.float64)
    n = np.linalg.norm(v, axis=1, keepdims=True)
    return (v / np.maximum(n, 1e-12)).astype(np.float32)


def weights_fingerprint(net: torch.nn.Module) -> str:
    """SHA-256 (first 16 hex digits) of the network's parameters and buffers: which model made an index."""
    h = hashlib.sha256()
    for name, t in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().reshape(-1).clone().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def check_images(images, shape: tuple[int, ...], what: str = "images") -> torch.Tensor:
    """(N, *shape) float images in [-1, 1] -> float32 tensor, else a one-line NoisecraftError."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor) or images.ndim != len(shape) + 1 or len(images) < 1:
        got = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise NoisecraftError(f"{what}: expected a batch (N, {', '.join(map(str, shape))}), got {got}")
    if tuple(images.shape[1:]) != tuple(shape):
        raise NoisecraftError(f"{what}: images are {tuple(images.shape[1:])} but the index holds "
                              f"{tuple(shape)} images; resize them first")
    x = images.detach().float().cpu()
    if not torch.isfinite(x).all() or x.min() < -1.5 or x.max() > 1.5:
        raise NoisecraftError(f"{what}: values must be finite and in [-1, 1]")
    return x.clamp(-1, 1)


def find_layer(net: torch.nn.Module, layer: str) -> torch.nn.Module:
    """The block of `net` named by `layer` (see the module docstring)."""
    from noisecraft.models.dit import DiT
    from noisecraft.models.unet import UNet, Upsample

    if isinstance(net, UNet):
        if layer == "mid":
            return net.mid
        m = re.fullmatch(r"(down|up)(\d+)", layer)
        if m and int(m.group(2)) < net.levels:
            level = int(m.group(2))
            per = net.config.num_res_blocks
            if m.group(1) == "down":  # per level: `per` res blocks, then a downsample except at the last level
                return net.down[level * (per + 1) + per - 1]
            block = net.up[(net.levels - 1 - level) * (per + 1) + per]  # the level's last decoder block
            return block if not isinstance(block[-1], Upsample) else block[-2] if len(block) > 1 else block
        allowed = ["mid"] + [f"down{i}" for i in range(net.levels)] + [f"up{i}" for i in range(net.levels)]
    elif isinstance(net, DiT):
        depth = len(net.blocks)
        m = re.fullmatch(r"block(\d+)", layer)
        if layer == "mid" or (m and int(m.group(1)) < depth):
            return net.blocks[depth // 2 if layer == "mid" else int(m.group(1))]
        allowed = ["mid", f"block0 .. block{depth - 1}"]
    else:
        raise NoisecraftError(f"diffusion features need a U-Net or DiT network, got {type(net).__name__}")
    raise NoisecraftError(f"unknown layer {layer!r} for this {type(net).__name__}; allowed: {', '.join(allowed)}")


@dataclass
class DiffusionEmbedder:
    """Images -> unit embeddings from the activations of `layer` at noise level `sigma` (module docstring)."""

    run: object                  # a noisecraft Run (noisecraft.load)
    sigma: float = 0.5           # noise level of x = x0 + sigma * n (VE view)
    layer: str = "mid"           # which block's output is pooled
    pool: int = 1                # average-pool the activation to pool x pool cells
    draws: int = 1               # average over this many fixed noise images
    seed: int = 0                # noise image d comes from a generator seeded seed + d
    batch_size: int = 64
    noise: str = "fixed"         # "fixed": x0 + sigma n; "inversion": probability-flow ODE inversion of x0
    inversion_steps: int = 8     # Euler (DDIM) steps of the inversion from INVERSION_SIGMA_MIN up to sigma
    kind: str = field(default="diffusion", init=False)

    def __post_init__(self):
        if self.noise not in NOISE:
            raise NoisecraftError(f"unknown noise {self.noise!r}; allowed: {', '.join(NOISE)}")
        if self.noise == "inversion" and self.draws != 1:
            raise NoisecraftError(f"noise='inversion' is deterministic: draws must be 1, got {self.draws!r}")
        if not (isinstance(self.sigma, (int, float)) and self.sigma >= 0 and np.isfinite(self.sigma)):
            raise NoisecraftError(f"sigma must be a finite number >= 0, got {self.sigma!r}")
        for name in ("pool", "draws", "batch_size", "inversion_steps"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise NoisecraftError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        self.module = find_layer(self.run.denoiser.net, self.layer)
        self.fingerprint = weights_fingerprint(self.run.denoiser.net)

    def spec(self) -> dict:
        run = self.run
        path = str(Path(run.path).resolve()) if run.path else None
        return {"kind": self.kind, "run": path, "run_step": int(run.step), "fingerprint": self.fingerprint,
                "sigma": float(self.sigma), "layer": self.layer, "pool": self.pool, "draws": self.draws,
                "seed": self.seed, "noise": self.noise, "inversion_steps": self.inversion_steps}

    def noised(self, x0: torch.Tensor, draw: int) -> torch.Tensor:
        """x = x0 + sigma * n with the fixed noise image n of this draw (the same for every image), or the ODE
        inversion of x0 up to sigma (noise="inversion")."""
        if self.noise == "inversion":
            return self.inverted(x0)
        gen = torch.Generator().manual_seed(self.seed + draw)
        n = torch.randn(x0.shape[1:], generator=gen, dtype=torch.float32)  # (C, H, W), one for all images
        return x0 + self.sigma * n.to(x0.device)

    def inverted(self, x0: torch.Tensor) -> torch.Tensor:
        """x(sigma) whose Euler (DDIM) sampling trajectory over log-spaced levels sigma ... INVERSION_SIGMA_MIN, 0
        returns x0 (noisecraft.editing.img2img.invert); x0 itself when sigma <= INVERSION_SIGMA_MIN."""
        from noisecraft.editing.img2img import invert

        if self.sigma <= INVERSION_SIGMA_MIN:
            return x0
        levels = np.geomspace(self.sigma, INVERSION_SIGMA_MIN, self.inversion_steps)
        sigmas = torch.tensor([*levels, 0.0], dtype=torch.float64, device=x0.device)  # decreasing, ends at 0
        return invert(self.run.denoiser, x0, sigmas, sampler="euler", final_iterations=INVERSION_FINAL_ITERATIONS)

    @torch.no_grad()
    def activations(self, x: torch.Tensor) -> torch.Tensor:
        """The hooked block's output for a noisy batch x, pooled and flattened: (B, D)."""
        got = []

        def hook(module, inputs, output):
            got.append(output)
            raise _Stop

        handle = self.module.register_forward_hook(hook)
        try:
            self.run.denoiser(x, torch.full((len(x),), float(self.sigma), dtype=torch.float64, device=x.device))
        except _Stop:
            pass
        finally:
            handle.remove()
        h = got[0].float()
        if h.ndim == 3:  # DiT tokens (B, N, h) -> (B, h, g, g)
            g = int(round(h.shape[1] ** 0.5))
            h = h.transpose(1, 2).reshape(h.shape[0], h.shape[2], g, g)
        return torch.nn.functional.adaptive_avg_pool2d(h, self.pool).flatten(1)  # (B, C * pool^2)

    def __call__(self, images) -> np.ndarray:
        latent = self.run.autoencoder is not None  # a latent run's data_shape is its latents'
        x0 = self._latents(check_images(images, tuple(images.shape[1:]) if latent else self.run.data_shape))
        device = self.run.device
        out = []
        for s in range(0, len(x0), self.batch_size):
            batch = x0[s:s + self.batch_size].to(device)
            feats = sum(self.activations(self.noised(batch, d)) for d in range(self.draws)) / self.draws
            out.append(feats.cpu().double().numpy())
        return l2_normalise(np.concatenate(out))

    def _latents(self, x: torch.Tensor) -> torch.Tensor:
        if self.run.autoencoder is None:
            return x
        from noisecraft.autoencoder.latents import encode_images

        return encode_images(self.run.autoencoder, x, progress=False).float()


@dataclass
class PixelEmbedder:
    """Baseline: pixels mapped to [0, 1], flattened, L2-normalised."""

    kind: str = field(default="pixels", init=False)

    def spec(self) -> dict:
        return {"kind": self.kind}

    def __call__(self, images) -> np.ndarray:
        x = check_images(images, tuple(images.shape[1:]))
        return l2_normalise(((x + 1) / 2).flatten(1).double().numpy())


@dataclass
class EffNetEmbedder:
    """Baseline: EfficientNet-Lite0 ImageNet features (noisecraft.eval.features "effnet"), L2-normalised."""

    device: str = "cpu"
    batch_size: int = 64
    kind: str = field(default="effnet", init=False)

    def spec(self) -> dict:
        return {"kind": self.kind}

    def __call__(self, images) -> np.ndarray:
        from noisecraft.eval.features import get_extractor

        x = check_images(images, tuple(images.shape[1:]))
        return l2_normalise(get_extractor("effnet", device=self.device, batch_size=self.batch_size)(x))


def make_embedder(spec: dict, *, run=None, device: str = "cpu", batch_size: int = 64):
    """The embedder an index's spec describes; for diffusion features the run is loaded from spec["run"] unless
    given, and must have the weights the index was built with."""
    kind = spec.get("kind")
    if kind == "pixels":
        return PixelEmbedder()
    if kind == "effnet":
        return EffNetEmbedder(device=device, batch_size=batch_size)
    if kind != "diffusion":
        raise NoisecraftError(f"unknown embedding kind {kind!r}; allowed: diffusion, effnet, pixels")
    if run is None:
        if not spec.get("run"):
            raise NoisecraftError("the index does not name its run; pass the run")
        from noisecraft.pipelines import load

        run = load(spec["run"], device=device)
    emb = DiffusionEmbedder(run, sigma=spec["sigma"], layer=spec["layer"], pool=spec["pool"], draws=spec["draws"],
                            seed=spec["seed"], batch_size=batch_size, noise=spec.get("noise", "fixed"),
                            inversion_steps=spec.get("inversion_steps", 8))
    if emb.fingerprint != spec.get("fingerprint"):
        raise NoisecraftError(f"this index was built with another model (run {spec.get('run')}, step "
                              f"{spec.get('run_step')}, weights {spec.get('fingerprint')}); the given run has "
                              f"weights {emb.fingerprint}: rebuild the index with `noisecraft index`")
    return emb


@dataclass
class SearchIndex:
    """A faiss IndexFlatIP over unit embeddings, with what made them and which dataset items they are."""

    faiss_index: object
    meta: dict                   # {"format", "embedder": spec, "dataset": {...}, "image_shape", "ids", "labels"}

    @property
    def ids(self) -> np.ndarray:
        return np.asarray(self.meta["ids"], np.int64)

    def __len__(self) -> int:
        return int(self.faiss_index.ntotal)

    def save(self, directory) -> Path:
        import faiss

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.faiss_index, str(d / INDEX_FILE))
        (d / META_FILE).write_text(json.dumps(self.meta, indent=1, sort_keys=True) + "\n")
        return d


def load_index(directory) -> SearchIndex:
    """An index written by SearchIndex.save (INDEX_DIR/index.faiss + index.json)."""
    import faiss

    d = Path(directory)
    if not (d / INDEX_FILE).is_file() or not (d / META_FILE).is_file():
        raise NoisecraftError(f"{d} is not a search index (expected {INDEX_FILE} and {META_FILE}; build one with "
                              f"`noisecraft index`)")
    try:
        meta = json.loads((d / META_FILE).read_text())
    except ValueError as e:
        raise NoisecraftError(f"{d / META_FILE}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise NoisecraftError(f"{d / META_FILE}: not a {FORMAT} sidecar")
    index = faiss.read_index(str(d / INDEX_FILE))
    if index.ntotal != len(meta.get("ids", ())):
        raise NoisecraftError(f"{d}: the faiss index holds {index.ntotal} vectors but the sidecar lists "
                              f"{len(meta.get('ids', ()))} ids")
    return SearchIndex(index, meta)


def build_index(embedder, images, *, ids=None, labels=None, dataset: dict | None = None) -> SearchIndex:
    """Embed `images` (N, C, H, W) in [-1, 1] and index them. ids: the items' ids (default 0 .. N-1)."""
    import faiss

    vectors = embedder(images)  # (N, D) unit rows
    ids = list(range(len(vectors))) if ids is None else [int(i) for i in ids]
    if len(ids) != len(vectors):
        raise NoisecraftError(f"got {len(ids)} ids for {len(vectors)} images")
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors))
    meta = {"format": FORMAT, "embedder": embedder.spec(), "dataset": dataset or {},
            "image_shape": [int(s) for s in images.shape[1:]], "dim": int(vectors.shape[1]), "ids": ids,
            "labels": None if labels is None else [int(v) for v in labels]}
    return SearchIndex(index, meta)


def search_vectors(index: SearchIndex, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores (N, k) float32 cosine similarities, ids (N, k) int64 item ids) of unit query vectors, best first."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= len(index):
        raise NoisecraftError(f"k must be an integer in [1, {len(index)}] (the index size), got {k!r}")
    vectors = np.ascontiguousarray(vectors, np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != index.faiss_index.d:
        raise NoisecraftError(f"query vectors must be (N, {index.faiss_index.d}), got {vectors.shape}")
    scores, pos = index.faiss_index.search(vectors, int(k))
    return scores, index.ids[pos]


def search(index: SearchIndex, images, k: int = 10, *, run=None, embedder=None, device: str = "cpu"):
    """The k most similar indexed items of each query image: (scores (N, k), ids (N, k)), best first.
    The queries are embedded as the index was (its spec); `run` avoids reloading the index's run."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= len(index):
        raise NoisecraftError(f"k must be an integer in [1, {len(index)}] (the index size), got {k!r}")
    check_images(images, tuple(index.meta["image_shape"]), "query images")
    embedder = embedder or make_embedder(index.meta["embedder"], run=run, device=device)
    mine, theirs = ({k: v for k, v in s.items() if k not in ("run", "run_step")}
                    for s in (embedder.spec(), index.meta["embedder"]))
    if mine != theirs:
        raise NoisecraftError(f"the query embedder {mine} differs from the index's {theirs}")
    return search_vectors(index, embedder(images), k)


def nearest_with_index(index_dir, images, k: int = 2, *, run=None, device: str = "cpu"):
    """The k nearest indexed training items of each image through an index built with `noisecraft index` (the
    nearest-neighbour search of `eval.memorization` in the index's feature space): (ids (N, k) int64 dataset
    item ids, distances (N, k) float64), nearest first.

    Distances are Euclidean between the unit embeddings, sqrt(2 - 2 cos), so they can stand in for the feature
    distances of `memorization_report` / `distance_ratio`. `run` avoids reloading the index's run."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise NoisecraftError(f"k must be an integer >= 1, got {k!r}")
    scores, ids = search(load_index(index_dir), images, k, run=run, device=device)
    return ids.astype(np.int64), np.sqrt(np.maximum(0.0, 2.0 - 2.0 * scores.astype(np.float64)))
