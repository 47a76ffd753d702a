"""Text encoders for text-to-image conditioning, and the on-disk cache of caption embeddings.

One interface (`TextEncoder.encode(prompts) -> tokens (B, T, D), mask (B, T), pooled (B, P)`) over
all-MiniLM-L6-v2 (the bundled offline default), any local Hugging Face text encoder (CLIP, T5) and a small
character-level encoder trained with the network. See `noisecraft.text.encoders`.
"""

from noisecraft.text.cache import CaptionTable, cached_caption_table, encode_all
from noisecraft.text.config import TEXT_ENCODERS, TextConfig
from noisecraft.text.encoders import HFTextEncoder, TextEncoder, minilm_encoder, minilm_path
from noisecraft.text.trainable import CharTextEncoder


def build_text_encoder(text) -> TextEncoder | None:
    """The encoder a `TextConfig` names (None for encoder 'none')."""
    if text.encoder == "none":
        return None
    if text.encoder == "minilm":
        return minilm_encoder(text.max_tokens)
    if text.encoder == "hf":
        return HFTextEncoder(text.path, text.max_tokens)
    return CharTextEncoder(dim=text.dim, layers=text.layers, heads=text.heads, max_tokens=text.max_tokens)


__all__ = [
    "TEXT_ENCODERS", "CaptionTable", "CharTextEncoder", "HFTextEncoder", "TextConfig", "TextEncoder",
    "build_text_encoder", "cached_caption_table", "encode_all", "minilm_encoder", "minilm_path",
]
