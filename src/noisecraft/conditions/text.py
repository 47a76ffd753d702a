"""Text prompts: a text encoder's tokens for cross-attention (`text_tokens`, `text_mask`; Rombach et al. 2022,
Sec. 3.3) and its pooled vector added to the time embedding (`text_pooled`), as the run's
`conditioning.text_tokens` / `conditioning.text_pooled` choose. The null text is the encoding of the empty
prompt "" (as Stable Diffusion); the unconditional side of guidance is the negative prompt when one is given.

A frozen encoder (MiniLM, a local Hugging Face CLIP / T5) encodes a training set's distinct captions once,
cached on disk (`noisecraft.text.cache`), so a training step only gathers rows. The trainable encoder
(`text.encoder=trainable`) runs inside the network's forward (`TextEncoderNet`) on token ids and is trained
with it; its ids travel in cond under `TEXT_IDS`, a key only `TextEncoderNet` reads.
"""

from __future__ import annotations

import torch
from torch import nn

from noisecraft.conditions.base import Condition, register
from noisecraft.conditions.classes import per_image
from noisecraft.errors import ConfigError, DataError, NoisecraftError

TEXT_IDS = "text_ids"  # cond key used only between the trainer and TextEncoderNet (trainable encoder)


class TextEncoderNet(nn.Module):
    """A network with a trainable text encoder: forward(x, c_noise, cond) encodes cond["text_ids"] (token ids
    of the trainable encoder) into text_tokens / text_mask / text_pooled, then calls the network. A cond
    that already holds text_tokens (sampling, guidance) passes through unchanged."""

    def __init__(self, net: nn.Module, text_encoder: nn.Module, use_tokens: bool = True, use_pooled: bool = True):
        super().__init__()
        self.net, self.text_encoder = net, text_encoder
        self.use_tokens, self.use_pooled = use_tokens, use_pooled

    @property
    def config(self):
        return self.net.config

    def _routes(self, tokens, mask, pooled) -> dict:
        return {**({"text_tokens": tokens, "text_mask": mask} if self.use_tokens else {}),
                **({"text_pooled": pooled} if self.use_pooled else {})}

    def text_cond(self, ids: torch.Tensor) -> dict:
        return self._routes(*self.text_encoder.encode_ids(ids))

    def encode(self, prompts: list[str], *, allow_empty: bool = False) -> dict:
        """The text part of cond for `prompts` (what the sampler passes)."""
        return self._routes(*self.text_encoder.encode(prompts, allow_empty=allow_empty))

    def forward(self, x, c_noise, cond=None):
        if cond is not None and TEXT_IDS in cond:
            cond = {k: v for k, v in cond.items() if k != TEXT_IDS} | self.text_cond(cond[TEXT_IDS])
        return self.net(x, c_noise, cond)


class PromptCondition(Condition):
    """A condition given by text prompts (`--prompt`): subclasses encode prompts into cond entries (`encode`);
    the null text is the encoding of "" and a negative prompt replaces it on the unconditional side."""

    def encode(self, prompts: list[str], *, allow_empty: bool = False) -> dict:
        raise NotImplementedError

    def null(self, n: int) -> dict:
        return self.encode([""], allow_empty=True)

    def given(self, request) -> bool:
        return request.prompts is not None

    def check_request(self, request) -> None:
        if request.negative_prompt is not None and request.prompts is None:
            raise NoisecraftError("--negative-prompt needs --prompt")

    def from_request(self, request, num: int, seed=None) -> dict:
        prompts = per_image(request.prompts, num, "prompt")
        unique = sorted(set(prompts))  # each distinct prompt encoded once
        table = self.encode(unique)
        rows = torch.tensor([unique.index(p) for p in prompts], device=self.device)
        return {k: v[rows] for k, v in table.items()}

    def unconditional(self, request) -> dict:
        negative = request.negative_prompt
        return self.encode([negative if negative is not None else ""], allow_empty=negative is None)


@register("text")
class TextCondition(PromptCondition):
    """The run's `text` encoder and `conditioning.text_tokens / text_pooled` routes (module docstring)."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self.text, self.routes = config.text, config.conditioning
        if not (self.routes.text_tokens or self.routes.text_pooled):
            raise ConfigError("conditioning.text_tokens and conditioning.text_pooled are both false: the text would "
                              "not reach the network; set text.encoder='none' for an unconditional model")
        self.encoder = None  # the TextEncoder used at sampling time (set by load)
        self.ids = self.table = None

    # ---------------------------------------------------------------------------------- the network
    def network_fields(self) -> dict[str, int]:
        if self.text.encoder == "trainable":
            token_dim = pooled_dim = self.text.dim
        else:
            from noisecraft.text import build_text_encoder

            enc = build_text_encoder(self.text)
            token_dim, pooled_dim = enc.token_dim, enc.pooled_dim
        return {"context_dim": token_dim if self.routes.text_tokens else 0,
                "pooled_dim": pooled_dim if self.routes.text_pooled else 0}

    def wrap_network(self, net):
        if self.text.encoder != "trainable":
            return net
        from noisecraft.text.trainable import CharTextEncoder

        t = self.text
        encoder = CharTextEncoder(dim=t.dim, layers=t.layers, heads=t.heads, max_tokens=t.max_tokens)
        return TextEncoderNet(net, encoder, self.routes.text_tokens, self.routes.text_pooled)

    # ----------------------------------------------------------------------------------- training
    def setup(self, dataset, net, device, progress: bool = False) -> None:
        super().setup(dataset, net, device, progress)
        if dataset.captions is None:
            raise DataError(f"text.encoder={self.text.encoder!r} needs captions, but dataset {dataset.name!r} has "
                            f"none; use a captioned dataset (glyphs, scenes, emoji)")
        if self.text.encoder == "trainable":
            encoder = net.text_encoder
            self.ids = encoder.token_ids(list(dataset.captions)).to(self.device)  # (N, T)
            null = encoder.token_ids([""]).to(self.device)  # (1, T0)
            self.null_ids = torch.nn.functional.pad(null, (0, self.ids.shape[1] - null.shape[1]))  # (1, T)
            return
        from noisecraft.text import build_text_encoder, cached_caption_table

        table = cached_caption_table(build_text_encoder(self.text), dataset.captions, self.text.cache_dir,
                                     progress=progress)
        self.table, self.rows = table.to(self.device), table.rows(dataset.captions).to(self.device)

    def _table_rows(self, rows) -> dict:
        t = self.table
        return self._routes(t.tokens[rows], t.mask[rows], t.pooled[rows])

    def _routes(self, tokens, mask, pooled) -> dict:
        r = self.routes
        return {**({"text_tokens": tokens, "text_mask": mask} if r.text_tokens else {}),
                **({"text_pooled": pooled} if r.text_pooled else {})}

    def from_batch(self, idx):
        if self.ids is not None:
            return {TEXT_IDS: self.ids[idx]}
        return self._table_rows(self.rows[idx])

    def null(self, n: int) -> dict:
        if self.ids is not None:  # training the trainable encoder: the ids of ""
            return {TEXT_IDS: self.null_ids}
        if self.table is not None:  # training on a caption table: row 0 is ""
            return self._table_rows(torch.zeros(1, dtype=torch.long, device=self.device))
        return super().null(n)

    # ----------------------------------------------------------------------------------- sampling
    def load(self, run_dir, net, device, data_shape) -> None:
        super().load(run_dir, net, device, data_shape)
        if hasattr(net, "text_encoder"):  # trained inside the network
            self.encoder = net.text_encoder
        else:
            from noisecraft.text import build_text_encoder

            self.encoder = build_text_encoder(self.text)

    def encode(self, prompts: list[str], *, allow_empty: bool = False) -> dict:
        """The text part of cond for prompts (B of them)."""
        if self.encoder is None:
            raise NoisecraftError("the text condition is not loaded (noisecraft.load a run before sampling)")
        with torch.no_grad():
            tokens, mask, pooled = self.encoder.encode(list(prompts), allow_empty=allow_empty)
        return {k: v.to(self.device) for k, v in self._routes(tokens, mask, pooled).items()}

    def describe(self) -> str:
        return f"a text-to-image model (text encoder {self.text.encoder!r}); use --prompt"
