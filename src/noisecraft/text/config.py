"""Config sections for text encoders and conditioning (`RunConfig.text`, `RunConfig.conditioning`)."""

from __future__ import annotations

from dataclasses import dataclass

from noisecraft.errors import ConfigError, unknown_name

TEXT_ENCODERS = ("none", "minilm", "hf", "trainable")
PHRASE_MODES = ("add", "only")  # phrase slots added to the prompt's own encoding, or instead of it


def _check(ok: bool, where: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{where}: {message}")


@dataclass(frozen=True)
class TextConfig:
    encoder: str = "none"           # none, minilm (bundled all-MiniLM-L6-v2), hf (a local Hugging Face dir), trainable
    path: str | None = None         # encoder "hf": local directory of a CLIP text model / T5 encoder + tokenizer
    max_tokens: int = 32            # longest prompt accepted, in the encoder's tokens (its own limit caps it)
    cache_dir: str | None = None    # caption-embedding cache (None: $NOISECRAFT_CACHE/text or ~/.cache/noisecraft/text)
    dim: int = 128                  # encoder "trainable": width of its embeddings and layers
    layers: int = 2                 # encoder "trainable": transformer layers
    heads: int = 4                  # encoder "trainable": attention heads
    phrases: int = 0                # >0: encode up to this many phrases of each prompt on their own as well
                                    # (noisecraft.text.phrases: phrase tokens + an ordered pooled vector)
    phrase_separators: tuple[str, ...] | None = None  # words that cut a prompt into phrases (None: the default list)
    phrase_mode: str = "add"        # add: phrase slots + the prompt's own tokens/pooled; only: the phrase slots alone

    def __post_init__(self):
        if self.encoder not in TEXT_ENCODERS:
            raise unknown_name("text encoder", self.encoder, TEXT_ENCODERS)
        _check((self.path is not None) == (self.encoder == "hf"), "text.path",
               f"give a local directory exactly when text.encoder is 'hf', got {self.path!r}")
        _check(self.max_tokens >= 1, "text.max_tokens", f"must be >= 1, got {self.max_tokens}")
        _check(self.layers >= 1 and self.heads >= 1, "text.layers/heads",
               f"must be >= 1, got {self.layers}, {self.heads}")
        _check(self.dim >= 1 and self.dim % self.heads == 0, "text.dim",
               f"must be a positive multiple of text.heads={self.heads}, got {self.dim}")
        _check(self.phrases >= 0, "text.phrases", f"must be >= 0 (0: off), got {self.phrases}")
        _check(self.phrases == 0 or self.encoder in ("minilm", "hf"), "text.phrases",
               f"phrase slots need a frozen encoder (minilm or hf), got text.encoder={self.encoder!r}")
        if self.phrase_mode not in PHRASE_MODES:
            raise unknown_name("text.phrase_mode", self.phrase_mode, PHRASE_MODES)
        _check(self.phrase_separators is None or all(isinstance(s, str) and s.strip() for s in self.phrase_separators),
               "text.phrase_separators", f"must be a list of non-empty strings, got {self.phrase_separators!r}")


@dataclass(frozen=True)
class ConditioningConfig:
    cond_dropout: float = 0.1       # P(a training sample gets the null condition), for CFG (Ho & Salimans 2022)
    text_tokens: bool = True        # with a text encoder: feed its token sequence (cross-attention, sets context_dim)
    text_pooled: bool = True        # with a text encoder: feed its pooled vector (sets pooled_dim)
    layout: bool = False            # layout-grounded: a planner puts each object phrase in a box, the U-Net reads
                                    # the map of phrase embeddings (noisecraft.text.layout; data with boxes)
    layout_planner_steps: int = 1500  # training steps of the layout planner (seconds on a CPU)

    def __post_init__(self):
        _check(0 <= self.cond_dropout < 1, "conditioning.cond_dropout", f"must be in [0, 1), got {self.cond_dropout}")
        _check(isinstance(self.layout, bool), "conditioning.layout", f"expected true or false, got {self.layout!r}")
        _check(isinstance(self.layout_planner_steps, int) and self.layout_planner_steps >= 1,
               "conditioning.layout_planner_steps", f"must be an integer >= 1, got {self.layout_planner_steps!r}")
