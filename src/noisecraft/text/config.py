"""The `text` section of a run config (`RunConfig.text`): which text encoder reads the prompts."""

from __future__ import annotations

from dataclasses import dataclass

from noisecraft.errors import require, unknown_name

TEXT_ENCODERS = ("none", "minilm", "hf", "trainable")


@dataclass(frozen=True)
class TextConfig:
    encoder: str = "none"           # none, minilm (bundled all-MiniLM-L6-v2), hf (a local Hugging Face dir), trainable
    path: str | None = None         # encoder "hf": local directory of a CLIP text model / T5 encoder + tokenizer
    max_tokens: int = 32            # longest prompt accepted, in the encoder's tokens (its own limit caps it)
    cache_dir: str | None = None    # caption-embedding cache (None: $NOISECRAFT_CACHE/text or ~/.cache/noisecraft/text)
    dim: int = 128                  # encoder "trainable": width of its embeddings and layers
    layers: int = 2                 # encoder "trainable": transformer layers
    heads: int = 4                  # encoder "trainable": attention heads

    def __post_init__(self):
        if self.encoder not in TEXT_ENCODERS:
            raise unknown_name("text encoder", self.encoder, TEXT_ENCODERS)
        require((self.path is not None) == (self.encoder == "hf"), "text.path",
               f"give a local directory exactly when text.encoder is 'hf', got {self.path!r}")
        require(self.max_tokens >= 1, "text.max_tokens", f"must be >= 1, got {self.max_tokens}")
        require(self.layers >= 1 and self.heads >= 1, "text.layers/heads",
               f"must be >= 1, got {self.layers}, {self.heads}")
        require(self.dim >= 1 and self.dim % self.heads == 0, "text.dim",
               f"must be a positive multiple of text.heads={self.heads}, got {self.dim}")
