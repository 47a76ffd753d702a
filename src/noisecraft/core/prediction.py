"""What the network predicts, as the output scalings of Karras et al. 2022 (Table 1, Eq. 7):

    D(x, sigma) = c_skip(sigma) * x + c_out(sigma) * F(c_in(sigma) * x, c_noise(sigma))

in the VE view x = x0 + sigma * n. The prediction type fixes c_skip and c_out (what F means); the
noise schedule fixes c_in and c_noise (what F sees), see `noisecraft.schedules`.

| name | F predicts                                   | c_skip               | c_out                       |
|------|----------------------------------------------|----------------------|-----------------------------|
| eps  | n (Ho et al. 2020)                           | 1                    | -sigma                      |
| x0   | x0                                           | 0                    | 1                           |
| v    | alpha_t n - sigma_t x0 (Salimans & Ho 2022)  | 1 / (1 + sigma^2)    | -sigma / sqrt(1 + sigma^2)  |
| flow | n - x0 (Lipman 2023; Liu 2023; Esser 2024)   | 1 / (1 + sigma)      | -sigma / (1 + sigma)        |
| edm  | EDM's F (Karras et al. 2022, Eq. 7)          | sd^2/(sigma^2+sd^2)  | sigma sd / sqrt(sigma^2+sd^2)|

(sd = sigma_data.) Training with target (x0 - c_skip x) / c_out and unit weight is each type's
native loss; `target` gives that target in closed form.

Consistency models (few-step students, `noisecraft.distill`) set `boundary_sigma` = eps, the smallest noise
level, and the scalings then build the boundary condition f(x, eps) = x into the network (Song et al. 2023,
Sec. 3 and App. C; Luo et al. 2023, Eq. 9). With u = sigma - eps:

| kind  | c_skip                                  | c_out                                        |
|-------|-----------------------------------------|----------------------------------------------|
| edm   | sd^2 / (u^2 + sd^2)                     | sd u / sqrt(sd^2 + sigma^2)   (Song et al., App. C) |
| other | b_skip + b_out c_skip_kind              | b_out c_out_kind                             |

where b_skip = sd^2 / ((s u)^2 + sd^2) and b_out = s u / sqrt((s u)^2 + sd^2) wrap the kind's own denoiser D:
f = b_skip x + b_out D (LCM's parameterisation, Luo et al. 2023, Eq. 9, with s = `boundary_scale` their
timestep scaling). At sigma = eps, u = 0 exactly, so c_skip = 1 and c_out = 0: f(x, eps) = x exactly, whatever
the network outputs. For large sigma c_out tends to the kind's own, so a student starts from its teacher.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from noisecraft.errors import unknown_name

PREDICTIONS = ("eps", "x0", "v", "flow", "edm")


@dataclass(frozen=True)
class Prediction:
    kind: str = "eps"          # one of PREDICTIONS
    sigma_data: float = 0.5    # EDM's data standard deviation (used by kind="edm" only)
    boundary_sigma: float | None = None  # consistency models: eps with f(x, eps) = x built in (None: off)
    boundary_scale: float = 10.0  # s of the consistency boundary around a non-edm kind (LCM's timestep scaling)

    def __post_init__(self):
        if self.kind not in PREDICTIONS:
            raise unknown_name("prediction type", self.kind, PREDICTIONS)
        if not self.sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0, got {self.sigma_data}")
        if self.boundary_sigma is not None and not self.boundary_sigma > 0:
            raise ValueError(f"boundary_sigma must be > 0 (or None), got {self.boundary_sigma}")
        if not self.boundary_scale > 0:
            raise ValueError(f"boundary_scale must be > 0, got {self.boundary_scale}")

    def scalings(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(c_skip, c_out) at noise level sigma (any shape; computed in sigma's dtype); with `boundary_sigma`
        those of the consistency model (module docstring), exactly (1, 0) at sigma = boundary_sigma."""
        if self.boundary_sigma is None:
            return self._kind_scalings(sigma)
        sd, u = self.sigma_data, sigma - self.boundary_sigma
        if self.kind == "edm":  # Song et al. 2023, App. C
            return sd**2 / (u**2 + sd**2), sd * u * torch.rsqrt(sigma**2 + sd**2)
        su = self.boundary_scale * u
        b_skip, b_out = sd**2 / (su**2 + sd**2), su * torch.rsqrt(su**2 + sd**2)  # Luo et al. 2023, Eq. 9
        c_skip, c_out = self._kind_scalings(sigma)
        return b_skip + b_out * c_skip, b_out * c_out

    def _kind_scalings(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        one = torch.ones_like(sigma)
        if self.kind == "eps":
            return one, -sigma
        if self.kind == "x0":
            return torch.zeros_like(sigma), one
        if self.kind == "v":
            return 1 / (sigma**2 + 1), -sigma * torch.rsqrt(sigma**2 + 1)
        if self.kind == "flow":
            return 1 / (1 + sigma), -sigma / (1 + sigma)
        sd = self.sigma_data  # edm
        return sd**2 / (sigma**2 + sd**2), sigma * sd * torch.rsqrt(sigma**2 + sd**2)

    def target(self, x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The network's regression target for x = x0 + sigma * noise, in closed form.

        Equals (x0 - c_skip * x) / c_out (checked in tests), without the cancellation error.
        `sigma` must broadcast against x0. Not defined for a consistency model (boundary_sigma set), which is
        trained by the objectives of `noisecraft.distill`, not by denoising.
        """
        if self.boundary_sigma is not None:
            raise ValueError("a consistency model (boundary_sigma set) has no denoising target; train it with "
                             "noisecraft.distill (noisecraft distill --method cd|ct|ect|lcm)")
        if self.kind == "eps":
            return noise
        if self.kind == "x0":
            return x0
        if self.kind == "v":  # alpha_t * n - sigma_t * x0
            return (noise - sigma * x0) * torch.rsqrt(1 + sigma**2)
        if self.kind == "flow":
            return noise - x0
        c_skip, c_out = self.scalings(sigma)  # edm: Karras et al. 2022, Eq. 8 target
        return (x0 - c_skip * (x0 + sigma * noise)) / c_out
