"""Evaluation during training: sample with the EMA denoiser every N steps, score against cached reference
statistics, log, plot, and say whether this is the best model so far.

    evaluator = TrainingEvaluator(config, out_dir, metrics=("fd", "kid"), every_n_steps=1000,
                                  num_samples=1000, features="mnist")
    ...
    result = evaluator.maybe_evaluate(step, ema_denoiser, data_shape)   # None unless step % 1000 == 0
    if result is not None and result["is_best"]:
        ...  # keep the best/ checkpoint

In a noisecraft training run this is an after-step callback, `EvaluationCallback`, built from the run's
`eval` section; it also keeps the best checkpoint in out_dir/best/.

Each evaluation appends one JSON line to out_dir/metrics.jsonl (step, metrics, num_samples, features,
seconds), re-draws out_dir/metrics.png (each metric against step), and returns that record plus
"is_best". The first metric decides "best" (PRIMARY gives the value used and LOWER_IS_BETTER its
direction). Sample i always uses seed + i, so successive evaluations see the same noise and the curve
shows the model changing, not the noise. Samples are clipped to [-1, 1] (NaN -> 0) as when saved as
pictures, so an early, still wild model gets poor scores rather than an error. Records at or after the
evaluated step are dropped first, so a resumed run rewrites its history consistently. A latent diffusion run
(data.autoencoder set) has its samples decoded through its autoencoder first, and they are scored against the
reference statistics of the pixel dataset.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from noisecraft.eval.common import EvalError
from noisecraft.eval.evaluation import default_features, parse_metrics, score
from noisecraft.eval.metrics import LOWER_IS_BETTER
from noisecraft.samplers import resolve_alias
from noisecraft.training.state import keep_best

PRIMARY = {"fd": "fd", "fd_inf": "fd_inf", "kid": "kid", "pr": "precision", "is": "is", "mem": "near_copies"}
METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "metrics.png"


def _as_config(config):
    from noisecraft.config import from_dict
    from noisecraft.runconfig import RunConfig

    if isinstance(config, RunConfig):
        return config
    if isinstance(config, dict):
        return from_dict(RunConfig, config, "config")
    raise EvalError(f"config must be a RunConfig or its dict, got {type(config).__name__}")




class TrainingEvaluator:
    """Periodic evaluation of a training run (see the module docstring).

    config:          the run's RunConfig, or its dict (config.json / checkpoint metadata)
    out_dir:         the run directory: metrics.jsonl and metrics.png are written there
    metrics:         metric names from noisecraft.eval.METRICS (default ("fd",)); the first decides "best"
    every_n_steps:   evaluate at steps that are positive multiples of this (default 1000)
    num_samples:     images generated per evaluation (default 1000; FD needs more than the feature dim)
    features:        feature network name (default: the dataset's own classifier, else "effnet")
    seed:            sample i uses the generator seeded seed + i (default 0)
    sampler, steps, step_schedule: the sampling plan (default: the config's `sample` section)
    batch_size:      images per sampling / feature batch (default 64)
    device:          torch device for sampling and features (default "cpu")
    inception_weights: weights file, for features="inception" only
    """

    def __init__(self, config, out_dir, metrics=("fd",), every_n_steps: int = 1000, num_samples: int = 1000,
                 features: str | None = None, *, seed: int = 0, sampler: str | None = None,
                 steps: int | None = None, step_schedule: str | None = None, batch_size: int = 64,
                 device: str = "cpu", inception_weights=None):
        self.config = _as_config(config)
        if self.config.model not in ("unet", "dit", "mmdit"):
            raise EvalError(f"evaluation during training needs image data; run {self.config.name!r} trains a "
                            f"{self.config.model!r} on {self.config.data.dataset!r}")
        self.metrics = parse_metrics(metrics)
        for name, v in (("every_n_steps", every_n_steps), ("num_samples", num_samples), ("batch_size", batch_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise EvalError(f"{name} must be an integer >= 1, got {v!r}")
        self.out_dir = Path(out_dir)
        self.every_n_steps, self.num_samples, self.seed = every_n_steps, num_samples, seed
        self.features = features or default_features(self.config.data.dataset)
        s = self.config.sample
        self.sampler, implied = resolve_alias(sampler or s.sampler)
        self.steps, self.step_schedule = steps or s.steps, step_schedule or implied or s.step_schedule
        self.batch_size, self.device, self.inception_weights = batch_size, device, inception_weights
        self.primary = PRIMARY[self.metrics[0]]
        self._extractor = self._reference = self._autoencoder = None

    # ------------------------------------------------------------------------------------------ API
    def maybe_evaluate(self, step: int, denoiser_ema, data_shape) -> dict | None:
        """Evaluate when `step` is a positive multiple of every_n_steps; else None (and no work)."""
        if step <= 0 or step % self.every_n_steps:
            return None
        return self.evaluate(step, denoiser_ema, data_shape)

    def evaluate(self, step: int, denoiser, data_shape) -> dict:
        """Sample, score, log and plot now. `denoiser` is a noisecraft Denoiser (or the bare network of
        this config, which is wrapped with the config's schedule and prediction)."""
        t0 = time.monotonic()
        images = self._generate(denoiser, tuple(data_shape))
        record = {"step": int(step), **self._score(images), "num_samples": self.num_samples,
                  "features": self.features, "seconds": round(time.monotonic() - t0, 2)}
        history = [r for r in self.history() if r["step"] < step]
        record["is_best"] = self._is_best(record, history)
        self._write(history + [record])
        return record

    def history(self) -> list[dict]:
        """The records in out_dir/metrics.jsonl, oldest first (empty when there is none)."""
        path = self.out_dir / METRICS_FILE
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    @property
    def best(self) -> dict | None:
        """The best record so far by the primary metric, or None."""
        records = [r for r in self.history() if r.get(self.primary) is not None]
        if not records:
            return None
        sign = 1 if LOWER_IS_BETTER[self.primary] else -1
        return min(records, key=lambda r: sign * r[self.primary])

    # -------------------------------------------------------------------------------------- helpers
    def _denoiser(self, denoiser):
        if hasattr(denoiser, "schedule"):
            return denoiser
        from noisecraft.build import build_denoiser

        return build_denoiser(self.config, denoiser)

    def _generate(self, denoiser, data_shape):
        """num_samples unconditional samples (every condition at its null value) through the one generation path,
        `noisecraft.pipelines.generate`, decoded for a latent run."""
        import torch

        from noisecraft.conditions import conditions_for
        from noisecraft.pipelines import Request, Run, generate
        from noisecraft.pipelines.run import image_shape, run_autoencoder

        den = self._denoiser(denoiser)
        was_training = den.training
        den.eval()
        try:
            if self._autoencoder is None:  # a latent run: its samples are decoded and scored as images
                self._autoencoder = run_autoencoder(self.config, self.out_dir, self.device)
            conditions = conditions_for(self.config)
            conditions.load(self.out_dir, den.net, self.device, tuple(data_shape),
                            image_shape(data_shape, self._autoencoder))
            run = Run(den, self.config, tuple(data_shape), conditions, autoencoder=self._autoencoder)
            request = Request(sampler=self.sampler, steps=self.steps, step_schedule=self.step_schedule, seed=self.seed,
                              num=self.num_samples, batch_size=self.batch_size)
            with torch.no_grad():
                x = run.to_images(generate(run, request).samples.nan_to_num(0.0), batch_size=self.batch_size)
            return x.nan_to_num(0.0).clamp(-1.0, 1.0)  # as saved pictures: clipped to the pixel range
        finally:
            den.train(was_training)

    def _score(self, images) -> dict:
        from noisecraft.eval.evaluation import memorization_metrics

        ext, ref = self._load()
        feats, logits = ext.features_and_logits(images)
        out = score(feats, ref, self.metrics, gen_logits=logits)
        if "mem" in self.metrics:
            d = self.config.data
            out.update(memorization_metrics(images, feats, ref, d.dataset, d.split, d.root, d.resolution, d.channels,
                                     d.limit, None))
        return out

    def _load(self):
        if self._reference is None:
            from noisecraft.eval.features import get_extractor
            from noisecraft.eval.reference import load_reference

            d = self.config.data
            self._extractor = get_extractor(self.features, device=self.device, batch_size=self.batch_size,
                                            weights=self.inception_weights if self.features == "inception" else None)
            self._reference = load_reference(d.dataset, self._extractor, split=d.split, root=d.root,
                                             resolution=d.resolution, channels=d.channels, limit=d.limit)
        return self._extractor, self._reference

    def _is_best(self, record: dict, history: list[dict]) -> bool:
        value = record.get(self.primary)
        previous = [r[self.primary] for r in history if r.get(self.primary) is not None]
        if value is None:
            return False
        if not previous:
            return True
        return value < min(previous) if LOWER_IS_BETTER[self.primary] else value > max(previous)

    def _write(self, records: list[dict]) -> None:
        from noisecraft.files import atomic_write_bytes

        self.out_dir.mkdir(parents=True, exist_ok=True)
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
        atomic_write_bytes(self.out_dir / METRICS_FILE, text.encode())
        plot_metrics(records, self.out_dir / PLOT_FILE, title=f"{self.config.name}: {self.features} features")


class EvaluationCallback:
    """The after-step callback of a training run that evaluates it: every `every` steps the EMA model is
    scored by `evaluator` (rank 0; None on the other ranks, which wait for its verdict), and when it is the
    best so far the run's checkpoint is saved and copied to out_dir/best/.

    evaluator:  the TrainingEvaluator on rank 0, None elsewhere
    every:      evaluate at the positive multiples of this step count (the config's eval.every)
    """

    def __init__(self, evaluator: TrainingEvaluator | None, every: int):
        self.evaluator, self.every = evaluator, every

    @classmethod
    def from_config(cls, config, out_dir, *, main: bool = True) -> EvaluationCallback:
        """The callback of a RunConfig's `eval` section (eval.every must be set); the evaluator only on `main`."""
        e = config.eval
        evaluator = TrainingEvaluator(config, out_dir, metrics=e.metrics, every_n_steps=e.every,
                                      num_samples=e.num_samples, features=e.features) if main else None
        return cls(evaluator, e.every)

    def __call__(self, trainer) -> dict | None:
        """Evaluate `trainer` (a noisecraft Trainer) after its step `trainer.step` if due; the record or None."""
        from noisecraft.build import build_denoiser

        step, dist = trainer.step, trainer.dist
        if step <= 0 or step % self.every:
            return None
        ema = trainer.plain_ema()  # (collective under FSDP)
        result = None
        if dist.is_main:
            denoiser = build_denoiser(trainer.config, ema).eval()
            result = self.evaluator.maybe_evaluate(step, denoiser, trainer.data.data_shape)
        result = dist.broadcast(result)
        if result is not None and result["is_best"]:
            path = trainer.save()  # (collective)
            if dist.is_main:
                keep_best(trainer.out_dir, path)
        return result


def plot_metrics(records: list[dict], path, *, title: str = "") -> None:
    """One panel per metric (value against step); the best value of each is marked."""
    from noisecraft.viz import pyplot

    keys = [k for k in ("fd", "fd_inf", "kid", "precision", "recall", "is", "near_copies")
            if any(k in r for r in records)]
    if not keys:
        return
    plt = pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3), squeeze=False)
    for ax, key in zip(axes[0], keys):
        pts = [(r["step"], r[key]) for r in records if r.get(key) is not None]
        steps, values = zip(*pts)
        ax.plot(steps, values, marker="o", ms=3)
        best = (min if LOWER_IS_BETTER[key] else max)(pts, key=lambda p: p[1])
        ax.plot(*best, marker="*", ms=10, color="tab:red")
        ax.set_title(f"{key} ({'lower' if LOWER_IS_BETTER[key] else 'higher'} is better)", fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
