"""The `distill` section of a run config: what makes a run a few-step student (`RunConfig.distill`; None for an
ordinary diffusion run). A module of its own beside `runconfig` (which holds it) so that the run config does not
import the `distill` package. Written by `noisecraft distill`, read by `build.build_denoiser` (the consistency
boundary and the guidance-scale input) and by the generation path (the samplers a student is made for).

Methods (`noisecraft.distill`): cd (consistency distillation, Song et al. 2023, Alg. 2), ct (consistency
training with the iCT schedule, Song & Dhariwal 2024), ect (easy consistency tuning, Geng et al. 2024), lcm
(guided consistency distillation with the guidance scale as an input, Luo et al. 2023), reflow (rectified flow
on teacher ODE pairs, then distillation to one step, Liu et al. 2023), scm (continuous-time consistency
distillation, sCD, in TrigFlow form, Lu & Song 2024: `noisecraft.distill.trigflow`).
"""

from __future__ import annotations

from dataclasses import dataclass

from noisecraft.errors import require

METHODS = ("cd", "ct", "ect", "lcm", "reflow", "scm")
DISTANCES = ("l2", "pseudo_huber", "feature")
WEIGHTINGS = ("uniform", "ict")
TANGENTS = ("auto", "jvp", "fd")  # scm: dF/dt by forward-mode autodiff, central difference, or JVP falling back to FD
CONSISTENCY_METHODS = ("cd", "ct", "ect", "lcm")
# The samplers a student samples with: a consistency function with CM Alg. 1; a reflowed flow with Euler too.
MADE_FOR = {"cd": ("consistency",), "ct": ("consistency",), "ect": ("consistency",), "lcm": ("consistency",),
            "reflow": ("consistency", "euler"), "scm": ("consistency",)}


@dataclass(frozen=True)
class DistillConfig:
    method: str = "cd"              # cd, ct, ect, lcm, reflow or scm (module docstring)
    teacher: str = ""               # the teacher run directory (a template only for ct)
    solver: str = "heun"            # the teacher's ODE step (cd, lcm) / pair sampler (reflow): a deterministic sampler
    solver_steps: int = 18          # reflow: steps of the teacher's sampler per ODE pair
    distance: str = "l2"            # d(., .): l2, pseudo_huber (iCT, Sec. 3.3) or feature (noisecraft's image features)
    huber_c: float | None = None    # pseudo-Huber c (None: 0.00054 sqrt(d), Song & Dhariwal 2024, Sec. 3.3)
    weighting: str = "uniform"      # lambda(sigma_n): uniform (Song et al. 2023) or ict (1 / (sigma_{n+1} - sigma_n))
    boundary_sigma: float = 0.002   # eps: f(x, eps) = x exactly (the teacher schedule's sigma_min, at least)
    boundary_scale: float = 10.0    # s of the boundary around a non-edm teacher (Luo et al. 2023's timestep scaling)
    num_scales: int = 18            # N of the Karras discretisation sigma_1 = eps < ... < sigma_N = sigma_max (cd, lcm)
    rho: float = 7.0                # rho of that discretisation (Karras et al. 2022, Eq. 5)
    skip: int = 1                   # lcm skipping-step k: the teacher steps from sigma_{n+k} to sigma_n
    target_decay: float = 0.95      # mu of the target network theta^- <- mu theta^- + (1 - mu) theta (0: theta)
    # ct (iCT): curriculum N(k) = min(s0 2^floor(k / K'), s1) + 1 over `total_steps`, lognormal level sampling
    ict_s0: int = 10
    ict_s1: int = 1280
    total_steps: int = 4000         # K of the iCT curriculum / the ECT stages (steps, not minutes: resume-exact)
    p_mean: float = -1.1            # ct / ect: ln sigma ~ N(p_mean, p_std^2) (Song & Dhariwal 2024; Geng et al. 2024)
    p_std: float = 2.0
    # ect: r = t (1 - q^-(stage + 1) (1 + k sigmoid(-b t))), stage = floor(step / (total_steps / stages))
    ect_q: float = 2.0
    ect_k: float = 8.0
    ect_b: float = 1.0
    ect_stages: int = 8
    # lcm: the guidance scale w is a network input; training draws w ~ U[lo, hi]
    guidance_input: bool = False
    guidance_range: tuple[float, float] = (1.0, 4.0)
    guidance_embed_dim: int = 32    # width of w's sinusoidal embedding (cond["vector"])
    # reflow: teacher ODE pairs (noise, sample), then reflow steps, then one-step distillation
    reflow_pairs: int = 2048
    reflow_steps: int = 1500        # steps of the reflow stage; later steps distil the one-step map
    # scm (Lu & Song 2024): t = arctan(e^tau / sigma_d), tau ~ N(scm_p_mean, scm_p_std^2) (Sec. 4.3); the tangent
    # dF^-/dt by scm_tangent (auto: JVP, else the central difference with step scm_fd_h in t); the warm-up
    # r = min(1, step / scm_warmup_steps) (Sec. 4.2; 0: r = 1); tangent normalisation g / (||g|| + scm_norm_c);
    # scm_adaptive: learn the weight w_phi(t) with the student (Sec. 4.3, Eq. 9; trigflow.AdaptiveWeight)
    scm_p_mean: float = -1.0
    scm_p_std: float = 1.4
    scm_tangent: str = "auto"
    scm_fd_h: float = 1e-3
    scm_warmup_steps: int = 500
    scm_norm_c: float = 0.1
    scm_adaptive: bool = False

    def __post_init__(self):
        require(self.method in METHODS, "distill.method", f"unknown method {self.method!r}; allowed: "
                                                          f"{', '.join(METHODS)}")
        require(self.distance in DISTANCES, "distill.distance",
                f"unknown distance {self.distance!r}; allowed: {', '.join(DISTANCES)}")
        require(self.weighting in WEIGHTINGS, "distill.weighting",
                f"unknown weighting {self.weighting!r}; allowed: {', '.join(WEIGHTINGS)}")
        require(self.boundary_sigma > 0, "distill.boundary_sigma", f"must be > 0, got {self.boundary_sigma}")
        require(self.boundary_scale > 0, "distill.boundary_scale", f"must be > 0, got {self.boundary_scale}")
        require(self.huber_c is None or self.huber_c > 0, "distill.huber_c", f"must be > 0, got {self.huber_c}")
        for name in ("num_scales", "solver_steps", "skip", "ict_s0", "ict_s1", "total_steps", "ect_stages",
                     "guidance_embed_dim", "reflow_pairs", "reflow_steps"):
            require(getattr(self, name) >= 1, f"distill.{name}", f"must be >= 1, got {getattr(self, name)}")
        require(self.num_scales >= 2 and self.skip < self.num_scales, "distill.num_scales/skip",
                f"need num_scales >= 2 and skip < num_scales, got {self.num_scales}, {self.skip}")
        require(0 <= self.target_decay < 1, "distill.target_decay", f"must be in [0, 1), got {self.target_decay}")
        require(self.p_std > 0 and self.rho > 0 and self.ect_q > 1, "distill.p_std/rho/ect_q",
                "need p_std > 0, rho > 0, ect_q > 1")
        require(self.scm_tangent in TANGENTS, "distill.scm_tangent",
                f"unknown tangent {self.scm_tangent!r}; allowed: {', '.join(TANGENTS)}")
        require(self.scm_p_std > 0, "distill.scm_p_std", f"must be > 0, got {self.scm_p_std}")
        require(0 < self.scm_fd_h <= 0.01, "distill.scm_fd_h", f"must be in (0, 0.01], got {self.scm_fd_h}")
        require(self.scm_warmup_steps >= 0, "distill.scm_warmup_steps", f"must be >= 0, got {self.scm_warmup_steps}")
        require(self.scm_norm_c >= 0, "distill.scm_norm_c", f"must be >= 0, got {self.scm_norm_c}")
        lo, hi = self.guidance_range
        require(0 <= lo <= hi, "distill.guidance_range", f"need 0 <= lo <= hi, got {self.guidance_range}")

    @property
    def consistency(self) -> bool:
        """Whether the student is a consistency function (its parameterisation has the boundary built in)."""
        return self.method in CONSISTENCY_METHODS

    def samplers(self) -> tuple[str, ...]:
        """The samplers this student is made for."""
        return MADE_FOR[self.method]

    def prediction_options(self) -> dict:
        """The `core.prediction.Prediction` arguments of the student's parameterisation (scm: none: the EDM
        scalings are TrigFlow's consistency parameterisation, whose boundary f(x, 0) = x is at sigma = 0)."""
        if not self.consistency:
            return {}
        return {"boundary_sigma": self.boundary_sigma, "boundary_scale": self.boundary_scale}
