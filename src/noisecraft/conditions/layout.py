"""Layout-grounded text-to-image: a learned planner turns a prompt into object boxes, and the network reads
the boxes as a spatial map of the objects' phrase embeddings.

Two stages, as in LayoutGPT (Feng et al. 2023, NeurIPS) and LLM-grounded Diffusion (Lian et al. 2023, TMLR,
Sec. 3): text -> layout -> image. The layout is drawn into the network's input as a structure map, the way
ControlNet-style conditions and GLIGEN's grounded boxes (Li et al. 2023, CVPR, Sec. 3.2: grounding entity =
phrase embedding + box) give a model *where* each phrase belongs. Why: a text encoder's tokens carry which
words a prompt has but hardly which object stands where - "A left of B" and "B left of A" are the same bag
of words - and a small diffusion model learns that binding slowly (measured in benchmarks/scenes_text.md).
The planner learns it from supervised boxes, and a map is read locally by convolutions.

Notation (B prompts, J chunk slots, K object slots, P the frozen encoder's pooled width):

    c_1 .. c_J   = limit_phrases(split_phrases(prompt), J)       chunks: object phrases and separators
    o_1 .. o_K   = the chunks that are not separators, in order  ("a small red circle", "a large blue square")
    v_j          = pooled(E(c_j))        (P,)   each chunk encoded on its own
    e_k          = v of object chunk o_k (P,)   the grounding embedding of object k
    planner      b = sigmoid(MLP([v_1 .. v_J, s_1 .. s_J]))  (K, 4): (cx, cy, w, h) in [0, 1] for o_1 .. o_K,
                 s_j = 1 when c_j is a separator; trained by mean squared error on a dataset's boxes, so it
                 predicts the conditional mean box of each object
    map          M(p) = sum_k a_k(p) e_k    (P, H, W), a_k(p) = area(cell p n box_k) / area(cell p) in [0, 1]

A dataset grounds its captions with `attributes["boxes"]`: (N, K, 4) float, (x0, y0, x1, y1) in [0, 1]
(x right, y down) of the k-th object phrase of the caption in order of mention, NaN rows for absent objects.
In training the network sees the map of the ground-truth boxes; when sampling, the planner's boxes - its mean
boxes, or (with a seed) the mean plus the offsets of a training item of the same prompt structure
(`ResidualBank`, a residual bootstrap that keeps the objects' joint placement), so that samples of one prompt
vary as the data does. The unconditional (null) layout is the zero map; the network's layout convolution has
no bias, so a zero map adds exactly nothing. A prompt with more objects than the data's K has the rest merged
into its last chunk (`limit_phrases`), and a structure no training caption had gets the mean boxes.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from noisecraft.conditions.base import Condition, register
from noisecraft.errors import CheckpointError, ConfigError, DataError, NoisecraftError

PLANNER_FILE = "layout_planner.safetensors"
PLANNER_FORMAT = "noisecraft-layout-planner"
PLANNER_VERSION = "1"
BOXES = "boxes"  # dataset attribute: (N, K, 4) object boxes (x0, y0, x1, y1) in [0, 1], NaN = absent


# ------------------------------------------------------------------------------------------- chunks
DEFAULT_SEPARATORS = (
    "left of", "right of", "to the left of", "to the right of", "above", "below", "under", "over", "on top of",
    "next to", "beside", "behind", "in front of", "near", "on", "in", "with", "and",
)


def normalise(text: str) -> str:
    """Lower case, single spaces: how separators are compared ("Left  Of" == "left of")."""
    return " ".join(text.lower().split())


def _pattern(separators: tuple[str, ...]) -> re.Pattern:
    words = sorted({normalise(s) for s in separators}, key=len, reverse=True)  # longest first
    alternatives = [r"\s+".join(re.escape(w) for w in s.split()) for s in words]
    return re.compile(r"(?<!\S)(" + "|".join(alternatives) + r")(?!\S)|[,;]", re.IGNORECASE)


def split_phrases(prompt: str, separators: tuple[str, ...] = DEFAULT_SEPARATORS) -> list[str]:
    """The phrases of `prompt` in order: the text between separators, and each separator found (a rule-based
    chunker, not a parser: exact for the scene grammar "<object> <relation> <object>", a usual noun-phrase
    chunking for simple English prompts).

    "a small red circle left of a large blue square" -> ["a small red circle", "left of", "a large blue square"].
    Separators match whole words, case-insensitively, longest first; whitespace inside a phrase is normalised
    to single spaces; commas and semicolons cut but are not phrases. The empty prompt has no phrases.
    """
    if not separators:
        return [" ".join(prompt.split())] if prompt.strip() else []
    out, start = [], 0
    for m in _pattern(tuple(separators)).finditer(prompt):
        out.append(prompt[start:m.start()])
        if m.group(1) is not None:
            out.append(m.group(1))
        start = m.end()
    out.append(prompt[start:])
    return [" ".join(p.split()) for p in out if p.strip()]


def limit_phrases(phrases: list[str], max_phrases: int) -> list[str]:
    """At most max_phrases phrases: the phrases after slot max_phrases - 1 are joined into the last slot."""
    if len(phrases) <= max_phrases:
        return phrases
    return phrases[:max_phrases - 1] + [" ".join(phrases[max_phrases - 1:])]


def chunk_slots(max_objects: int) -> int:
    """J = 2K - 1 chunk slots: K objects and the K - 1 relations between them."""
    return 2 * max_objects - 1


def chunks(prompt: str, max_chunks: int, separators=DEFAULT_SEPARATORS) -> tuple[list[str], list[bool]]:
    """(the prompt's chunks, limited to max_chunks; whether each one is a separator)."""
    seps = {normalise(s) for s in separators}
    out = limit_phrases(split_phrases(prompt, tuple(separators)), max_chunks)
    return out, [normalise(c) in seps for c in out]


class ChunkEncoder:
    """Pooled vectors of prompts' chunks through a frozen `TextEncoder`, each distinct chunk encoded once.

    encode(prompts) -> v (B, J, P) chunk vectors (0 in empty slots), sep (B, J) separator flags,
    objects (B, K, P) object embeddings e_k, valid (B, K) bool (object slot k is filled)."""

    def __init__(self, encoder, max_objects: int, separators=None) -> None:
        if getattr(encoder, "identity", None) is None:
            raise NoisecraftError("layout conditioning needs a frozen text encoder (minilm or hf)")
        if max_objects < 1:
            raise NoisecraftError(f"layout: max_objects must be >= 1, got {max_objects}")
        self.encoder, self.K = encoder, int(max_objects)
        self.J = chunk_slots(self.K)
        self.separators = tuple(DEFAULT_SEPARATORS if separators is None else separators)
        self.dim = encoder.pooled_dim
        self._memo: dict[str, Tensor] = {}

    def _vectors(self, texts: list[str]) -> None:
        new = sorted({t for t in texts if t not in self._memo})
        if new:
            with torch.no_grad():
                pooled = self.encoder.encode(new)[2].float().cpu()  # (n, P)
            self._memo.update(zip(new, pooled))

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        parsed = [chunks(p, self.J, self.separators) for p in prompts]
        self._vectors([c for cs, _ in parsed for c in cs])
        B = len(prompts)
        v, sep = torch.zeros(B, self.J, self.dim), torch.zeros(B, self.J)
        objects, valid = torch.zeros(B, self.K, self.dim), torch.zeros(B, self.K, dtype=torch.bool)
        for b, (cs, seps) in enumerate(parsed):
            k = 0
            for j, (c, s) in enumerate(zip(cs, seps)):
                v[b, j], sep[b, j] = self._memo[c], float(s)
                if not s and k < self.K:
                    objects[b, k], valid[b, k] = self._memo[c], True
                    k += 1
        return v, sep, objects, valid


# ------------------------------------------------------------------------------------------ the map
def box_coverage(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Exact area fractions a_k(p) of every cell covered by each box: boxes (B, K, 4) as (x0, y0, x1, y1) in
    [0, 1] -> (B, K, H, W). A cell's fraction is the product of its overlaps along x and y (boxes are
    axis-aligned), so a box's fractions sum to its area times H * W when it lies inside the image."""
    H, W = size

    def overlap(lo: Tensor, hi: Tensor, n: int) -> Tensor:  # (B, K) -> (B, K, n), overlap / cell width
        edges = torch.arange(n + 1, dtype=lo.dtype, device=lo.device) / n
        a, b = edges[:-1], edges[1:]
        return ((torch.minimum(hi[..., None], b) - torch.maximum(lo[..., None], a)).clamp(min=0) * n)

    x0, y0, x1, y1 = boxes.unbind(-1)
    return overlap(y0, y1, H)[..., :, None] * overlap(x0, x1, W)[..., None, :]  # (B, K, H, W)


def layout_map(boxes: Tensor, embeddings: Tensor, valid: Tensor, size: tuple[int, int]) -> Tensor:
    """M = sum_k a_k e_k: boxes (B, K, 4), embeddings (B, K, P), valid (B, K) bool -> (B, P, H, W).
    Invalid slots (absent objects, dropped conditions) add exactly nothing, whatever their box holds."""
    boxes = torch.where(valid[..., None], boxes, 0.0)  # NaN rows of absent objects -> an empty box
    cover = box_coverage(boxes, size) * valid[..., None, None].to(boxes.dtype)  # (B, K, H, W)
    return torch.einsum("bkhw,bkp->bphw", cover, embeddings.to(boxes.dtype))


def centre_size_to_corners(b: Tensor) -> Tensor:
    """(cx, cy, w, h) -> (x0, y0, x1, y1), last axis."""
    cx, cy, w, h = b.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def corners_to_centre_size(b: Tensor) -> Tensor:
    x0, y0, x1, y1 = b.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], -1)


# -------------------------------------------------------------------------------------- the planner
class LayoutPlanner(nn.Module):
    """b = sigmoid(MLP([v_1 .. v_J, s_1 .. s_J])) reshaped to (K, 4) boxes (cx, cy, w, h) (module docstring)."""

    def __init__(self, dim: int, max_objects: int, hidden: int = 256) -> None:
        super().__init__()
        self.dim, self.K, self.hidden = dim, max_objects, hidden
        J = chunk_slots(max_objects)
        self.mlp = nn.Sequential(nn.Linear(J * (dim + 1), hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, 4 * max_objects))

    def forward(self, v: Tensor, sep: Tensor) -> Tensor:
        """v (B, J, P), sep (B, J) -> boxes (B, K, 4) as corners (x0, y0, x1, y1) of boxes whose centre and size
        are in [0, 1] (a corner may fall outside the image; the map only paints the part inside)."""
        u = torch.cat([v.flatten(1), sep], 1)  # (B, J (P + 1))
        b = torch.sigmoid(self.mlp(u)).view(-1, self.K, 4)  # (B, K, 4) (cx, cy, w, h)
        return centre_size_to_corners(b)


def train_planner(v: Tensor, sep: Tensor, boxes: Tensor, *, steps: int = 1500, batch_size: int = 512,
                  lr: float = 2e-3, seed: int = 0, hidden: int = 256,
                  progress: bool = False) -> tuple[LayoutPlanner, dict]:
    """Fit a planner by mean squared error of (cx, cy, w, h) on the objects present: v (N, J, P), sep (N, J)
    the chunk encodings of N captions, boxes (N, K, 4) their ground-truth corners (NaN rows absent).
    Returns (planner in eval mode, {"loss": final mean loss over the set, "steps": ...})."""
    from tqdm.auto import tqdm

    N, K = boxes.shape[:2]
    if N == 0:
        raise DataError("layout planner: no captions with boxes to learn from")
    present = ~torch.isnan(boxes).any(-1)  # (N, K)
    target = torch.where(present[..., None], corners_to_centre_size(boxes), 0.0)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        planner = LayoutPlanner(v.shape[-1], K, hidden)
    opt = torch.optim.AdamW(planner.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)

    def loss_of(idx):
        pred = corners_to_centre_size(planner(v[idx], sep[idx]))
        m = present[idx][..., None].to(pred.dtype)
        return ((pred - target[idx]) ** 2 * m).sum() / (4 * m.sum()).clamp(min=1)

    for _ in tqdm(range(steps), desc="layout planner", disable=not progress):
        idx = torch.randint(N, (min(batch_size, N),), generator=gen)
        loss = loss_of(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    planner.eval().requires_grad_(False)
    with torch.no_grad():
        final = float(loss_of(torch.arange(N)))
    return planner, {"loss": final, "steps": steps, "objects": K}


def layout_generators(seed: int, n: int) -> list[torch.Generator]:
    """One generator per image for drawing layouts: image i's from (seed + i, a layout stream id), so it is the
    same whatever the batch and independent of the noise generator that `generate` seeds with seed + i."""
    import numpy as np

    return [torch.Generator().manual_seed(int(np.random.SeedSequence([seed + i, 0x1A7]).generate_state(1)[0]))
            for i in range(n)]


def structure_key(prompt: str, max_chunks: int, separators=DEFAULT_SEPARATORS) -> str:
    """What a prompt's layout statistics depend on besides its objects: its separators in order and its
    object count, e.g. "left of#2" (the residual bank draws offsets among prompts of the same structure)."""
    cs, seps = chunks(prompt, max_chunks, separators)
    return "|".join(normalise(c) for c, s in zip(cs, seps) if s) + f"#{sum(not s for s in seps)}"


@dataclass
class ResidualBank:
    """Offsets of ground-truth box centres from the planner's mean boxes, grouped by prompt structure.

    Sampling a layout adds the offsets of one training item of the same structure (a residual bootstrap,
    Efron 1979) to the planner's boxes: the planner gives the conditional mean, the bank the spread around it
    with the objects' joint correlation kept (for "A left of B" both objects move together, so the relation
    still holds), where the mean alone would put every sample of a prompt in the same place."""

    keys: list[str]          # structure keys (structure_key)
    key_index: Tensor        # (M,) int64 into keys
    offsets: Tensor          # (M, K, 2) centre offsets (dx, dy) in image units, 0 where absent
    present: Tensor          # (M, K) bool

    def draw(self, key: str, generator: torch.Generator) -> tuple[Tensor, Tensor] | None:
        """(offsets (K, 2), present (K,)) of one item of structure `key`, or None when the bank has none."""
        if key not in self.keys:
            return None
        rows = (self.key_index == self.keys.index(key)).nonzero().flatten()
        i = rows[int(torch.randint(len(rows), (1,), generator=generator))]
        return self.offsets[i], self.present[i]


def residual_bank(planner: LayoutPlanner, v: Tensor, sep: Tensor, boxes: Tensor, keys: list[str],
                  limit: int = 20000, seed: int = 0) -> ResidualBank:
    """The bank of (at most `limit` items of) a training set: v (N, J, P), sep (N, J), boxes (N, K, 4) corners
    (NaN rows absent), keys (N,) structure keys."""
    keep = torch.randperm(len(keys), generator=torch.Generator().manual_seed(seed))[:limit].sort().values
    with torch.no_grad():
        mean = corners_to_centre_size(planner(v[keep], sep[keep]))[..., :2]  # (M, K, 2)
    truth = corners_to_centre_size(boxes[keep])[..., :2]
    present = ~torch.isnan(truth).any(-1)
    names = sorted({keys[i] for i in keep.tolist()})
    index = torch.tensor([names.index(keys[i]) for i in keep.tolist()], dtype=torch.long)
    return ResidualBank(names, index, torch.where(present[..., None], truth - mean, 0.0), present)


def save_planner(planner: LayoutPlanner, run_dir: Path, info: dict, bank: ResidualBank | None = None) -> Path:
    """Write RUN/layout_planner.safetensors atomically (weights, the residual bank, JSON metadata; digest)."""
    from noisecraft.files import write_verified

    tensors = dict(planner.state_dict())
    if bank is not None:
        tensors.update({"bank.key_index": bank.key_index, "bank.offsets": bank.offsets, "bank.present": bank.present})
    meta = {"format": PLANNER_FORMAT, "version": PLANNER_VERSION,
            "config": json.dumps({"dim": planner.dim, "max_objects": planner.K, "hidden": planner.hidden}),
            "info": json.dumps(info), "bank_keys": json.dumps(None if bank is None else bank.keys)}
    return write_verified(Path(run_dir) / PLANNER_FILE, tensors, meta)


def load_planner(run_dir: Path) -> tuple[LayoutPlanner, dict, ResidualBank | None]:
    """The planner (and its residual bank) saved in a run directory (CheckpointError: missing, foreign, corrupt)."""
    from noisecraft.files import read_verified

    path = Path(run_dir) / PLANNER_FILE
    if not path.is_file():
        raise CheckpointError(f"{path.parent} was trained with conditioning.layout but has no {PLANNER_FILE}")
    meta, tensors = read_verified(path, PLANNER_FORMAT, PLANNER_VERSION, ("format", "version", "config", "info",
                                                                        "bank_keys", "sha256"), "layout planner")
    try:
        cfg, info, keys = (json.loads(meta.get(k, "null")) for k in ("config", "info", "bank_keys"))
        planner = LayoutPlanner(int(cfg["dim"]), int(cfg["max_objects"]), int(cfg["hidden"]))
        planner.load_state_dict({k: v for k, v in tensors.items() if not k.startswith("bank.")}, strict=True)
        bank = None if keys is None else ResidualBank(list(keys), tensors["bank.key_index"], tensors["bank.offsets"],
                                                      tensors["bank.present"])
    except (KeyError, ValueError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"{path} is corrupt: {type(e).__name__}: {e}") from None
    return planner.eval().requires_grad_(False), info, bank


# ------------------------------------------------------------------------------------ dataset side
def dataset_boxes(dataset) -> Tensor:
    """The dataset's (N, K, 4) grounding boxes, checked (DataError names what is missing or wrong)."""
    boxes = (dataset.attributes or {}).get(BOXES)
    if boxes is None:
        raise DataError(f"conditioning.layout needs object boxes (attributes['{BOXES}']), but dataset "
                        f"{dataset.name!r} has none; datasets with boxes: scenes")
    if boxes.ndim != 3 or boxes.shape[-1] != 4 or not boxes.is_floating_point():
        raise DataError(f"attributes['{BOXES}'] must be float (N, K, 4), got {boxes.dtype} {tuple(boxes.shape)}")
    return boxes.float()


class Layout:
    """What a layout-conditioned run needs around its network for sampling: the chunk encoder, the planner and
    its residual bank. `plan(prompts)` -> boxes; `map(prompts, size)` -> the (B, P, H, W) map to condition on.
    Without generators every prompt gets the planner's mean boxes; with one generator per prompt, the mean
    boxes plus the offsets of a training item of the same structure (`ResidualBank`), moved inside the image."""

    def __init__(self, encoder, planner: LayoutPlanner, separators=None, bank: ResidualBank | None = None) -> None:
        self.chunks = ChunkEncoder(encoder, planner.K, separators)
        self.planner, self.bank = planner, bank

    @torch.no_grad()
    def plan(self, prompts: list[str], generators: list[torch.Generator] | None = None
             ) -> tuple[Tensor, Tensor, Tensor]:
        """(boxes (B, K, 4) corners, object embeddings (B, K, P), valid (B, K))."""
        v, sep, objects, valid = self.chunks.encode(prompts)
        p = next(self.planner.parameters())
        boxes = self.planner(v.to(p), sep.to(p)).cpu().float()
        if generators is not None and self.bank is not None:
            if len(generators) != len(prompts):
                raise NoisecraftError(f"layout: give one generator per prompt ({len(prompts)}), got {len(generators)}")
            boxes = torch.stack([self._jitter(b, pr, g) for b, pr, g in zip(boxes, prompts, generators)])
        return boxes, objects, valid

    def _jitter(self, boxes: Tensor, prompt: str, generator: torch.Generator) -> Tensor:
        drawn = self.bank.draw(structure_key(prompt, self.chunks.J, self.chunks.separators), generator)
        if drawn is None:  # a structure no training caption had: the mean boxes
            return boxes
        offsets, present = drawn
        c = corners_to_centre_size(boxes)  # (K, 4)
        half = c[:, 2:] / 2
        centre = torch.where(present[:, None], c[:, :2] + offsets, c[:, :2])
        centre = torch.minimum(torch.maximum(centre, half), 1 - half)  # keep each box inside the image
        return centre_size_to_corners(torch.cat([centre, c[:, 2:]], 1))

    def map(self, prompts: list[str], size: tuple[int, int], generators: list[torch.Generator] | None = None
            ) -> Tensor:
        boxes, objects, valid = self.plan(prompts, generators)
        return layout_map(boxes, objects, valid, size)


def relation_holds(boxes: Tensor, relation: str) -> bool:
    """Whether box 0 stands in `relation` ("left of", "right of", "above", "below") to box 1 by their centres."""
    c = corners_to_centre_size(boxes)
    dx, dy = float(c[0, 0] - c[1, 0]), float(c[0, 1] - c[1, 1])
    return {"left of": dx < 0, "right of": dx > 0, "above": dy < 0, "below": dy > 0}[relation] and \
        not math.isnan(dx + dy)


# ---------------------------------------------------------------------------------- the condition
@register("layout")
class LayoutCondition(Condition):
    """Layout grounding as a condition (module docstring): the map of object phrase embeddings painted into
    their boxes, fed to the network as concatenated channels (`cond["concat"]`, P channels). Training paints
    the dataset's boxes; `prepare` fits the planner (saved as RUN/layout_planner.safetensors); sampling paints
    the planner's boxes, drawn per image from seed + i. The null layout is the zero map."""

    def __init__(self, config) -> None:
        super().__init__(config)
        c = config.conditioning
        if config.text.encoder not in ("minilm", "hf"):
            raise ConfigError(f"conditioning.layout needs a frozen text encoder (text.encoder minilm or hf), got "
                              f"{config.text.encoder!r}")
        if config.data.hflip:
            raise ConfigError("conditioning.layout cannot be used with data.hflip: a flip mirrors the images but not "
                              "their boxes or captions ('left of' would become wrong); set data.hflip=false")
        dims = getattr(config.network, "dims", None)  # the map enters as cond["concat"] channels of a 2-D image
        if not (config.model in ("dit", "mmdit") or (config.model == "unet" and dims == 2)):
            raise ConfigError(f"conditioning.layout needs a 2-D image network (model unet with dims 2, dit or "
                              f"mmdit); got model {config.model!r}"
                              + (f" with dims {dims}" if config.model == "unet" else ""))
        self.separators = tuple(DEFAULT_SEPARATORS if c.layout_separators is None else c.layout_separators)
        self.planner_steps = c.layout_planner_steps
        self.size: tuple[int, ...] = ()
        self._encoder = None

    def encoder(self):
        if self._encoder is None:
            from noisecraft.text import build_text_encoder

            self._encoder = build_text_encoder(self.config.text)
        return self._encoder

    def network_fields(self) -> dict[str, int]:
        return {"concat_channels": self.encoder().pooled_dim}

    # ----------------------------------------------------------------------------------- training
    def setup(self, dataset, net, device, progress: bool = False) -> None:
        super().setup(dataset, net, device, progress)
        if dataset.captions is None:
            raise DataError(f"conditioning.layout needs captions, but dataset {dataset.name!r} has none")
        boxes = dataset_boxes(dataset)  # (N, K, 4)
        unique = list(dict.fromkeys(dataset.captions))
        index = {c: i for i, c in enumerate(unique)}
        chunker = ChunkEncoder(self.encoder(), boxes.shape[1], self.separators)
        self.v, self.sep, objects, named = chunker.encode(unique)  # (U, J, P), (U, J), (U, K, P), (U, K)
        rows = torch.tensor([index[c] for c in dataset.captions])  # (N,) distinct-caption row of each item
        self.structure = [structure_key(c, chunker.J, chunker.separators) for c in unique]
        self.size = tuple(dataset.images.shape[2:])
        self.rows, self.boxes, self.objects = rows.to(self.device), boxes.to(self.device), objects.to(self.device)
        self.present = (named[rows] & ~torch.isnan(boxes).any(-1)).to(self.device)  # (N, K)

    def prepare(self, run_dir, progress: bool = False) -> None:
        """Fit the prompt -> boxes planner on every item's (caption chunks, boxes) and save it in run_dir (kept
        when the run resumes)."""
        if (Path(run_dir) / PLANNER_FILE).is_file():
            return
        rows, boxes = self.rows.cpu(), self.boxes.cpu()
        v, sep = self.v[rows], self.sep[rows]
        seed = self.config.train.seed
        planner, info = train_planner(v, sep, boxes, steps=self.planner_steps, seed=seed, progress=progress)
        bank = residual_bank(planner, v, sep, boxes, [self.structure[r] for r in rows.tolist()], seed=seed)
        save_planner(planner, run_dir, info, bank)

    def from_batch(self, idx):
        return {"concat": layout_map(self.boxes[idx], self.objects[self.rows[idx]], self.present[idx], self.size)}

    def null(self, n: int) -> dict:
        return {"concat": torch.zeros(1, self.encoder().pooled_dim, *self.size, device=self.device)}

    # ----------------------------------------------------------------------------------- sampling
    def load(self, run_dir, net, device, data_shape) -> None:
        super().load(run_dir, net, device, data_shape)
        planner, _, bank = load_planner(Path(run_dir))
        self.layout = Layout(self.encoder(), planner, self.separators, bank)
        self.size = tuple(data_shape[1:])

    def given(self, request) -> bool:
        return request.prompts is not None

    def from_request(self, request, num: int, seed=None) -> dict:
        from noisecraft.conditions.classes import per_image

        prompts = per_image(request.prompts, num, "prompt")
        generators = None if seed is None else layout_generators(seed, num)
        return {"concat": self.layout.map(prompts, self.size, generators).to(self.device)}  # (num, P, H, W)

    def describe(self) -> str:
        return "layout-grounded (the prompt's objects are placed by a planner)"


__all__ = ["BOXES", "DEFAULT_SEPARATORS", "PLANNER_FILE", "ChunkEncoder", "Layout", "LayoutCondition", "LayoutPlanner",
           "ResidualBank", "box_coverage", "chunks", "dataset_boxes", "layout_generators", "layout_map",
           "limit_phrases", "load_planner", "normalise", "relation_holds", "residual_bank", "save_planner",
           "split_phrases", "structure_key", "train_planner"]
