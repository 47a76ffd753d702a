"""The trainer's conditioning plumbing: from a dataset's labels and captions to the per-batch `cond` dict.

`Conditioner(config, dataset, net)(idx, gen)` returns the cond of the batch `idx` (see
`noisecraft.models.conditioning` for the contract):

- class labels when the network has `num_classes > 0` (the dataset's labels);
- text when `text.encoder` is set: a frozen encoder's embeddings come from a table of the dataset's
  distinct captions, encoded once and cached on disk (`noisecraft.text.cache`), so a step only gathers
  rows; the trainable encoder is run inside the network's forward (`TextEncoderNet`), on token ids;
- condition dropout (Ho & Salimans 2022, Algorithm 1): with probability `conditioning.cond_dropout` a
  sample's condition becomes the null condition - the null class label `num_classes` and the encoding of
  the empty prompt "" (as Stable Diffusion) - with one draw per sample from the step's generator, so the
  class and the text of a sample are dropped together and a resumed run draws exactly the same.

`adapt_network_to_text` sets the network's context_dim / pooled_dim from the encoder (the encoder is the
source of truth, as the data is for in_channels); `build_network` adds the trainable encoder to the net.
"""

from __future__ import annotations

from dataclasses import fields, replace

import torch
from torch import nn

from noisecraft.errors import ConfigError, DataError

TEXT_IDS = "text_ids"  # cond key used only between the trainer and TextEncoderNet (trainable encoder)


def _text_dims(text) -> tuple[int, int]:
    """(token dim, pooled dim) of the encoder a TextConfig names, without running it."""
    if text.encoder == "trainable":
        return text.dim, text.dim
    from noisecraft.text import build_text_encoder

    enc = build_text_encoder(text)
    return enc.token_dim, enc.pooled_dim


def adapt_network_to_text(config):
    """The run config with the network's context_dim / pooled_dim set from `text` and `conditioning`."""
    if config.text.encoder == "none":
        return config
    net_cfg = config.network
    names = {f.name for f in fields(net_cfg)}
    if not {"context_dim", "pooled_dim"} <= names:
        raise ConfigError(f"text.encoder={config.text.encoder!r} needs a network that takes text; model "
                          f"{config.model!r} has no context_dim/pooled_dim (use unet or dit)")
    c = config.conditioning
    if not (c.text_tokens or c.text_pooled):
        raise ConfigError("conditioning.text_tokens and conditioning.text_pooled are both false: the text would "
                          "not reach the network; set text.encoder='none' for an unconditional model")
    token_dim, pooled_dim = _text_dims(config.text)
    net_cfg = replace(net_cfg, context_dim=token_dim if c.text_tokens else 0,
                      pooled_dim=pooled_dim if c.text_pooled else 0)
    if c.layout:
        net_cfg = replace(net_cfg, layout_dim=_layout_dim(config))
    return replace(config, **{config.model: net_cfg})


def _layout_dim(config) -> int:
    """The layout map's channels (the base frozen encoder's pooled width), after checking the run can have one."""
    if config.text.encoder not in ("minilm", "hf"):
        raise ConfigError(f"conditioning.layout needs a frozen text encoder (text.encoder minilm or hf), got "
                          f"{config.text.encoder!r}")
    if config.data.hflip:
        raise ConfigError("conditioning.layout cannot be used with data.hflip: a flip mirrors the images but not "
                          "their boxes or captions ('left of' would become wrong); set data.hflip=false")
    if config.model != "unet" or config.unet.dims != 2:
        raise ConfigError(f"conditioning.layout needs the 2-D U-Net (model unet, unet.dims 2); got model "
                          f"{config.model!r}" + (f" with dims {config.unet.dims}" if config.model == "unet" else ""))
    from noisecraft.text.layout import base_text_encoder

    return base_text_encoder(config.text).pooled_dim


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

    def text_cond(self, ids: torch.Tensor) -> dict:
        tokens, mask, pooled = self.text_encoder.encode_ids(ids)
        return {**({"text_tokens": tokens, "text_mask": mask} if self.use_tokens else {}),
                **({"text_pooled": pooled} if self.use_pooled else {})}

    def encode(self, prompts: list[str], *, allow_empty: bool = False) -> dict:
        """The text part of cond for `prompts` (what the sampler passes)."""
        tokens, mask, pooled = self.text_encoder.encode(prompts, allow_empty=allow_empty)
        return {**({"text_tokens": tokens, "text_mask": mask} if self.use_tokens else {}),
                **({"text_pooled": pooled} if self.use_pooled else {})}

    def forward(self, x, c_noise, cond=None):
        if cond is not None and TEXT_IDS in cond:
            cond = {k: v for k, v in cond.items() if k != TEXT_IDS} | self.text_cond(cond[TEXT_IDS])
        return self.net(x, c_noise, cond)


def build_network(config) -> nn.Module:
    """The network of a run config; with text.encoder='trainable', wrapped with its encoder."""
    from noisecraft.models import build_model

    net = build_model(config.model, config.network)
    if config.text.encoder != "trainable":
        return net
    from noisecraft.text.trainable import CharTextEncoder

    t, c = config.text, config.conditioning
    return TextEncoderNet(net, CharTextEncoder(dim=t.dim, layers=t.layers, heads=t.heads, max_tokens=t.max_tokens),
                          c.text_tokens, c.text_pooled)


class Conditioner:
    """Builds each batch's cond from the dataset (see the module docstring); None for unconditional runs."""

    def __init__(self, config, dataset, net: nn.Module, device="cpu", progress: bool = True):
        self.p = config.conditioning.cond_dropout
        self.num_classes = getattr(config.network, "num_classes", 0)
        self.labels = self._labels(dataset, device)
        self.table = self.rows = self.ids = None
        self.text = config.text.encoder != "none"
        if self.text:
            if dataset.captions is None:
                raise DataError(f"text.encoder={config.text.encoder!r} needs captions, but dataset "
                                f"{dataset.name!r} has none; use a captioned dataset (glyphs, scenes, emoji)")
            if config.text.encoder == "trainable":
                encoder = net.text_encoder
                self.ids = encoder.token_ids(list(dataset.captions)).to(device)  # (N, T)
                self.null_ids = encoder.token_ids([""]).to(device)[0]
                self.null_ids = torch.nn.functional.pad(self.null_ids, (0, self.ids.shape[1] - 1))  # (T,)
            else:
                self._cached_table(config, dataset, device, progress)
        self.c = config.conditioning
        self.layout = _LayoutTable(config, dataset, device) if config.conditioning.layout else None

    def _labels(self, dataset, device):
        if self.num_classes == 0:
            return None
        if dataset.labels is None:
            raise DataError(f"the network is class-conditional (num_classes={self.num_classes}) but dataset "
                            f"{dataset.name!r} has no labels")
        if dataset.num_classes != self.num_classes:
            raise ConfigError(f"the network's num_classes={self.num_classes} does not match dataset "
                              f"{dataset.name!r} with {dataset.num_classes} classes")
        return dataset.labels.to(device)

    def _cached_table(self, config, dataset, device, progress: bool) -> None:
        from noisecraft.text import build_text_encoder, cached_caption_table

        encoder = build_text_encoder(config.text)
        table = cached_caption_table(encoder, dataset.captions, config.text.cache_dir, progress=progress)
        self.table, self.rows = table.to(device), table.rows(dataset.captions).to(device)

    def __call__(self, idx: torch.Tensor, gen: torch.Generator) -> dict | None:
        if self.labels is None and not self.text:
            return None
        drop = torch.zeros(len(idx), dtype=torch.bool)
        if self.p > 0:
            drop = torch.rand(len(idx), generator=gen) < self.p  # one draw per sample, from the step's generator
        drop = drop.to(idx.device)
        cond = {}
        if self.labels is not None:
            cond["class_labels"] = torch.where(drop, self.num_classes, self.labels[idx])
        if self.ids is not None:
            cond[TEXT_IDS] = torch.where(drop[:, None], self.null_ids, self.ids[idx])
        elif self.table is not None:
            rows = torch.where(drop, 0, self.rows[idx])  # row 0: the empty prompt
            if self.c.text_tokens:
                cond["text_tokens"], cond["text_mask"] = self.table.tokens[rows], self.table.mask[rows]
            if self.c.text_pooled:
                cond["text_pooled"] = self.table.pooled[rows]
        if self.layout is not None:
            cond["layout"] = self.layout(idx, drop)
        return cond


class _LayoutTable:
    """Per-item grounding of a layout-conditioned run (noisecraft.text.layout): the dataset's boxes, and the
    chunk / object-phrase encodings of its distinct captions. Called with a batch's indices and its condition
    dropout, it paints the ground-truth boxes (dropped samples: the zero map)."""

    def __init__(self, config, dataset, device) -> None:
        from noisecraft.text.layout import ChunkEncoder, base_text_encoder, dataset_boxes, structure_key

        if dataset.captions is None:
            raise DataError(f"conditioning.layout needs captions, but dataset {dataset.name!r} has none")
        boxes = dataset_boxes(dataset)  # (N, K, 4)
        unique = list(dict.fromkeys(dataset.captions))
        index = {c: i for i, c in enumerate(unique)}
        chunks = ChunkEncoder(base_text_encoder(config.text), boxes.shape[1], config.text.phrase_separators)
        self.v, self.sep, objects, named = chunks.encode(unique)  # (U, J, P), (U, J), (U, K, P), (U, K)
        rows = torch.tensor([index[c] for c in dataset.captions])  # (N,) distinct-caption row of each item
        self.structure = [structure_key(c, chunks.J, chunks.separators) for c in unique]  # per distinct caption
        self.size = tuple(dataset.images.shape[2:])
        # on the training device: per item its row, boxes and which object slots it has; per caption the embeddings
        self.rows, self.boxes, self.objects = rows.to(device), boxes.to(device), objects.to(device)
        self.present = (named[rows] & ~torch.isnan(boxes).any(-1)).to(device)  # (N, K)

    def __call__(self, idx: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        from noisecraft.text.layout import layout_map

        valid = self.present[idx] & ~drop[:, None]  # (B, K): a dropped sample paints nothing
        return layout_map(self.boxes[idx], self.objects[self.rows[idx]], valid, self.size)

    def fit_planner(self, config, out_dir, progress: bool) -> dict:
        """Train the run's layout planner on (caption chunks -> boxes) of every item and save it in out_dir."""
        from noisecraft.text.layout import residual_bank, save_planner, train_planner

        rows, boxes = self.rows.cpu(), self.boxes.cpu()
        v, sep = self.v[rows], self.sep[rows]
        planner, info = train_planner(v, sep, boxes, steps=config.conditioning.layout_planner_steps,
                                      seed=config.train.seed, progress=progress)
        bank = residual_bank(planner, v, sep, boxes, [self.structure[r] for r in rows.tolist()],
                             seed=config.train.seed)
        save_planner(planner, out_dir, info, bank)
        return info
