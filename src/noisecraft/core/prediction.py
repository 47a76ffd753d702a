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

    def __post_init__(self):
        if self.kind not in PREDICTIONS:
            raise unknown_name("prediction type", self.kind, PREDICTIONS)
        if not self.sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0, got {self.sigma_data}")

    def scalings(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(c_skip, c_out) at noise level sigma (any shape; computed in sigma's dtype)."""
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
        `sigma` must broadcast against x0.
        """
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
