"""Reconstruction metrics of an autoencoder on held-out images.

- PSNR = 10 log10(1 / MSE) of images in [0, 1], per image, averaged.
- SSIM (Wang et al. 2004): scikit-image's `structural_similarity` with the paper's settings (11x11 Gaussian
  window, sigma 1.5, population covariances, data range 1), averaged over the channels and the images.
- FD of reconstructions: Frechet distance between the features of the reconstructions and of the originals
  (`noisecraft.eval`; "effnet" by default). With N held-out images and D = 1280 features the covariances have
  rank < N, so the number is for comparing runs on the same N, not with FDs on other sets.
"""

from __future__ import annotations

import numpy as np
import torch


def psnr(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Per-image PSNR (dB) of images in [-1, 1] (clipped), measured on the [0, 1] scale."""
    a, b = ((t.detach().float().cpu().clamp(-1, 1) + 1) / 2 for t in (x, y))
    mse = (a - b).pow(2).flatten(1).mean(dim=1).double().numpy()
    return 10 * np.log10(1.0 / np.maximum(mse, 1e-12))


def ssim(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Per-image SSIM of images in [-1, 1] (clipped), on the [0, 1] scale."""
    from skimage.metrics import structural_similarity

    a, b = (((t.detach().float().cpu().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).double().numpy() for t in (x, y))
    return np.array([structural_similarity(p, q, data_range=1.0, channel_axis=-1, gaussian_weights=True,
                                           sigma=1.5, use_sample_covariance=False) for p, q in zip(a, b)])


@torch.no_grad()
def reconstruct(ae, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Decode(encode(x)) with the posterior mean, in batches; float32 on the CPU."""
    dev = next(ae.parameters()).device
    out = [ae.decode(ae.encode(images[s:s + batch_size].to(dev))).float().cpu()
           for s in range(0, len(images), batch_size)]
    return torch.cat(out)


def reconstruction_metrics(ae, images: torch.Tensor, *, features: str | None = "effnet",
                           reference_features=None) -> tuple[dict, torch.Tensor]:
    """({"psnr", "ssim", "fd" (if features)}, reconstructions) on `images` (N, C, H, W) in [-1, 1];
    `reference_features` (the features of `images`, if already computed) saves half of the FD's cost."""
    rec = reconstruct(ae, images)
    out = {"psnr": float(psnr(images, rec).mean()), "ssim": float(ssim(images, rec).mean())}
    if features:
        import warnings

        from noisecraft.eval import fd, get_extractor

        ext = get_extractor(features)
        ref = ext(images) if reference_features is None else reference_features
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # rank warning: N < D is expected here (see the module docstring)
            out["fd"] = float(fd(ext(rec.clamp(-1, 1)), ref))
    return out, rec
