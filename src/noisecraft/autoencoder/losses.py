"""Losses of autoencoder training (Esser et al. 2021, "Taming Transformers", section 3.1 and Eq. 7; Rombach
et al. 2022, appendix G): reconstruction L1, an LPIPS-like perceptual distance, the KL term (in
`models.autoencoder.DiagonalGaussian.kl`), and a patch discriminator with the hinge loss and the adaptive weight.

Perceptual distance (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric",
Eq. 1) on the bundled ImageNet EfficientNet-Lite0 instead of VGG/AlexNet, with unit channel weights w = 1:

    d(x, y) = sum_l  mean_{h,w}  || f_l(x)_hw / |f_l(x)_hw| - f_l(y)_hw / |f_l(y)_hw| ||_2^2

f_l are the outputs of the EfficientNet stages 1-5 (16, 24, 40, 80, 112 channels at strides 2, 4, 8, 16, 16),
each feature vector normalised to unit length over channels. The images are fed at their own resolution (as
LPIPS does), scaled to the Lite models' input convention (u - 127) / 128.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PERCEPTUAL_TAPS = (0, 2, 4, 7, 10)  # EfficientNet-Lite0 block indices ending stages 1..5
NORM_EPS = 1e-10


class EffNetPerceptual(nn.Module):
    """d(x, y) per image, (B,), for images in [-1, 1] (see the module docstring). Frozen, eval mode."""

    def __init__(self, net=None):
        super().__init__()
        if net is None:
            from noisecraft.eval.effnet import load_effnet

            with torch.random.fork_rng(devices=[]):  # building the network draws discarded initial weights
                net = load_effnet()
        self.net = net.eval().requires_grad_(False)

    def train(self, mode: bool = True):  # the BatchNorm statistics stay the ImageNet ones
        return super().train(False)

    def features(self, x: Tensor) -> list[Tensor]:
        n = self.net
        x = ((x + 1.0) * 127.5 - 127.0) / 128.0  # [-1, 1] -> (u - 127) / 128
        h = F.relu6(n._bn0(n._conv_stem(x)))
        out = []
        for i, block in enumerate(n._blocks[: PERCEPTUAL_TAPS[-1] + 1]):
            h = block(h)
            if i in PERCEPTUAL_TAPS:
                out.append(h)
        return out

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if x.shape[1] == 1:
            x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
        return perceptual_distance(self.features(x), self.features(y))


def unit_normalize(f: Tensor) -> Tensor:
    """Each feature vector (over the channel dimension) divided by its Euclidean norm."""
    return f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + NORM_EPS)


def perceptual_distance(feats_x: list[Tensor], feats_y: list[Tensor]) -> Tensor:
    """sum over layers of the spatial mean of the squared distance of unit-normalised features, (B,)."""
    total = 0.0
    for fx, fy in zip(feats_x, feats_y):
        total = total + (unit_normalize(fx) - unit_normalize(fy)).pow(2).sum(dim=1).mean(dim=(1, 2))
    return total


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator (Isola et al. 2017, section 3.2.2; the taming-transformers NLayerDiscriminator):
    conv4x4/2 + LeakyReLU, `layers - 1` conv4x4/2 + BatchNorm + LeakyReLU, conv4x4/1 + BatchNorm + LeakyReLU,
    conv4x4/1 -> one logit per overlapping patch, (B, 1, h, w). Weights N(0, 0.02), BatchNorm scales N(1, 0.02)."""

    def __init__(self, in_channels: int = 3, channels: int = 32, layers: int = 2):
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = channels
        for i in range(1, layers + 1):
            c_next = channels * min(2 ** i, 8)
            stride = 2 if i < layers else 1
            mods += [nn.Conv2d(c, c_next, 4, stride, 1, bias=False), nn.BatchNorm2d(c_next), nn.LeakyReLU(0.2)]
            c = c_next
        mods.append(nn.Conv2d(c, 1, 4, 1, 1))
        self.main = nn.Sequential(*mods)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x)


def hinge_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """Discriminator hinge loss (Lim & Ye 2017): 0.5 (E[relu(1 - D(x))] + E[relu(1 + D(x_hat))])."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: Tensor) -> Tensor:
    """Generator side of the hinge GAN: -E[D(x_hat)]."""
    return -logits_fake.mean()


def adaptive_weight(rec_loss: Tensor, g_loss: Tensor, last_layer: Tensor, *, max_weight: float = 1e4) -> Tensor:
    """lambda = ||grad_{G_L} L_rec|| / (||grad_{G_L} L_GAN|| + 1e-4), clamped to [0, 1e4] and detached
    (Esser et al. 2021, Eq. 7; G_L = the decoder's last layer)."""
    g_rec = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_gan = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    return (g_rec.norm() / (g_gan.norm() + 1e-4)).clamp(0.0, max_weight).detach()
