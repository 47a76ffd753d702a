"""Text encoders for text-to-image conditioning, and the on-disk cache of caption embeddings.

One interface (`TextEncoder.encode(prompts) -> tokens (B, T, D), mask (B, T), pooled (B, P)`) over
all-MiniLM-L6-v2 (the bundled offline default), any local Hugging Face text encoder (CLIP, T5) and a small
character-level encoder trained with the network. See `noisecraft.text.encoders`.
"""

from noisecraft.text.cache import CaptionTable, cached_caption_table, encode_all
from noisecraft.text.config import TEXT_ENCODERS, TextConfig
from noisecraft.text.encoders import HFTextEncoder, TextEncoder, build_text_encoder, minilm_encoder, minilm_path

__all__ = [
    "TEXT_ENCODERS", "CaptionTable", "HFTextEncoder", "TextConfig", "TextEncoder",
    "build_text_encoder", "cached_caption_table", "encode_all", "minilm_encoder", "minilm_path",
]
