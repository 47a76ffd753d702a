"""The one abstraction: a denoiser in sigma-space, D(x, sigma, cond) -> x0_hat (see docs/design.md)."""

from noisecraft.core.conversions import alpha_sigma_vp, sigma_from_alphas_cumprod, ve_to_vp, vp_to_ve
from noisecraft.core.denoiser import Denoiser, clamp_denoised
from noisecraft.core.prediction import PREDICTIONS, Prediction
from noisecraft.core.random import randn_like

__all__ = [
    "Denoiser", "Prediction", "PREDICTIONS", "alpha_sigma_vp", "clamp_denoised", "randn_like",
    "sigma_from_alphas_cumprod", "ve_to_vp", "vp_to_ve",
]
