"""The conditioning contract shared by every conditional network, guidance wrapper and trainer.

`cond` is None or a dict with any of these keys, all batch-first (B = batch size):

    "class_labels"  (B,) int64           label `num_classes` is the null label (unconditional)
    "text_tokens"   (B, T, D_ctx) float  token embeddings, read by cross-attention (Rombach et al. 2022, sec. 3.3)
    "text_mask"     (B, T) bool          True = a real token; keys where False are masked out. A row with no
                                         True token attends to nothing: its cross-attention output is exactly 0
    "text_pooled"   (B, D_pool) float    a global vector added into the time embedding through a Linear
    "vector"        (B, D_vec) float     any other global vector, added the same way through its own Linear
    "concat"        (B, C_cat, *S) float channels concatenated to x, at the input's resolution (a mask, a masked
                                         or low-resolution image, a structure or layout map): the network's first
                                         layer reads [x, c] (a bias-free layer on c added to the one on x, so the
                                         zero map adds nothing)

A network is configured with `num_classes`, `context_dim` (0 = no cross-attention), `pooled_dim`,
`vector_dim` and `concat_channels` (0 = off); `check_cond` turns a wrong key, shape or dtype, or a key the network
was not configured for, into a NoisecraftError that names the key, the expected shape and what was given.

Absent keys: a missing "class_labels" means the null label; missing "text_tokens" means no cross-attention
contribution (as an all-False mask); missing "text_pooled"/"vector"/"concat" add nothing. The unconditional TEXT
condition used for classifier-free guidance is the encoding of the empty prompt "" (as Stable Diffusion),
supplied by the caller like any other condition.

Helpers for guidance and trainers: `expand_cond` (batch 1 -> B), `concat_cond` (stack conditions along
the batch, padding token sequences to a common T with mask False), `slice_cond`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from noisecraft.core.tensors import masked_mean
from noisecraft.errors import NoisecraftError, require

COND_KEYS = ("class_labels", "text_tokens", "text_mask", "text_pooled", "vector", "concat")
_INT_DTYPES = (torch.int32, torch.int64)


@dataclass(frozen=True)
class CondSpec:
    """What a network accepts: its conditioning fields (0 = off)."""

    num_classes: int = 0
    context_dim: int = 0
    pooled_dim: int = 0
    vector_dim: int = 0
    concat_channels: int = 0

    def accepts(self) -> tuple[str, ...]:
        keys = ("class_labels",) * (self.num_classes > 0) + ("text_tokens", "text_mask") * (self.context_dim > 0)
        keys += ("text_pooled",) * (self.pooled_dim > 0) + ("vector",) * (self.vector_dim > 0)
        return keys + ("concat",) * (self.concat_channels > 0)


_CONFIG_FIELD = {"class_labels": "num_classes", "text_tokens": "context_dim", "text_mask": "context_dim",
                 "text_pooled": "pooled_dim", "vector": "vector_dim", "concat": "concat_channels"}


def _shape_error(key: str, expected: str, value) -> NoisecraftError:
    got = f"{value.dtype} {tuple(value.shape)}" if isinstance(value, Tensor) else f"{type(value).__name__}"
    return NoisecraftError(f"cond[{key!r}]: expected {expected}, got {got}")


def check_cond(cond: dict | None, batch: int, spec: CondSpec, where: str = "network",
               spatial: tuple[int, ...] | None = None) -> dict:
    """Validate `cond` against the contract and the network's `spec`; returns a dict (empty for None).
    `spatial`: the input's spatial sizes *S, which cond["concat"] must have (None: not checked).

    Raises NoisecraftError for a non-dict, an unknown key, a key the network was not configured for, or a
    wrong shape/dtype (naming the key, the expected shape and what was given)."""
    if cond is None:
        return {}
    if not isinstance(cond, dict):
        raise NoisecraftError(f"{where}: cond must be None or a dict with keys among {', '.join(COND_KEYS)}; "
                              f"got {type(cond).__name__}")
    accepted = spec.accepts()
    for key in cond:
        if key not in COND_KEYS:
            raise NoisecraftError(f"{where}: unknown cond key {key!r}; allowed: {', '.join(COND_KEYS)}")
        if key not in accepted:
            raise NoisecraftError(f"{where}: cond[{key!r}] given but the network is configured without it "
                                  f"({_CONFIG_FIELD[key]} is 0); it accepts: {', '.join(accepted) or 'nothing'}")
    _check_labels(cond.get("class_labels"), batch, spec.num_classes)
    _check_tokens(cond.get("text_tokens"), cond.get("text_mask"), batch, spec.context_dim)
    for key, dim in (("text_pooled", spec.pooled_dim), ("vector", spec.vector_dim)):
        v = cond.get(key)
        if v is not None and not (isinstance(v, Tensor) and v.is_floating_point() and tuple(v.shape) == (batch, dim)):
            raise _shape_error(key, f"a float tensor of shape ({batch}, {dim})", v)
    _check_concat(cond.get("concat"), batch, spec.concat_channels, spatial)
    return cond


def _check_concat(c, batch: int, channels: int, spatial: tuple[int, ...] | None) -> None:
    if c is None:
        return
    if spatial is None:
        ok = isinstance(c, Tensor) and c.ndim >= 3 and tuple(c.shape[:2]) == (batch, channels)
        expected = f"({batch}, {channels}, *S)"
    else:
        ok = isinstance(c, Tensor) and tuple(c.shape) == (batch, channels, *spatial)
        expected = str((batch, channels, *spatial)) + " (the input's spatial size)"
    if not (ok and c.is_floating_point()):
        raise _shape_error("concat", f"a float tensor of shape {expected}", c)


def _check_labels(labels, batch: int, num_classes: int) -> None:
    if labels is None:
        return
    if not isinstance(labels, Tensor) or labels.dtype not in _INT_DTYPES or tuple(labels.shape) != (batch,):
        raise _shape_error("class_labels", f"an integer tensor of shape ({batch},)", labels)
    if torch.compiler.is_compiling():
        return  # the value check below reads the labels on the host (a graph break under torch.compile)
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > num_classes):
        raise NoisecraftError(f"cond['class_labels']: labels must be in 0..{num_classes - 1} (or {num_classes} = "
                              f"null label); got values in {int(labels.min())}..{int(labels.max())}")


def _check_tokens(tokens, mask, batch: int, context_dim: int) -> None:
    if tokens is None:
        if mask is not None:
            raise NoisecraftError("cond['text_mask'] given without cond['text_tokens']")
        return
    if not (isinstance(tokens, Tensor) and tokens.is_floating_point() and tokens.ndim == 3
            and tokens.shape[0] == batch and tokens.shape[2] == context_dim and tokens.shape[1] >= 1):
        raise _shape_error("text_tokens", f"a float tensor of shape ({batch}, T, {context_dim}) with T >= 1", tokens)
    T = tokens.shape[1]
    if mask is not None and not (isinstance(mask, Tensor) and mask.dtype == torch.bool
                                 and tuple(mask.shape) == (batch, T)):
        raise _shape_error("text_mask", f"a bool tensor of shape ({batch}, {T})", mask)


# ----------------------------------------------------------------------------------- batch helpers
def _batch_of(cond: dict) -> int | None:
    for v in cond.values():
        if isinstance(v, Tensor):
            return v.shape[0]
    return None


def expand_cond(cond: dict | None, batch: int) -> dict | None:
    """Every entry with batch size 1 broadcast to `batch` (others must already have `batch`)."""
    if cond is None:
        return None
    out = {}
    for key, v in cond.items():
        if isinstance(v, Tensor) and v.ndim >= 1 and v.shape[0] == 1 and batch != 1:
            v = v.expand(batch, *v.shape[1:])
        elif isinstance(v, Tensor) and v.ndim >= 1 and v.shape[0] != batch:
            raise NoisecraftError(f"cond[{key!r}]: batch size {v.shape[0]} does not match {batch} (or 1)")
        out[key] = v
    return out


def pad_tokens(tokens: Tensor, mask: Tensor | None, length: int) -> tuple[Tensor, Tensor]:
    """(B, T, D) tokens and their (B, T) mask (None = all True) zero-padded to `length` with mask False."""
    B, T, _ = tokens.shape
    if mask is None:
        mask = torch.ones(B, T, dtype=torch.bool, device=tokens.device)
    if length == T:
        return tokens, mask
    return F.pad(tokens, (0, 0, 0, length - T)), F.pad(mask, (0, length - T), value=False)


def concat_cond(conds: list[dict | None], batches: list[int]) -> dict | None:
    """Stack conditions along the batch axis (cond i has batch size batches[i]) for one network call.

    A key present in some conditions only is an error, except that a condition without "text_mask" gets an
    all-True one when another has it; token sequences are padded to the longest T with mask False, so a
    masked cross-attention sees exactly the same keys as in separate calls."""
    conds = [expand_cond(c, b) for c, b in zip(conds, batches)]
    if all(c is None or not c for c in conds):
        return None
    keys = [set(c or {}) - {"text_mask"} for c in conds]
    if any(k != keys[0] for k in keys):
        raise NoisecraftError(f"cannot batch conditions with different keys: {[sorted(k) for k in keys]}")
    out = {}
    for key in sorted(keys[0]):
        if key == "text_tokens":
            length = max(c["text_tokens"].shape[1] for c in conds)
            padded = [pad_tokens(c["text_tokens"], c.get("text_mask"), length) for c in conds]
            out["text_tokens"] = torch.cat([p[0] for p in padded])
            out["text_mask"] = torch.cat([p[1] for p in padded])
        else:
            out[key] = torch.cat([c[key] for c in conds])
    return out


def slice_cond(cond: dict | None, index) -> dict | None:
    """cond restricted to the samples `index` (a slice, an index tensor or a bool mask) of the batch."""
    return None if cond is None else {k: v[index] for k, v in cond.items()}


# ------------------------------------------------------------------------------------------ modules
class CondEmbedding(nn.Module):
    """The global conditioning added to the time embedding: class embedding (null label = num_classes,
    Ho & Salimans 2022) + Linear(text_pooled) + Linear(vector). Returns a (B, E) tensor or 0."""

    def __init__(self, spec: CondSpec, emb_dim: int) -> None:
        super().__init__()
        self.spec = spec
        self.pooled_proj = nn.Linear(spec.pooled_dim, emb_dim) if spec.pooled_dim > 0 else None
        self.vector_proj = nn.Linear(spec.vector_dim, emb_dim) if spec.vector_dim > 0 else None

    def forward(self, cond: dict, dtype: torch.dtype) -> Tensor | float:
        out = 0.0
        if self.pooled_proj is not None and cond.get("text_pooled") is not None:
            out = out + self.pooled_proj(cond["text_pooled"].to(dtype))
        if self.vector_proj is not None and cond.get("vector") is not None:
            out = out + self.vector_proj(cond["vector"].to(dtype))
        return out


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class TokenRefinerConfig:
    """The token refiner of a network config (the field `refiner` of UNetConfig and DiTConfig); see TokenRefiner.
    Off while kernel is 0 (and always without text tokens, context_dim = 0)."""

    kernel: int = 0  # odd > 0: the n-gram block reads this many tokens around each token; 0 = no refiner
    width: int = 128  # width W of the refined tokens (cross-attention reads this width unless residual)
    max_tokens: int = 77  # the longest token sequence it takes (learned position embedding)
    pool: bool = False  # True: the masked mean refined token, projected, joins the conditioning vector
    residual: bool = False  # True: cross-attention reads tokens + a zero-initialised projection of the refined ones

    def __post_init__(self) -> None:
        for name in ("kernel", "width", "max_tokens"):
            require(_is_int(getattr(self, name)), f"refiner.{name}", f"expected an integer, got "
                                                                     f"{getattr(self, name)!r}")
        for name in ("pool", "residual"):
            require(isinstance(getattr(self, name), bool), f"refiner.{name}",
                    f"expected true or false, got {getattr(self, name)!r}")
        require(self.kernel >= 0 and (self.kernel == 0 or self.kernel % 2 == 1), "refiner.kernel",
                f"must be 0 (off) or an odd number >= 1, got {self.kernel}")
        for name in ("width", "max_tokens"):
            require(getattr(self, name) >= 1, f"refiner.{name}", f"must be >= 1, got {getattr(self, name)}")
        require(not self.pool or self.on, "refiner.pool", "pools the refined tokens: set refiner.kernel too")
        require(not self.residual or self.on, "refiner.residual",
                "adds the refined tokens to the encoder's: set refiner.kernel too")

    @property
    def on(self) -> bool:
        return self.kernel > 0


class TokenRefiner(nn.Module):
    """Small trainable layers over the (frozen) text encoder's tokens, applied before cross-attention.

        h = W_in ctx + P[:T];  h = h + W_2 GELU(Conv_k(LN(h)));  ctx' = LN(h)

    The middle step is an n-gram block: a 1-D convolution of kernel k over the token axis (Kim 2014's
    convolutional sentence encoder), padding zeroed first, so each token reads its k - 1 neighbours with
    per-offset weights; P is a learned position embedding. It plays the role of the trainable text adapters
    of eDiff-I / Kandinsky and the token refiner of HunyuanVideo (Kong et al. 2024): a frozen sentence
    encoder's last states are close to a bag of words for attribute binding (measured in
    benchmarks/scenes_text.md), so one cross-attention hop from a circle-shaped region cannot tell which
    colour belongs to it; the refiner lets "red" read "circle" next to it, with weights learned from the diffusion loss.

    pool: W_pool (masked mean of ctx') joins the conditioning vector like a class embedding; unlike the
    encoder's mean-pooled vector it is not a bag of words. residual: cross-attention reads ctx + W_res ctx'.
    W_pool and W_res start at zero, so with residual a fresh network is exactly the one without a refiner
    (the zero-init of ControlNet / adaLN-Zero). Measured in benchmarks/scenes_text.md.

    Masked (padding) tokens are no one's neighbours, so real tokens' outputs do not depend on them."""

    def __init__(self, context_dim: int, config: TokenRefinerConfig, pool_dim: int = 0) -> None:
        super().__init__()
        width, kernel = config.width, config.kernel
        self.max_tokens = config.max_tokens
        self.proj_in = nn.Linear(context_dim, width)
        self.pos = nn.Parameter(torch.randn(config.max_tokens, width) * 0.02)  # (T_max, W)
        # n-gram block: h + W_2 GELU(Conv_k(LN(h))) over the token axis (padding zeroed first)
        self.conv_norm = nn.LayerNorm(width)
        self.conv = nn.Conv1d(width, 4 * width, kernel, padding=kernel // 2)
        self.conv_out = nn.Linear(4 * width, width)
        self.norm_out = nn.LayerNorm(width)
        # residual: ctx + W_res ctx' (W_res zero at init, so the network starts as one without a refiner)
        self.res_proj = nn.Linear(width, context_dim) if config.residual else None
        self.pool_proj = nn.Linear(width, pool_dim) if config.pool and pool_dim else None
        for m in self.zeroed():
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def zeroed(self) -> list[nn.Module]:
        """The layers that start at zero: the residual and the pool projections (the networks zero them again
        after their own blanket initialisation, e.g. DiT's Xavier pass)."""
        return [m for m in (self.res_proj, self.pool_proj) if m is not None]

    def forward(self, tokens: Tensor, mask: Tensor | None) -> Tensor:
        """tokens: (B, T, D_ctx), mask: (B, T) bool or None -> ctx' (B, T, W)."""
        B, T, _ = tokens.shape
        if T > self.max_tokens:
            raise NoisecraftError(f"text tokens: the token refiner takes at most {self.max_tokens} tokens "
                                  f"(refiner.max_tokens), got {T}")
        h = self.proj_in(tokens.to(self.pos.dtype)) + self.pos[:T]  # (B, T, W)
        x = self.conv_norm(h)
        if mask is not None:
            x = torch.where(mask.unsqueeze(-1), x, 0.0)  # padding is no one's neighbour
        h = h + self.conv_out(F.gelu(self.conv(x.transpose(1, 2)).transpose(1, 2)))  # (B, T, W)
        return self.norm_out(h)

    def refine(self, tokens: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """(what cross-attention reads, the refined tokens that the pool averages)."""
        h = self(tokens, mask)
        return (h if self.res_proj is None else tokens.to(h.dtype) + self.res_proj(h)), h

    def pooled(self, refined: Tensor, mask: Tensor | None) -> Tensor | float:
        """W_pool (masked mean of the refined tokens): (B, pool_dim), or 0 without a pool projection.
        Unlike the frozen encoder's mean-pooled vector this is not a bag of words: each refined token
        carries its neighbours, so "red circle ... blue square" and "blue circle ... red square" differ."""
        if self.pool_proj is None:
            return 0.0
        keep = torch.ones(refined.shape[:2], dtype=torch.bool, device=refined.device) if mask is None else mask
        # a row without real tokens adds exactly nothing, as no tokens at all
        return torch.where(keep.any(dim=1, keepdim=True), self.pool_proj(masked_mean(refined, keep)), 0.0)


def context_width(config) -> int:
    """Width of the tokens that cross-attention reads (network config with context_dim and refiner): the
    refiner's, else the text encoder's (context_dim)."""
    if config.refiner.on and not config.refiner.residual:
        return config.refiner.width
    return config.context_dim


def build_refiner(config, emb_dim: int = 0) -> TokenRefiner | None:
    """The token refiner of a network config (fields context_dim, refiner), or None when off; with
    refiner.pool its pooled output has width emb_dim (the network's conditioning vector)."""
    if not config.context_dim or not config.refiner.on:
        return None
    return TokenRefiner(config.context_dim, config.refiner, emb_dim)


def refined_context(refiner: TokenRefiner | None, cond: dict) -> tuple[tuple[Tensor, Tensor | None] | None,
                                                                          Tensor | float]:
    """((tokens, mask) for cross-attention or None without tokens, the refiner's pooled vector for the
    conditioning embedding or 0) from a checked cond; tokens are refined when the network has a refiner."""
    tokens = cond.get("text_tokens")
    if tokens is None:
        return None, 0.0
    mask = cond.get("text_mask")
    if refiner is None:
        return (tokens, mask), 0.0
    context, refined = refiner.refine(tokens, mask)
    return (context, mask), refiner.pooled(refined, mask)


def null_labels(labels: Tensor | None, batch: int, num_classes: int, device) -> Tensor:
    """The given labels, or the null label `num_classes` for all `batch` samples."""
    if labels is None:
        return torch.full((batch,), num_classes, dtype=torch.long, device=device)
    return labels


class CrossAttention(nn.Module):
    """Multi-head cross-attention from (B, L, C) queries to (B, T, D_ctx) context tokens (Vaswani et al. 2017;
    the conditioning mechanism of Rombach et al. 2022, sec. 3.3): W_o softmax(Q K^T / sqrt(d) + mask) V with
    Q = W_q h, K = W_k ctx, V = W_v ctx. Keys where mask is False are excluded; a row with no real key
    outputs exactly 0 (it attends to nothing). W_o starts at zero, so the block is the identity at init."""

    def __init__(self, channels: int, context_dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(context_dim, 2 * channels)
        self.proj = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h: Tensor, context: Tensor, mask: Tensor | None) -> Tensor:
        """h: (B, L, C) queries, context: (B, T, D_ctx), mask: (B, T) bool or None. Returns (B, L, C)."""
        B, L, C = h.shape
        d = C // self.heads
        q = self.q(h).view(B, L, self.heads, d).transpose(1, 2)  # (B, heads, L, d)
        k, v = self.kv(context.to(h.dtype)).view(B, -1, 2, self.heads, d).permute(2, 0, 3, 1, 4)  # (B, heads, T, d)
        if mask is None:
            out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, L, d)
            return self.proj(out.transpose(1, 2).reshape(B, L, C))  # (B, L, C)
        has_key = mask.any(dim=1)  # (B,)
        safe = mask | ~has_key[:, None]  # rows without keys: attend anywhere, then zeroed below
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=safe[:, None, None, :])  # (B, heads, L, d)
        out = self.proj(out.transpose(1, 2).reshape(B, L, C))  # (B, L, C)
        return out * has_key.to(out.dtype)[:, None, None]  # exactly 0 for rows without keys
