"""A small character-level text encoder trained jointly with the diffusion network.

Prompts are read character by character (printable ASCII, case kept: "G" and "g" differ), after a
begin token, so the empty prompt is one token and every prompt has at least one real position. The
characters are embedded with learned position embeddings and pass through pre-norm transformer encoder
layers (Vaswani et al. 2017; pre-norm as in Xiong et al. 2020) with padding masked out of attention, then
a final layer norm. Pooled = mean of the real positions. Imagen (Saharia et al. 2022, section 4.1) notes
that encoders trained only on the image-caption data can work for small vocabularies; here it also
makes a text-to-image run independent of any pretrained weights.

Its parameters live inside the network module (`net.text_encoder`), so the optimiser, the EMA and the
checkpoint treat them exactly like the network's own.
"""

from __future__ import annotations

import torch
from torch import nn

from noisecraft.core.tensors import masked_mean
from noisecraft.errors import NoisecraftError
from noisecraft.text.encoders import TextEncoder, too_long

FIRST, LAST = 32, 126  # printable ASCII
PAD, BEGIN, OFFSET = 0, 1, 2  # token ids: padding, begin, then characters FIRST..LAST


class CharTextEncoder(TextEncoder):
    """tokens (B, 1 + longest prompt, dim), mask, pooled (B, dim)."""

    def __init__(self, dim: int = 128, layers: int = 2, heads: int = 4, max_tokens: int = 64):
        super().__init__()
        self.token_dim = self.pooled_dim = dim
        self.max_tokens = max_tokens
        self.identity = None  # its weights change during training: never cached
        self.embed = nn.Embedding(OFFSET + LAST - FIRST + 1, dim, padding_idx=PAD)
        self.position = nn.Embedding(max_tokens + 1, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=4 * dim, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.position.weight, std=0.02)

    def token_ids(self, prompts: list[str]) -> torch.Tensor:
        """(B, 1 + longest) int64: BEGIN, then the characters, then PAD."""
        too_long([len(p) for p in prompts], self.max_tokens, prompts, unit="characters")
        ids = torch.full((len(prompts), 1 + max(len(p) for p in prompts)), PAD, dtype=torch.long)
        ids[:, 0] = BEGIN
        for i, p in enumerate(prompts):
            codes = [ord(c) for c in p]
            bad = [c for c in codes if not FIRST <= c <= LAST]
            if bad:
                raise NoisecraftError(f"prompt {p!r} has the character {chr(bad[0])!r}; the trainable text encoder "
                                      f"reads printable ASCII only (codes {FIRST}..{LAST})")
            ids[i, 1:1 + len(p)] = torch.tensor(codes, dtype=torch.long) - FIRST + OFFSET
        return ids

    def encode_ids(self, ids: torch.Tensor):
        """Token ids (B, T) from `token_ids` -> tokens (B, T, dim) (0 at padding), mask (B, T), pooled (B, dim)."""
        ids = ids.to(self.embed.weight.device)
        mask = ids != PAD  # (B, T)
        h = self.embed(ids) + self.position(torch.arange(ids.shape[1], device=ids.device))  # (B, T, dim)
        h = self.norm(self.layers(h, src_key_padding_mask=~mask))
        h = torch.where(mask.unsqueeze(-1), h, 0.0)
        return h, mask, masked_mean(h, mask)

    def _encode(self, prompts: list[str]):
        return self.encode_ids(self.token_ids(prompts))
