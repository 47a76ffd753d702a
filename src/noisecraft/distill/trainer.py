"""`Distiller`: a few-step student trained from a run, with the training loop's guarantees.

    config = student_config("runs/m", "cd", minutes=10)     # the teacher's config + a `distill` section
    Distiller(config, "runs/m-cd").run()                     # --resume: Distiller(..., resume=True)

The Distiller is the diffusion `Trainer` (training/trainer.py) with the denoising loss replaced by the method's
objective (`distill.objectives`): the same atomic checkpoints (the student's weights, their EMA for sampling, the
optimiser and, for cd / lcm, the target network theta^- as the checkpoint's post-hoc slot "0"), the same
randomness derived from (seed, step) so that a resumed run is exact, the same progress bar, time limit,
evaluation callback and data-parallel gradient averaging. The teacher is a frozen run loaded with its EMA
weights; the student starts from the teacher's weights (ct: from a fresh initialisation: consistency training
needs no teacher), with any input the teacher lacks (an LCM student's guidance-scale embedding) zero-initialised,
so that the student starts as the teacher.

Per step s, all random draws come from the generator seeded (seed, s): the batch (as the trainer draws it),
then z ~ N(0, I) and the method's levels (cd / lcm: n ~ U{0..N-1-k}; ct: n from the iCT lognormal; ect: t
lognormal; reflow: the pair batch and sigma; scm: t = arctan(e^tau / sigma_d)), then w ~ U[w_lo, w_hi] (lcm).

scm (sCD, Lu & Song 2024) has no target network: F^- is the student itself under stop-gradient; its time tangent
is a JVP where the network has forward-mode rules (distill.scm_tangent=auto falls back to the central difference
once, for good, where it has not, e.g. the channels-last U-Net's group norm on the CPU).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from noisecraft.checkpoint import CHECKPOINT_FILE, save_checkpoint
from noisecraft.config import to_dict
from noisecraft.core.denoiser import Denoiser
from noisecraft.distill import objectives as O
from noisecraft.errors import ConfigError, NoisecraftError
from noisecraft.training.batches import BatchOrder, step_seed
from noisecraft.training.distributed import micro_rows, micro_slice
from noisecraft.training.ema import ema_copy, update_ema
from noisecraft.training.precision import autocast
from noisecraft.training.state import full_state, write_log
from noisecraft.training.trainer import Trainer

PAIRS_FILE = "reflow_pairs.safetensors"


class Distiller(Trainer):
    """Train the student `config` (a RunConfig whose `distill` section is set) into out_dir (module docstring)."""

    def __init__(self, config, out_dir, *, resume: bool = False, device: str = "cpu", progress: bool = True):
        if getattr(config, "distill", None) is None:
            raise ConfigError("Distiller needs a student config (config.distill set; see distill.student_config)")
        if config.train.fsdp or config.train.phema_sigma_rels:
            raise ConfigError("noisecraft distill runs without train.fsdp and train.phema_sigma_rels (its checkpoint "
                              "keeps the target network in the post-hoc slot)")
        super().__init__(config, out_dir, resume=resume, device=device, progress=progress)
        if self.method == "reflow":  # the batches index the teacher's ODE pairs
            self.order = BatchOrder(len(self.pairs["z"]), self.config.train.batch_size, self.config.train.seed)

    # ----------------------------------------------------------------------------------------- set-up
    @property
    def method(self) -> str:
        return self.config.distill.method

    def _build(self) -> None:
        super()._build()
        d = self.config.distill
        self.teacher = None
        if d.method != "ct":
            from noisecraft.pipelines.run import load_checkpoint_run

            self.teacher_run = load_checkpoint_run(d.teacher, device=str(self.device))
            self.teacher = self.teacher_run.denoiser
            init_from_teacher(self.net, self.teacher.net)
            self.ema.load_state_dict(self.net.state_dict())
        self.target = ema_copy(self.net) if d.method in ("cd", "lcm") and d.target_decay > 0 else None
        self.features = None
        if d.distance == "feature":
            from noisecraft.eval.evaluation import default_features

            self.features = O.image_features(self.config.eval.features or default_features(self.config.data.dataset),
                                             self.device)
        self.levels = O.karras_levels(d.boundary_sigma, self.denoiser.schedule.sigma_max, d.num_scales, d.rho)
        self.pairs = reflow_pairs(self) if d.method == "reflow" else None
        self.tangent = d.scm_tangent  # scm: "auto" becomes "jvp" or "fd" at the first step
        self.weight = None  # scm's adaptive weight w_phi(t): optimised with the student, kept in slot "0"
        if d.method == "scm" and d.scm_adaptive:
            from noisecraft.distill.trigflow import AdaptiveWeight

            self.weight = AdaptiveWeight().to(self.device)
            self.optimizer.add_param_group({"params": list(self.weight.parameters()), "weight_decay": 0.0})

    def target_denoiser(self) -> Denoiser:
        """f_theta^-: the target network (cd, lcm with target_decay > 0) or the online student (used without
        gradient: ct, ect, iCT's mu = 0)."""
        if self.target is None:
            return self.denoiser
        return Denoiser(self.target, self.denoiser.schedule, self.denoiser.prediction)

    # -------------------------------------------------------------------------------- saved state
    def state_dict(self) -> dict:
        return {**super().state_dict(), "distill": {"method": self.method, "teacher": self.config.distill.teacher}}

    def _slot(self):
        """The module kept in the checkpoint's post-hoc slot "0": cd / lcm's target network theta^-, scm's
        adaptive weight w_phi, or None."""
        return self.target if self.target is not None else self.weight

    def save(self) -> Path:
        """The trainer's checkpoint plus the target network or the adaptive weight (the post-hoc slot "0")."""
        model, ema, optim, _ = full_state(self.net, self.ema, self.optimizer, None, fsdp=False)
        try:
            if self.dist.is_main:
                target = [self._slot().state_dict()] if self._slot() is not None else None
                save_checkpoint(self.out_dir, config=to_dict(self.config), state=self.state_dict(), model=model,
                                ema=ema, optimizer=optim, phema=target)
                write_log(self.out_dir, self.log)
        finally:
            self.dist.barrier()
        return self.out_dir / CHECKPOINT_FILE

    def _restore(self, ckpt) -> None:
        super()._restore(ckpt)
        if self._slot() is not None:
            if not ckpt.phema or "0" not in ckpt.phema:
                what = "target network" if self.target is not None else "adaptive weight"
                raise NoisecraftError(f"cannot resume: {ckpt.path} has no {what}")
            self._slot().load_state_dict(ckpt.phema["0"], strict=True)

    # ------------------------------------------------------------------------------------ one step
    def draw(self, step: int):
        """Everything random about step's global batch (module docstring), from the generator of (seed, step)."""
        if self._drawn is not None and self._drawn[0] == step:
            return self._drawn[1]
        gen = torch.Generator().manual_seed(step_seed(self.config.train.seed, step, 0))
        if self.method == "reflow":
            idx = self.batch_indices(step)
            x0, z = self.pairs["x0"][idx].to(self.device), self.pairs["z"][idx].to(self.device)
            cond = None if "labels" not in self.pairs else {"class_labels": self.pairs["labels"][idx].to(self.device)}
        else:
            x0, cond = self.batch(step, gen)
            z = torch.randn(x0.shape, generator=gen).to(self.device)
        drawn = {"x0": x0, "cond": cond, "z": z, **self._levels(step, x0.shape[0], gen)}
        self._drawn = (step, drawn)
        return drawn

    def _levels(self, step: int, B: int, gen: torch.Generator) -> dict:
        """(sigma_hi, sigma_lo, weight[, w]) of the consistency methods, sigma of reflow; (B,) float64."""
        d, dev = self.config.distill, self.device
        if self.method in ("cd", "lcm"):
            n = torch.randint(0, d.num_scales - d.skip, (B,), generator=gen)
            out = {"sigma_lo": self.levels[n], "sigma_hi": self.levels[n + d.skip]}
            if self.method == "lcm":
                lo, hi = d.guidance_range
                out["w"] = (lo + (hi - lo) * torch.rand(B, generator=gen, dtype=torch.float64)).float()
        elif self.method == "ct":
            N = O.ict_num_scales(step, d.total_steps, d.ict_s0, d.ict_s1)
            levels = O.karras_levels(d.boundary_sigma, self.denoiser.schedule.sigma_max, N, d.rho)
            n = torch.multinomial(O.ict_level_probs(levels, d.p_mean, d.p_std), B, replacement=True, generator=gen)
            out = {"sigma_lo": levels[n], "sigma_hi": levels[n + 1]}
        elif self.method == "ect":
            eps, sigma_max = d.boundary_sigma, self.denoiser.schedule.sigma_max
            t = (d.p_mean + d.p_std * torch.randn(B, generator=gen, dtype=torch.float64)).exp()
            t = t.clamp(min=eps * 1.001, max=sigma_max)
            r = O.ect_r(t, O.ect_stage(step, d.total_steps, d.ect_stages), q=d.ect_q, k=d.ect_k, b=d.ect_b)
            out = {"sigma_lo": torch.maximum(r, torch.full_like(r, eps)), "sigma_hi": t}
        elif self.method == "scm":
            from noisecraft.distill.trigflow import sample_t

            schedule = self.denoiser.schedule
            out = {"t": sample_t(B, gen, self.denoiser.prediction.sigma_data, p_mean=d.scm_p_mean, p_std=d.scm_p_std,
                                 sigma_min=schedule.sigma_min, sigma_max=schedule.sigma_max)}
        else:  # reflow
            out = {"sigma": self.denoiser.schedule.sample_sigma(B, gen).to(torch.float64)}
        if "sigma_hi" in out:
            out["weight"] = None if d.weighting == "uniform" else O.ict_weight(out["sigma_lo"], out["sigma_hi"])
        return {k: (v.to(dev) if isinstance(v, torch.Tensor) else v) for k, v in out.items()}

    def loss(self, step: int, chunk: int = 0, chunks: int = 1) -> torch.Tensor:
        """The mean objective of micro-batch `chunk` of `chunks` of step's global batch."""
        b = self.draw(step)
        B = b["x0"].shape[0]
        rows = micro_slice(B, chunk, chunks)
        part = {k: (v[rows] if isinstance(v, torch.Tensor) else v) for k, v in b.items() if k != "cond"}
        cond = micro_rows(b["cond"], rows, B)
        torch.manual_seed(step_seed(self.config.train.seed, step, 1 + chunk))  # dropout
        with autocast(self.device, self.config.train):
            per_sample = self.objective(step, part, cond)
        return per_sample.float().mean()

    def objective(self, step: int, b: dict, cond) -> torch.Tensor:
        """Per-sample loss of the method on one micro-batch (objectives.py)."""
        d = self.config.distill
        x0, z = b["x0"], b["z"]
        if self.method == "reflow":
            if step < d.reflow_steps:
                diffusion = self.config.diffusion
                return O.reflow_loss(self.train_denoiser, x0, z, b["sigma"], cond, weighting=diffusion.weighting,
                                     gamma=diffusion.min_snr_gamma)
            return O.one_step_loss(self.train_denoiser, x0, z, self.denoiser.schedule.sigma_max, cond)
        if self.method == "scm":
            return self._scm_objective(step, b, cond)
        sigma_hi, sigma_lo = b["sigma_hi"], b["sigma_lo"]
        x_hi = x0 + O.bcast(sigma_hi, x0) * z
        if self.method in ("ct", "ect"):  # the unbiased estimator x0 + sigma_lo z (Song et al. 2023, Eq. 10)
            x_lo = x0 + O.bcast(sigma_lo, x0) * z
        else:
            if self.method == "lcm":
                from noisecraft.distill.guided import GUIDANCE_KEY, GuidedTeacher

                cond = {**cond, GUIDANCE_KEY: b["w"]}
                teacher = GuidedTeacher(self.teacher, unconditional(self.conditions, cond))
            else:
                teacher = self.teacher
            with torch.no_grad():
                x_lo = O.teacher_step(teacher, x_hi, sigma_hi, sigma_lo, cond, d.solver)
        return O.consistency_pair_loss(self.train_denoiser, self.target_denoiser(), x_hi, sigma_hi, x_lo, sigma_lo,
                                       cond, weight=b["weight"], kind=d.distance, c=d.huber_c,
                                       features=self.features)

    def _scm_objective(self, step: int, b: dict, cond) -> torch.Tensor:
        """sCD's per-sample loss (trigflow.scd_loss) with the tangent warm-up r = min(1, step / H)."""
        from noisecraft.distill.trigflow import NoForwardMode, scd_loss

        d = self.config.distill
        r = min(1.0, step / d.scm_warmup_steps) if d.scm_warmup_steps else 1.0
        seed = int(torch.randint(2**62, ()))  # from the micro-batch's dropout seed (loss()): one mask per call

        def loss(tangent: str) -> torch.Tensor:
            return scd_loss(self.train_denoiser, self.teacher, b["x0"], b["z"], b["t"], cond, frozen=self.denoiser,
                            r=r, c=d.scm_norm_c, tangent=tangent, h=d.scm_fd_h, seed=seed, weight=self.weight)

        if self.tangent != "auto":
            return loss(self.tangent)
        try:
            out = loss("jvp")
        except NoForwardMode:  # raised before any gradient was recorded
            self.tangent = "fd"
            return loss("fd")
        self.tangent = "jvp"
        return out

    def _update(self, loss: torch.Tensor) -> None:
        """The trainer's update (scm's adaptive weight in the same optimiser step, its gradient averaged over
        processes first), then, when the optimiser stepped, theta^- <- mu theta^- + (1 - mu) theta (Song et al.
        2023, Alg. 2)."""
        before = self._optimizer_steps()
        if self.weight is not None and self.dist.world > 1:  # w_phi is outside the DDP module: average by hand
            for p in self.weight.parameters():
                if p.grad is not None:
                    p.grad.copy_(self.dist.mean(p.grad))
        super()._update(loss)
        if self.target is not None and self._optimizer_steps() > before:
            update_ema(self.target, self.net, self.config.distill.target_decay)

    def _optimizer_steps(self) -> int:
        state = next(iter(self.optimizer.state.values()), None)
        return int(state["step"]) if state else 0


def unconditional(conditions, cond: dict) -> dict:
    """The unconditional side of a training batch's cond: each guidable condition's keys replaced by its null
    value (a non-guidable one, such as a mask, stays on both sides, as in classifier-free guidance)."""
    from noisecraft.conditions.base import JOINED

    B = next(v for k, v in cond.items() if k != "guidance_scale").shape[0]
    out = {k: v for k, v in cond.items() if k != "guidance_scale"}
    for c in conditions:
        if not c.guidable:
            continue
        for key, v in c.null(B).items():
            if key in JOINED:
                raise NoisecraftError(f"lcm: condition {c.name!r} feeds cond[{key!r}], which guided distillation "
                                      f"does not support; it supports class and text runs")
            out[key] = v.expand(B, *v.shape[1:]) if v.shape[0] == 1 else v
    if "text_tokens" in out and "text_mask" not in out and "text_mask" in cond:
        out["text_mask"] = torch.ones(out["text_tokens"].shape[:2], dtype=torch.bool, device=out["text_tokens"].device)
    return out


def init_from_teacher(student: torch.nn.Module, teacher: torch.nn.Module) -> None:
    """Copy the teacher's weights into the student: equal shapes as they are; an input layer the student has
    wider (a Linear reading more features) gets the teacher's columns and zeros; a tensor the teacher lacks is
    zeroed (an added input then adds nothing, so the student starts as the teacher)."""
    t_state = teacher.state_dict()
    with torch.no_grad():
        for key, value in student.state_dict().items():
            src = next((t_state[k] for k in (key, key.replace("net.net.", "net.", 1), key.removeprefix("net."))
                        if k in t_state), None)
            if src is not None and src.shape == value.shape:
                value.copy_(src)
            elif src is not None and src.ndim == 2 and src.shape[0] == value.shape[0] and src.shape[1] < value.shape[1]:
                value.zero_()
                value[:, : src.shape[1]].copy_(src)
            elif src is None:
                value.zero_()
            else:
                raise NoisecraftError(f"student tensor {key} {tuple(value.shape)} does not fit the teacher's "
                                      f"{tuple(src.shape)}")


def reflow_pairs(distiller: Distiller) -> dict:
    """The teacher's ODE pairs (z, x0 = ODE(sigma_max z)) of a reflow run (Liu et al. 2023, Sec. 2.2): made once
    with distill.solver over distill.solver_steps steps, seeded by train.seed, and kept in out_dir (a resumed run
    reads them back); a class run's pairs carry uniformly drawn labels."""
    from safetensors.torch import load_file, save

    from noisecraft import samplers
    from noisecraft.files import atomic_write_bytes
    from noisecraft.schedules import get_sigmas

    path = distiller.out_dir / PAIRS_FILE
    if path.is_file():
        return load_file(str(path))
    d, run = distiller.config.distill, distiller.teacher_run
    solver = O.deterministic_solver(d.solver)
    gen = torch.Generator().manual_seed(step_seed(distiller.config.train.seed, 0, 7))
    num_classes = getattr(run.config.network, "num_classes", 0)
    z = torch.randn(d.reflow_pairs, *run.data_shape, generator=gen)
    labels = torch.randint(0, num_classes, (d.reflow_pairs,), generator=gen) if num_classes else None
    sigmas = get_sigmas(run.denoiser.schedule, d.solver_steps, run.config.sample.step_schedule)
    x0 = []
    for s in range(0, len(z), 256):
        cond = None if labels is None else {"class_labels": labels[s:s + 256].to(distiller.device)}
        x_T = float(sigmas[0]) * z[s:s + 256].to(distiller.device)
        x0.append(samplers.get(solver)(run.denoiser, x_T, sigmas, cond=cond).float().cpu())
    pairs = {"z": z.contiguous(), "x0": torch.cat(x0).contiguous()}
    if labels is not None:
        pairs["labels"] = labels.contiguous()
    if distiller.dist.is_main:
        distiller.out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, save(pairs))
    return pairs


# --------------------------------------------------------------------------------------- the student config
METHOD_DEFAULTS = {  # what each method's paper uses, where it differs from DistillConfig's defaults
    "cd": {"distance": "l2", "weighting": "uniform", "target_decay": 0.95},
    "ct": {"distance": "pseudo_huber", "weighting": "ict", "target_decay": 0.0},
    "ect": {"distance": "pseudo_huber", "weighting": "ict", "target_decay": 0.0},
    "lcm": {"distance": "pseudo_huber", "weighting": "uniform", "target_decay": 0.95, "guidance_input": True},
    "reflow": {"target_decay": 0.0},
    "scm": {"target_decay": 0.0},
}
TRAIN_DEFAULTS = {"cd": 2e-4, "ct": 1e-3, "ect": 2e-4, "lcm": 2e-4, "reflow": 2e-4, "scm": 1e-4}  # AdamW rates


def student_config(teacher, method: str, *, steps: int | None = None, minutes: float | None = None,
                   overrides: tuple[str, ...] = ()):
    """The RunConfig of a `method` student of the run directory `teacher`: the teacher's config with a `distill`
    section, the method's defaults, consistency sampling as the default sampler, then `overrides`
    (section.field=value, e.g. distill.num_scales=40). Raises NoisecraftError for a teacher the method cannot use."""
    from noisecraft.checkpoint import load_checkpoint
    from noisecraft.config import from_dict
    from noisecraft.distill_config import METHODS, DistillConfig
    from noisecraft.pipelines.run import run_config
    from noisecraft.runconfig import RunConfig, SampleConfig, apply_run_overrides
    from noisecraft.schedules.training import build_schedule

    if method not in METHODS:
        raise NoisecraftError(f"unknown distillation method {method!r}; allowed: {', '.join(METHODS)}")
    tcfg = run_config(load_checkpoint(teacher))
    check_teacher(tcfg, method, str(teacher))
    schedule = build_schedule(tcfg.diffusion.schedule, **tcfg.diffusion.schedule_options())
    distill = DistillConfig(method=method, teacher=str(teacher), boundary_sigma=max(0.002, schedule.sigma_min),
                            **METHOD_DEFAULTS[method])
    train = replace(tcfg.train, lr=TRAIN_DEFAULTS[method], warmup_steps=100, steps=steps or 10**9, minutes=minutes,
                    phema_sigma_rels=(), fsdp=False)
    conditioning = replace(tcfg.conditioning, cond_dropout=0.0) if method == "lcm" else tcfg.conditioning
    config = replace(tcfg, name=f"{tcfg.name}-{method}", distill=distill, train=train, conditioning=conditioning,
                     sample=SampleConfig(sampler="consistency", steps=1, step_schedule="consistency",
                                         num=tcfg.sample.num))
    config = from_dict(RunConfig, apply_run_overrides(to_dict(config), list(overrides)), "config")
    check_teacher(tcfg, method, str(teacher), config.distill)
    return config


def check_teacher(tcfg, method: str, where: str, distill=None) -> None:
    """NoisecraftError when `method` cannot distil the run config `tcfg` (its parameterisation, its conditions,
    the distance or the solver), naming what is supported."""
    from noisecraft.conditions import conditions_for

    if tcfg.distill is not None:
        raise NoisecraftError(f"{where} is a few-step student (distill method {tcfg.distill.method!r}), not a "
                              f"diffusion run; distil from a run trained by noisecraft train (prediction eps, x0, v, "
                              f"flow or edm)")
    names = [c.name for c in conditions_for(tcfg)]
    if method == "lcm" and (not names or not set(names) <= {"class", "text"}):
        raise NoisecraftError(f"method 'lcm' needs a class- or text-conditional teacher (conditions class, text); "
                              f"{where} has {', '.join(names) or 'no conditions (unconditional)'}; use cd, ct, ect or "
                              f"reflow")
    if method == "lcm" and not hasattr(tcfg.network, "vector_dim"):
        raise NoisecraftError(f"method 'lcm' feeds the guidance scale through the network's vector input, which "
                              f"model {tcfg.model!r} does not have; models with one: unet, dit")
    d = tcfg.diffusion
    if method == "scm" and (d.prediction != "edm" or d.schedule != "edm"):
        raise NoisecraftError(f"method 'scm' needs an EDM-parameterised teacher (diffusion.prediction edm on schedule "
                              f"edm: its scalings are TrigFlow's, Lu & Song 2024, Sec. 3); {where} has prediction "
                              f"{d.prediction!r} on schedule {d.schedule!r}; use cd, ect or reflow")
    if method == "reflow" and not set(names) <= {"class"}:
        raise NoisecraftError(f"method 'reflow' supports unconditional and class-conditional teachers; {where} has "
                              f"conditions {', '.join(names)}; use cd or lcm")
    if distill is None:
        return
    O.deterministic_solver(distill.solver)
    if method == "lcm" and O.deterministic_solver(distill.solver) not in ("euler", "ddim", "heun"):
        raise NoisecraftError(f"method 'lcm' takes the guided teacher's step with euler, ddim or heun; got "
                              f"{distill.solver!r}")
    if distill.distance == "feature" and (tcfg.data.autoencoder or len(tcfg.network.data_shape(28)) != 3):
        raise NoisecraftError("distance 'feature' needs a pixel-space image run (it compares image features); "
                              "use l2 or pseudo_huber")
