"""Textual inversion: new words in a frozen text encoder's token table, and the embedding files that hold them.

Textual inversion (Gal et al. 2022, "An Image is Worth One Word", eq. 2): a placeholder token S* gets a new row
v* of the text encoder's token-embedding table, initialised from a word, and only v* is trained on the denoising
loss of the concept's images with prompts that contain S*,

    v* = argmin_v E_{x0, sigma, noise} || D(x0 + sigma noise, sigma, c_theta(y(S*; v))) - x0 ||^2

with the diffusion model D and the rest of the encoder c_theta frozen. Here the table becomes [W; V] with W the
encoder's own rows, left untouched (its tensor is never written), and V (n, D) the n vectors of the new token:
`token`, `token_1`, ... `token_{n-1}` as diffusers names multi-vector tokens; a prompt's `token` is expanded to
all n of them.

Files: safetensors holding one tensor (n, D) under the token's name, the layout diffusers'
`load_textual_inversion` reads ({token: tensor}) and AUTOMATIC1111 reads from a single-tensor safetensors file
(it names the token after the file); the metadata `noisecraft_adapter` (JSON) adds the initialising word and the
base model. Read back: that layout and A1111's `emb_params` key (token from the metadata or the file name).

Encoders with a token table: the bundled MiniLM and any local Hugging Face encoder (`text.encoder=minilm` /
`hf`), and the CLIP / T5 text encoders of loaded diffusers pipelines. The trainable character-level encoder has
no word table and is refused.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import nn

from noisecraft.errors import CheckpointError, NoisecraftError

METADATA_KEY = "noisecraft_adapter"


class ExtendedEmbedding(nn.Module):
    """A token table [W; V]: the frozen table W (num, D) of an nn.Embedding and new trainable rows V (n, D)."""

    def __init__(self, base: nn.Embedding, new_rows: torch.Tensor):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.new = nn.Parameter(new_rows.detach().clone().to(base.weight))
        self.num_old = base.num_embeddings

    @property
    def weight(self) -> torch.Tensor:
        return torch.cat([self.base.weight, self.new])  # (num + n, D)

    @property
    def num_embeddings(self) -> int:
        return self.num_old + self.new.shape[0]

    @property
    def embedding_dim(self) -> int:
        return self.base.embedding_dim

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(ids, self.weight, self.base.padding_idx)


# ------------------------------------------------------------------------------------------ the text encoder
def text_parts(run) -> tuple[object, nn.Module, object]:
    """(tokenizer, transformers model, text condition) of a text-conditioned run whose encoder has a token table."""
    from noisecraft.conditions.text import TextCondition

    condition = run.conditions.get("text") if run.conditions else None
    if condition is None:
        what = run.conditions.describe() if run.conditions else "an unconditional model"
        raise NoisecraftError(f"textual inversion needs a text-to-image model, but {run.config.name!r} is {what}")
    if isinstance(condition, TextCondition):
        encoder = condition.encoder
        if not hasattr(encoder, "tokenizer"):
            raise NoisecraftError(f"textual inversion needs a text encoder with a token-embedding table; this run's "
                                  f"text encoder {condition.text.encoder!r} is character-level (it has none); "
                                  f"supported: minilm, hf")
        return encoder.tokenizer, encoder.model, condition
    tokenizer, model = getattr(condition, "tokenizer", None), getattr(condition, "encoder", None)
    if tokenizer is None or not isinstance(model, nn.Module):
        raise NoisecraftError(f"textual inversion: the text condition {type(condition).__name__} has no tokenizer "
                              f"and text encoder to add a word to")
    return tokenizer, model, condition


def vector_tokens(token: str, n: int) -> list[str]:
    """token, token_1, ..., token_{n-1} (diffusers' names for a multi-vector token)."""
    return [token] + [f"{token}_{i}" for i in range(1, n)]


def check_token(tokenizer, token: str, n: int = 1) -> None:
    """NoisecraftError when `token` (or one of its vector names) is empty, has spaces, or already exists."""
    if not token or re.search(r"\s", token):
        raise NoisecraftError(f"placeholder token {token!r} must be one word without spaces, e.g. <sks>")
    vocab = tokenizer.get_vocab()
    taken = [t for t in vector_tokens(token, n) if t in vocab or t.lower() in vocab]
    if taken:
        raise NoisecraftError(f"placeholder token {taken[0]!r} already exists in the text encoder's vocabulary; "
                              f"choose a new one, e.g. <{token.strip('<>')}-concept>")


def word_rows(tokenizer, table: nn.Module, word: str) -> torch.Tensor:
    """The mean token embedding of `word` (the initialisation of new rows), (D,)."""
    ids = tokenizer(word, add_special_tokens=False)["input_ids"]
    if not ids:
        raise NoisecraftError(f"the initialising word {word!r} has no tokens; give a word such as 'glyph'")
    with torch.no_grad():
        return table.weight[torch.tensor(ids, device=table.weight.device)].float().mean(0)


def add_token(run, token: str, rows: torch.Tensor) -> ExtendedEmbedding:
    """Add `token` with embedding rows (n, D) to the run's tokenizer and text encoder (the table becomes [W; V]);
    prompts with `token` are expanded to its n vector names. Returns the new table; only its `new` rows train."""
    tokenizer, model, condition = text_parts(run)
    rows = torch.as_tensor(rows).float().reshape(-1, rows.shape[-1])
    check_token(tokenizer, token, rows.shape[0])
    table = model.get_input_embeddings()
    if rows.shape[1] != table.embedding_dim:
        raise NoisecraftError(f"the embedding for {token!r} is {rows.shape[1]}-d but this text encoder's token table "
                              f"is {table.embedding_dim}-d (an embedding for another text encoder)")
    names = vector_tokens(token, rows.shape[0])
    tokenizer.add_tokens(names)
    ids = tokenizer.convert_tokens_to_ids(names)
    if ids != list(range(table.num_embeddings, table.num_embeddings + len(names))):
        raise NoisecraftError(f"the tokenizer gave the new token {token!r} ids {ids}, not the next free rows of the "
                              f"token table ({table.num_embeddings}...)")
    extended = ExtendedEmbedding(table, rows)
    model.set_input_embeddings(extended)
    _expand_prompts(condition, token, names)
    encoder = getattr(condition, "encoder", None)
    if getattr(encoder, "identity", None):
        encoder.identity = f"{encoder.identity}+{token}"  # no cache may hold encodings made without the token
    return extended


def _expand_prompts(condition, token: str, names: list[str]) -> None:
    """Make the condition's encode() replace `token` in prompts by its vector names (one each)."""
    if len(names) == 1:
        return
    expansions = condition.__dict__.get("_token_expansions")
    if expansions is None:
        expansions = condition._token_expansions = {}
        encode = condition.encode

        def expanded(prompts, *args, **kwargs):
            return encode(expand_prompts(condition, prompts), *args, **kwargs)

        condition.encode = expanded
    expansions[token] = names


def expand_prompts(condition, prompts) -> list[str]:
    """`prompts` with each multi-vector token written as its vector names: '<sks>' -> '<sks> <sks>_1 <sks>_2'."""
    out = list(prompts)
    for token, names in (condition.__dict__.get("_token_expansions") or {}).items():
        pattern = re.compile(rf"(?<!\S){re.escape(token)}(?!\S)")
        out = [pattern.sub(" ".join(names), p) for p in out]
    return out


def placeholder(run, token: str, init_word: str, vectors: int = 1) -> ExtendedEmbedding:
    """A new token for textual inversion: `vectors` rows initialised to the embedding of `init_word`."""
    if isinstance(vectors, bool) or not isinstance(vectors, int) or vectors < 1:
        raise NoisecraftError(f"the number of vectors per token must be an integer >= 1, got {vectors!r}")
    tokenizer, model, _ = text_parts(run)
    check_token(tokenizer, token, vectors)
    row = word_rows(tokenizer, model.get_input_embeddings(), init_word)
    return add_token(run, token, row.expand(vectors, -1))


def differentiable_text_cond(condition, prompts: list[str]) -> dict:
    """The condition's cond entries for `prompts` with gradients flowing to the token table (its encode() runs
    under no_grad: here the same code runs without it)."""
    from noisecraft.conditions.text import TextCondition

    if isinstance(condition, TextCondition):
        encoder = condition.encoder
        fn = type(encoder)._encode
        tokens, mask, pooled = getattr(fn, "__wrapped__", fn)(encoder, expand_prompts(condition, prompts))
        tokens = torch.where(mask.unsqueeze(-1), tokens, 0.0)
        return {k: v.to(condition.device) for k, v in condition._routes(tokens, mask, pooled).items()}
    fn = type(condition).encode
    return getattr(fn, "__wrapped__", fn)(condition, expand_prompts(condition, prompts))


# ---------------------------------------------------------------------------------------------------- files
def save_embedding(path, token: str, rows: torch.Tensor, info: dict) -> Path:
    """Write {token: rows (n, D)} as safetensors atomically, with `info` as JSON metadata."""
    from safetensors.torch import save

    from noisecraft.files import atomic_write_bytes

    rows = rows.detach().float().cpu().contiguous()
    if not torch.isfinite(rows).all():
        raise CheckpointError(f"refusing to save an embedding for {token!r} with non-finite values")
    meta = {"format": "pt", METADATA_KEY: json.dumps({"kind": "embedding", "token": token, "vectors": rows.shape[0],
                                                      **info})}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(path), save({token: rows}, metadata=meta))
    return Path(path)


def load_embedding(path) -> tuple[str, torch.Tensor, dict]:
    """(token, rows (n, D), metadata) of an embedding file: {token: tensor} (diffusers) or {"emb_params": tensor}
    (A1111; token from the metadata or the file name). Pickle files are refused unopened."""
    from noisecraft.interop.lora import _read_safetensors

    path = Path(path)
    try:
        tensors, metadata = _read_safetensors(path)
    except CheckpointError as e:
        raise CheckpointError(str(e).replace("LoRA file", "embedding file")) from None
    info = json.loads(metadata.get(METADATA_KEY) or "{}")
    if len(tensors) != 1:
        raise CheckpointError(f"embedding file {str(path)!r} holds {len(tensors)} tensors "
                              f"({', '.join(sorted(tensors))}); a textual-inversion embedding holds one "
                              f"({{token: (n, D)}}, or A1111's emb_params)")
    (key, rows), = tensors.items()
    token = info.get("token") or (path.stem if key == "emb_params" else key)
    if rows.ndim not in (1, 2) or not rows.is_floating_point():
        raise CheckpointError(f"embedding file {str(path)!r}: {key!r} is {tuple(rows.shape)} {rows.dtype}, not a "
                              f"float (n, D) table of token vectors")
    return token, rows.float().reshape(-1, rows.shape[-1]), info


def apply_embedding(run, path, *, token: str | None = None) -> str:
    """Load an embedding file into a run's text encoder (`--embedding`); returns the token to write in prompts."""
    name, rows, _ = load_embedding(path)
    token = token or name
    add_token(run, token, rows)
    return token
