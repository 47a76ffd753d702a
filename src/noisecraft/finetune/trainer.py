"""The fine-tuning loop: LoRA, DreamBooth and textual inversion on a loaded base run, built from the training
loop's pieces (batches.py: per-step seeds and batch order; precision.py: the guarded update; progress.py: bar,
time limit and Ctrl-C; files.py: atomic writes).

    Finetuner(FinetuneConfig(method="lora", base="runs/g", images="concept/", prompt="a sks glyph"),
              "style.safetensors").run()

Methods (the loss is always the base run's own denoising loss and weighting, `core.losses.denoising_loss`):

- lora: LoRA layers (Hu et al. 2021, eq. 3; `noisecraft.finetune.lora`) on the base network, trained on the
  concept images (with `prompt` as their condition when the base reads text).
- dreambooth (Ruiz et al. 2023, "DreamBooth", eq. 2): the instance loss on the concept images with the identifier
  prompt ("a sks glyph") plus lambda times the class-specific prior-preservation loss on images the frozen base
  itself drew for the class prompt ("a glyph"),

      E[ w_t || D(x + sigma eps, c_id) - x ||^2 ] + lambda E[ w_t' || D(x_pr + sigma' eps', c_pr) - x_pr ||^2 ]

  trained through LoRA (default) or on every weight (`full=True`: the output is a run directory).
- textual-inversion (Gal et al. 2022, eq. 2; `noisecraft.finetune.embeddings`): only the new token's rows.

Files: OUT is the adapter (LoRA / embedding .safetensors, or the run directory of a full DreamBooth) and OUT's
working folder `OUT.finetune/` holds state.safetensors (the trained tensors, the optimiser, the step; written
atomically with a digest), config.json, log.jsonl, class_images.safetensors (the prior images) and samples.png (a
grid from the current weights every `sample_every` steps). Every random draw of step s comes from generators
seeded by (seed, s), so `resume=True` continues exactly where an uninterrupted run would be.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from noisecraft.errors import CheckpointError, ConfigError, NoisecraftError
from noisecraft.finetune.lora import LoRAConfig

METHODS = ("lora", "dreambooth", "textual-inversion")
STATE_FILE, STATE_FORMAT, STATE_VERSION = "state.safetensors", "noisecraft.finetune", "1"
CLASS_FILE, CLASS_FORMAT = "class_images.safetensors", "noisecraft.class-images"
_STATE_KEYS = {"format", "version", "config", "state", "optim_groups", "sha256"}
# fields a resumed run takes from the request: when to stop, save and draw grids, and whether activations are
# recomputed (not what is computed)
_STOPPING = ("steps", "minutes", "checkpoint_every", "sample_every", "sample_num", "grad_checkpointing")


@dataclass(frozen=True)
class FinetuneConfig:
    """One fine-tuning run.

    method:          lora, dreambooth or textual-inversion
    base:            the base run (run directory, checkpoint, diffusers folder)
    images:          the folder of concept images (5-20 of one size)
    prompt:          the prompt of the concept images: the identifier prompt ("a sks glyph"); textual inversion:
                     a prompt containing `token`; None for a base without text (LoRA only)
    class_prompt:    DreamBooth: the class prompt whose images the base draws for prior preservation; None = none
    prior_weight:    lambda of the prior-preservation loss
    class_images:    how many prior images the base draws (seeds seed .. seed + n - 1)
    full:            DreamBooth on every weight instead of LoRA (the output is a run directory)
    lora:            rank, alpha, dropout and targets of the LoRA (lora, dreambooth)
    token:           textual inversion: the new placeholder word
    init_word:       textual inversion: the word whose embedding initialises the token
    vectors:         textual inversion: embedding vectors per token
    steps, minutes:  stop after this many steps or this much wall time, whichever comes first
    lr:              AdamW learning rate; None = 1e-3 (LoRA), 5e-3 (textual inversion), 1e-4 (full DreamBooth)
    batch_size:      concept images per step (at most the number of images); as many prior images
    grad_clip:       clip the gradient's global norm (None = off)
    grad_checkpointing: recompute each network block's activations in the backward pass instead of keeping them
                     (Chen et al. 2016; `noisecraft.training.distributed.checkpoint_blocks`): the same loss and
                     gradients, less memory, more compute
    seed:            every random draw of step s comes from (seed, s)
    checkpoint_every, sample_every, sample_num, sample_steps: state and adapter written every so many steps;
                     a grid of sample_num images (sample_steps sampler steps, None = the run's) every so many
    """

    method: str = "lora"
    base: str = ""
    images: str = ""
    prompt: str | None = None
    class_prompt: str | None = None
    prior_weight: float = 1.0
    class_images: int = 32
    full: bool = False
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    token: str = "<sks>"
    init_word: str = "glyph"
    vectors: int = 1
    steps: int = 1_000_000
    minutes: float | None = None
    lr: float | None = None
    batch_size: int = 4
    grad_clip: float | None = 1.0
    grad_checkpointing: bool = False
    seed: int = 0
    checkpoint_every: int = 50
    sample_every: int = 100
    sample_num: int = 16
    sample_steps: int | None = None

    def __post_init__(self):
        if self.method not in METHODS:
            raise ConfigError(f"unknown fine-tuning method {self.method!r}; allowed: {', '.join(METHODS)}")
        for name in ("steps", "batch_size", "checkpoint_every", "sample_every", "sample_num", "class_images"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"finetune {name} must be an integer >= 1, got {value!r}")
        if self.minutes is not None and not self.minutes > 0:
            raise ConfigError(f"finetune minutes must be > 0, got {self.minutes!r}")
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"finetune lr must be > 0, got {self.lr!r}")
        if self.method == "textual-inversion" and (self.prompt is None or self.token not in self.prompt.split()):
            raise ConfigError(f"textual inversion needs a --prompt containing the placeholder token {self.token!r} "
                              f"as a word, e.g. 'a {self.token} glyph'")
        if self.method == "dreambooth" and self.prompt is None:
            raise ConfigError("DreamBooth needs the identifier --prompt, e.g. 'a sks glyph'")
        if self.class_prompt is not None and self.method != "dreambooth":
            raise ConfigError(f"--class-prompt (prior preservation) is DreamBooth's; method is {self.method!r}")
        if self.full and self.method != "dreambooth":
            raise ConfigError("full fine-tuning (--full) is a DreamBooth option; LoRA and textual inversion train "
                              "only their own tensors")

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return float(self.lr)
        return 5e-3 if self.method == "textual-inversion" else 1e-4 if self.full else 1e-3

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FinetuneConfig:
        d = dict(d)
        lora = d.pop("lora", None) or {}
        return cls(**d, lora=LoRAConfig(**{**lora, "targets": tuple(lora.get("targets", ("attention",)))}))


def workdir(out) -> Path:
    """The working folder of an output: OUT.finetune/ beside it."""
    out = Path(out)
    return out.with_name(out.name + ".finetune")


class Finetuner:
    """A fine-tuning run of `config` writing the adapter `out` (module docstring); `run`: the loaded base (else
    loaded from config.base)."""

    def __init__(self, config: FinetuneConfig, out, *, resume: bool = False, device: str = "cpu",
                 progress: bool = True, run=None):
        from noisecraft.training.batches import BatchOrder

        self.out, self.work, self.progress = Path(out), workdir(out), progress
        saved = self._open_state() if resume else None
        self.config = config if saved is None else self._resumed_config(saved, config)
        c = self.config
        self.base = run if run is not None else self._load_base(c.base, device)  # the base Run
        self.device = self.base.device
        self.images = self._concept_images()
        self.batch = min(c.batch_size, len(self.images))
        self.prior = self._class_images() if c.class_prompt is not None else None
        self._setup_method()
        self.holder = nn.Module()  # the trained tensors, for the guarded update
        self.holder.params = nn.ParameterList(self.trainable.values())
        self.optimizer = torch.optim.AdamW(list(self.trainable.values()), lr=c.learning_rate, weight_decay=0.0)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=False)
        self.order = BatchOrder(len(self.images), self.batch, c.seed)
        self.prior_order = None if self.prior is None else BatchOrder(len(self.prior), self.batch, c.seed + 1)
        self.step, self.bad_steps, self.data_hash, self.log = 0, 0, "", []
        if saved is not None:
            self._restore(saved)

    # ------------------------------------------------------------------------------------------ set-up
    @staticmethod
    def _load_base(path: str, device: str):
        from noisecraft.pipelines import load

        if not path:
            raise ConfigError("no base run given (--base RUN)")
        return load(path, device=device)

    def _concept_images(self) -> torch.Tensor:
        """The concept images at the base's image size, as latents for a latent run."""
        from noisecraft.finetune.data import concept_images
        from noisecraft.pipelines.run import image_shape

        images, note = concept_images(self.config.images, image_shape(self.base.data_shape, self.base.autoencoder))
        if note and self.progress:
            print(f"note: {note}")
        if self.base.autoencoder is not None:
            from noisecraft.autoencoder.latents import encode_images

            images = encode_images(self.base.autoencoder, images, progress=False)
        return images.to(self.device)

    def _class_images(self) -> torch.Tensor:
        """The prior images: drawn by the frozen base for the class prompt once, kept in OUT.finetune/."""
        from noisecraft.files import read_verified, write_verified
        from noisecraft.pipelines import Request, generate

        c, path = self.config, self.work / CLASS_FILE
        key = json.dumps([c.base, c.class_prompt, c.class_images, c.seed, c.sample_steps])
        if path.is_file():
            meta, tensors = read_verified(path, CLASS_FORMAT, "1", {"format", "version", "key", "sha256"},
                                          "class-image file")
            if meta.get("key") == key:
                return tensors["samples"].to(self.device)
        if self.progress:
            print(f"drawing {c.class_images} prior images of {c.class_prompt!r} with the base model")
        result = generate(self.base, Request(prompts=(c.class_prompt,), num=c.class_images, seed=c.seed,
                                            steps=c.sample_steps))
        self.work.mkdir(parents=True, exist_ok=True)
        write_verified(path, {"samples": result.samples}, {"format": CLASS_FORMAT, "version": "1", "key": key})
        return result.samples.to(self.device)

    def _setup_method(self) -> None:
        """The trained tensors of the method: LoRA layers, every weight, or the new token's rows."""
        from noisecraft.finetune.lora import add_lora, base_hash, network_of

        c = self.config
        self.component, self.net = network_of(self.base)
        self.base_hash = base_hash(self.net)
        self.embedding = self.layers = None
        if c.method == "textual-inversion":
            from noisecraft.finetune.embeddings import placeholder, text_parts

            self.embedding = placeholder(self.base, c.token, c.init_word, c.vectors)
            self.text_condition = text_parts(self.base)[2]
            self.trainable = {"embedding.new": self.embedding.new}
        elif c.full:
            self.net.requires_grad_(True)
            self.trainable = dict(self.net.named_parameters())
        else:
            from noisecraft.training.batches import step_seed

            with torch.random.fork_rng(devices=[]):  # A's random initialisation from the seed alone
                torch.manual_seed(step_seed(c.seed, 0, 2))
                self.layers = add_lora(self.net, c.lora)
            self.trainable = {n: p for n, p in self.net.named_parameters() if p.requires_grad}
        if c.grad_checkpointing:
            from noisecraft.training.distributed import checkpoint_blocks

            checkpoint_blocks(self.net)
        self.cond = None if c.method == "textual-inversion" else self._cond(c.prompt)
        self.prior_cond = None if self.prior is None else self._cond(c.class_prompt)

    def _cond(self, prompt: str | None) -> dict | None:
        """The (batch 1) cond of a prompt, from the run's own conditions (None: an unconditional base)."""
        from noisecraft.pipelines import Request
        from noisecraft.pipelines.generate import check_request

        if prompt is None:
            return None
        request = Request(prompts=(prompt,))
        check_request(self.base, request)
        cond, _ = self.base.conditions.request(request, 1, None)
        return cond

    # -------------------------------------------------------------------------------------------- one step
    def draw(self, step: int):
        """(x0, sigma, noise) of step's concept batch and of its prior batch (or None), from (seed, step)."""
        from noisecraft.training.batches import step_seed

        gen = torch.Generator().manual_seed(step_seed(self.config.seed, step, 0))
        schedule = self.base.denoiser.schedule

        def part(images, order):
            x0 = images[order(step).to(self.device)]
            sigma = schedule.sample_sigma(x0.shape[0], gen)
            return x0, sigma, torch.randn(x0.shape, generator=gen).to(self.device)

        instance = part(self.images, self.order)
        return instance, None if self.prior is None else part(self.prior, self.prior_order)

    def _loss(self, x0, sigma, noise, cond) -> torch.Tensor:
        from noisecraft.core.losses import denoising_loss

        d = self.base.config.diffusion
        batched = None if cond is None else {k: v.expand(x0.shape[0], *v.shape[1:]) for k, v in cond.items()}
        return denoising_loss(self.base.denoiser, x0, sigma, noise, batched, weighting=d.weighting,
                              gamma=d.min_snr_gamma).float().mean()

    def loss(self, step: int) -> torch.Tensor:
        """The instance loss, plus prior_weight times the prior-preservation loss (DreamBooth eq. 2)."""
        from noisecraft.finetune.embeddings import differentiable_text_cond
        from noisecraft.training.batches import step_seed

        instance, prior = self.draw(step)
        torch.manual_seed(step_seed(self.config.seed, step, 1))  # LoRA / network dropout
        cond = self.cond
        if self.embedding is not None:
            cond = differentiable_text_cond(self.text_condition, [self.config.prompt])
        loss = self._loss(*instance, cond)
        if prior is not None:
            loss = loss + self.config.prior_weight * self._loss(*prior, self.prior_cond)
        return loss

    def train_step(self) -> float:
        from noisecraft.training.batches import chain_hash
        from noisecraft.training.precision import STEPPED, guarded_update, raise_if_diverged

        self.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(self.step)
        loss.backward()
        outcome = guarded_update(self.optimizer, self.scaler, self.holder, loss.detach(), self.config.grad_clip)
        if outcome != STEPPED:
            self.optimizer.zero_grad(set_to_none=True)
            self.bad_steps += 1
            raise_if_diverged(self.bad_steps, 20, step=self.step, out_dir=self.work, last=str(outcome),
                              hint="try a lower --lr")
        self.data_hash = chain_hash(self.data_hash, self.order(self.step))
        self.step += 1
        return float(loss.detach())

    # ------------------------------------------------------------------------------------------ the loop
    def run_loop(self) -> dict:
        """Train until steps or minutes; state, adapter and sample grid written periodically and at the end."""
        from noisecraft.files import atomic_write_json
        from noisecraft.training.progress import advance, deferred_interrupt, out_of_time, progress_bar, smoothed

        c = self.config
        self.work.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.work / "config.json", c.to_dict())
        start, smooth = time.monotonic(), None
        bar = progress_bar(c.steps, c.minutes, step=self.step, enabled=self.progress, desc=c.method)
        try:
            with deferred_interrupt() as interrupt:
                while self.step < c.steps and not out_of_time(start, c.minutes):
                    loss = self.train_step()
                    smooth = smoothed(smooth, loss)
                    self._after_step(loss, smooth, start)
                    advance(bar, self.step, start, c.minutes, smooth)
                    if interrupt["hit"]:
                        self.save()
                        raise KeyboardInterrupt
        finally:
            bar.close()
        self.save()
        self.sample_grid()
        return {"step": self.step, "loss": smooth, "bad_steps": self.bad_steps, "seconds": time.monotonic() - start,
                "out": str(self.out)}

    run = run_loop  # Finetuner(...).run(), as Trainer

    def _after_step(self, loss: float, smooth, start: float) -> None:
        c = self.config
        if self.step % 10 == 0 or self.step >= c.steps:
            self.log.append({"step": self.step, "loss": loss, "loss_smooth": smooth, "time": time.monotonic() - start})
        if self.step % c.checkpoint_every == 0:
            self.save()
        if self.step % c.sample_every == 0:
            self.sample_grid()

    def sample_grid(self) -> Path | None:
        """OUT.finetune/samples.png: sample_num images of the prompt from the current weights."""
        from noisecraft.pipelines import Request, generate
        from noisecraft.viz import save_grid

        c = self.config
        self.net.eval()
        request = Request(prompts=None if c.prompt is None else (c.prompt,), num=c.sample_num, seed=c.seed,
                          steps=c.sample_steps)
        with torch.no_grad():
            result = generate(self.base, request)
        path = self.work / "samples.png"
        save_grid(result.images, path, parameters=result.infotext(0), info={**result.parameters, "step": self.step})
        return path

    # ------------------------------------------------------------------------------------------ saving
    def info(self) -> dict:
        """The metadata every output carries: method, base, base model hash, steps, prompts."""
        c = self.config
        return {"method": c.method, "base": c.base, "base_hash": self.base_hash, "steps": self.step,
                "prompt": c.prompt, "class_prompt": c.class_prompt, "seed": c.seed}

    def save(self) -> Path:
        """The state (for --resume), the log, then the output itself, each written atomically."""
        from noisecraft.checkpoint import flatten_optimizer
        from noisecraft.files import atomic_write_bytes, write_verified

        optim, groups = flatten_optimizer(self.optimizer.state_dict())
        tensors = {f"param.{k}": v.detach() for k, v in self.trainable.items()} | optim
        state = {"step": self.step, "bad_steps": self.bad_steps, "data_hash": self.data_hash,
                 "rng": {"scheme": "per-step SeedSequence(seed, step)", "seed": self.config.seed}}
        self.work.mkdir(parents=True, exist_ok=True)
        write_verified(self.work / STATE_FILE, tensors,
                       {"format": STATE_FORMAT, "version": STATE_VERSION, "config": json.dumps(self.config.to_dict()),
                        "state": json.dumps(state), "optim_groups": json.dumps(groups)})
        atomic_write_bytes(self.work / "log.jsonl", "".join(json.dumps(r) + "\n" for r in self.log).encode())
        return self._write_output()

    def _write_output(self) -> Path:
        from noisecraft.finetune.embeddings import save_embedding
        from noisecraft.finetune.lora import lora_state, save_lora

        c = self.config
        if self.embedding is not None:
            return save_embedding(self.out, c.token, self.embedding.new,
                                  {**self.info(), "init_word": c.init_word})
        if c.full:
            return self._write_run()
        return save_lora(self.out, lora_state(self.net), c.lora, layers=self.layers, component=self.component,
                         info=self.info())

    def _write_run(self) -> Path:
        """Full DreamBooth: OUT as a run directory (our checkpoint format; its weights as EMA and raw)."""
        from noisecraft.checkpoint import save_checkpoint
        from noisecraft.config import to_dict
        from noisecraft.files import atomic_write_json

        if self.base.path is None or type(self.net).__module__.startswith("diffusers."):
            raise NoisecraftError("full DreamBooth writes a noisecraft run and needs a noisecraft base run; for a "
                                  "diffusers model use DreamBooth with LoRA (leave out --full)")
        self.out.mkdir(parents=True, exist_ok=True)
        weights = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
        config = to_dict(self.base.config)
        state = {"step": self.base.step + self.step, "data_shape": list(self.base.data_shape),
                 "finetune": self.info()}
        atomic_write_json(self.out / "config.json", config)
        return save_checkpoint(self.out, config=config, state=state, model=weights,
                               ema={k: v.clone() for k, v in weights.items()},
                               optimizer={"state": {}, "param_groups": []})

    # ----------------------------------------------------------------------------------------- resuming
    def _open_state(self):
        from noisecraft.files import read_verified

        path = self.work / STATE_FILE
        if not path.is_file():
            raise CheckpointError(f"cannot resume: {path} does not exist (no fine-tune was started with this --out)")
        meta, tensors = read_verified(path, STATE_FORMAT, STATE_VERSION, _STATE_KEYS, "fine-tuning state")
        return meta, tensors

    @staticmethod
    def _resumed_config(saved, requested: FinetuneConfig) -> FinetuneConfig:
        """The saved config with the requested stopping criteria; any other difference is an error."""
        old = FinetuneConfig.from_dict(json.loads(saved[0]["config"]))
        stopping = {k: getattr(requested, k) for k in _STOPPING}
        differ = [k for k, v in replace(requested, **{k: getattr(old, k) for k in _STOPPING}).to_dict().items()
                  if v != old.to_dict()[k]]
        if differ:
            raise ConfigError(f"cannot resume: the fine-tune was started with other {', '.join(differ)} "
                              f"({', '.join(f'{k}={old.to_dict()[k]!r}' for k in differ)}); only "
                              f"{', '.join(_STOPPING)} may change")
        return replace(old, **stopping)

    def _restore(self, saved) -> None:
        from noisecraft.checkpoint import unflatten_optimizer

        meta, tensors = saved
        state = json.loads(meta["state"])
        params = {k[len("param."):]: v for k, v in tensors.items() if k.startswith("param.")}
        missing = sorted(set(self.trainable) ^ set(params))
        if missing:
            raise CheckpointError(f"cannot resume: the saved state does not fit this fine-tune ({missing[:4]})")
        with torch.no_grad():
            for name, p in self.trainable.items():
                p.copy_(params[name])
        optim = {k: v for k, v in tensors.items() if not k.startswith("param.")}
        self.optimizer.load_state_dict(unflatten_optimizer(optim, json.loads(meta["optim_groups"])))
        self.step, self.bad_steps, self.data_hash = int(state["step"]), int(state["bad_steps"]), state["data_hash"]
        path = self.work / "log.jsonl"
        if path.is_file():
            self.log = [r for r in (json.loads(x) for x in path.read_text().splitlines() if x.strip())
                        if r["step"] <= self.step]
