"""Classifier-free guidance and autoguidance on the exact Gaussian-mixture denoisers (tests/analytic.py) and on
real conditioned networks: scale 1 = conditional, scale 0 = unconditional, one batched call = two separate
calls, the guidance interval, rescale, negative prompts, autoguidance, and errors."""

from dataclasses import replace

import pytest
import torch

from analytic import GaussianMixture
from noisecraft import samplers
from noisecraft.core.denoiser import Denoiser
from noisecraft.core.prediction import Prediction
from noisecraft.errors import NoisecraftError
from noisecraft.guidance import AutoGuidance, ClassifierFreeGuidance, null_class_cond, rescale_guidance
from noisecraft.models.dit import DIT_PRESETS, DiT
from noisecraft.models.unet import UNET_PRESETS, UNet
from noisecraft.schedules.steps import get_sigmas
from noisecraft.schedules.training import build_schedule

MIX = GaussianMixture(means=[[-4.0, 0.0], [4.0, 1.0], [0.0, 5.0], [1.0, -5.0]], stds=[0.6, 0.8, 0.5, 0.7],
                      weights=[0.3, 0.3, 0.2, 0.2], classes=[0, 1, 2, 1])
C = MIX.num_classes  # 3; label 3 is the null label


def _batch(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64) * 4
    sigma = torch.exp(torch.randn(n, generator=g, dtype=torch.float64) * 1.5)  # per-sample, ~0.05 .. 20
    labels = torch.randint(0, C, (n,), generator=g)
    return x, sigma, labels


def _cfg(scale, **kw):
    return ClassifierFreeGuidance(MIX.conditional_denoiser(), scale, **kw)


def test_scale_one_is_conditional_and_scale_zero_unconditional():
    x, sigma, labels = _batch()
    cond = {"class_labels": labels}
    for scale, expected in ((1.0, MIX.denoise_class(x, sigma, labels)), (0.0, MIX.denoise(x, sigma))):
        g = _cfg(scale)
        torch.testing.assert_close(g(x, sigma, cond), expected, rtol=0, atol=1e-13)
        assert g.denoiser.calls == 1 and g.denoiser.batch_sizes == [len(x)]  # the skip: one plain call


@pytest.mark.parametrize("scale", [-0.5, 0.5, 2.0, 7.5])
def test_batched_call_equals_two_separate_calls(scale):
    x, sigma, labels = _batch()
    g = _cfg(scale)
    out = g(x, sigma, {"class_labels": labels})
    assert g.denoiser.calls == 1 and g.denoiser.batch_sizes == [2 * len(x)]  # cond + uncond in ONE call
    d_c, d_u = MIX.denoise_class(x, sigma, labels), MIX.denoise(x, sigma)
    torch.testing.assert_close(out, d_u + scale * (d_c - d_u), rtol=0, atol=1e-12)


def test_unconditional_label_default_comes_from_the_model():
    """uncond=None uses the model's null label; an explicit null condition of batch 1 is broadcast."""
    x, sigma, labels = _batch()
    a = _cfg(3.0)(x, sigma, {"class_labels": labels})
    b = _cfg(3.0, uncond=null_class_cond(C))(x, sigma, {"class_labels": labels})
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_negative_condition_replaces_uncond():
    x, sigma, labels = _batch()
    negative = (labels + 1) % C
    out = _cfg(4.0, uncond={"class_labels": negative})(x, sigma, {"class_labels": labels})
    d_c, d_n = MIX.denoise_class(x, sigma, labels), MIX.denoise_class(x, sigma, negative)
    torch.testing.assert_close(out, d_n + 4.0 * (d_c - d_n), rtol=0, atol=1e-12)


def test_guidance_interval():
    """Kynkaanniemi et al. 2024: guided inside [lo, hi], the plain conditional denoiser outside; per-sample
    sigmas on both sides in one batch still take one network call (the uncond half only where guided)."""
    x, sigma, labels = _batch()
    lo, hi = 0.3, 2.0
    g = _cfg(3.0, interval=(lo, hi))
    out = g(x, sigma, {"class_labels": labels})
    inside = (sigma >= lo) & (sigma <= hi)
    assert 0 < inside.sum() < len(x)
    d_c, d_u = MIX.denoise_class(x, sigma, labels), MIX.denoise(x, sigma)
    torch.testing.assert_close(out[~inside], d_c[~inside], rtol=0, atol=0)
    torch.testing.assert_close(out[inside], (d_u + 3.0 * (d_c - d_u))[inside], rtol=0, atol=1e-12)
    assert g.denoiser.batch_sizes == [len(x) + int(inside.sum())]
    # a scalar sigma outside: one conditional call; the interval ends are inside
    g = _cfg(3.0, interval=(lo, hi))
    torch.testing.assert_close(g(x, 5.0, {"class_labels": labels}), MIX.denoise_class(x, 5.0, labels))
    assert g.denoiser.batch_sizes == [len(x)]
    for s in (lo, hi):
        d_c, d_u = MIX.denoise_class(x, s, labels), MIX.denoise(x, s)
        torch.testing.assert_close(_cfg(3.0, interval=(lo, hi))(x, s, {"class_labels": labels}), d_u + 3 * (d_c - d_u))


def test_scale_zero_with_interval_mixes_in_one_call():
    x, sigma, labels = _batch()
    g = _cfg(0.0, interval=(0.3, 2.0))
    out = g(x, sigma, {"class_labels": labels})
    inside = (sigma >= 0.3) & (sigma <= 2.0)
    expected = torch.where(inside[:, None], MIX.denoise(x, sigma), MIX.denoise_class(x, sigma, labels))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-13)
    assert g.denoiser.batch_sizes == [len(x)]


def test_rescale_phi_zero_is_plain_cfg_and_phi_one_matches_conditional_std():
    x, sigma, labels = _batch()
    cond = {"class_labels": labels}
    plain = _cfg(5.0)(x, sigma, cond)
    for space in ("x0", "eps"):
        torch.testing.assert_close(_cfg(5.0, rescale=0.0, rescale_space=space)(x, sigma, cond), plain, rtol=0, atol=0)
    d_c = MIX.denoise_class(x, sigma, labels)
    full = _cfg(5.0, rescale=1.0)(x, sigma, cond)  # Lin et al. eq. 15-16: std(x_final) = std(x_pos) per sample
    torch.testing.assert_close(full.std(dim=1), d_c.std(dim=1))
    torch.testing.assert_close(full / plain, (d_c.std(1) / plain.std(1))[:, None].expand_as(full))
    half = _cfg(5.0, rescale=0.7)(x, sigma, cond)
    torch.testing.assert_close(half, 0.7 * full + 0.3 * plain)
    eps = _cfg(5.0, rescale=1.0, rescale_space="eps")(x, sigma, cond)
    s = sigma[:, None]
    torch.testing.assert_close(((x - eps) / s).std(1), ((x - d_c) / s).std(1))


def test_rescale_helper_rejects_unknown_space():
    with pytest.raises(NoisecraftError, match="rescale space must be one of x0, eps"):
        rescale_guidance(torch.ones(2, 3), torch.ones(2, 3), 0.5, space="v")


def test_autoguidance():
    """Karras et al. 2024: bad == good gives good; otherwise D_bad + w (D_good - D_bad)."""
    x, sigma, labels = _batch()
    cond = {"class_labels": labels}
    good = MIX.conditional_denoiser()
    torch.testing.assert_close(AutoGuidance(good, good, 2.5)(x, sigma, cond), good(x, sigma, cond), rtol=0, atol=1e-12)
    bad_mix = GaussianMixture(MIX.means * 0.8, MIX.stds * 1.5, MIX.weights, MIX.classes)
    bad = bad_mix.conditional_denoiser()
    d_g, d_b = good(x, sigma, cond), bad(x, sigma, cond)
    torch.testing.assert_close(AutoGuidance(good, bad, 2.5)(x, sigma, cond), d_b + 2.5 * (d_g - d_b))
    torch.testing.assert_close(AutoGuidance(good, bad, 0.0)(x, sigma, cond), d_b)
    inside = (sigma >= 0.3) & (sigma <= 2.0)
    out = AutoGuidance(good, bad, 2.5, interval=(0.3, 2.0))(x, sigma, cond)
    torch.testing.assert_close(out[~inside], d_g[~inside])
    torch.testing.assert_close(out[inside], (d_b + 2.5 * (d_g - d_b))[inside])


def test_guided_sampling_runs_through_every_sampler_kind():
    """The wrapper is a denoiser: samplers use it unchanged; at w=1 sampling equals conditional sampling."""
    g = torch.Generator().manual_seed(0)
    sigmas = get_sigmas(build_schedule("edm"), 20, "karras")
    x = torch.randn(256, 2, generator=g, dtype=torch.float64) * sigmas[0]
    labels = torch.arange(256) % C
    cond = {"class_labels": labels}
    for name in ("heun", "dpmpp_2m", "euler_a"):
        gen = [torch.Generator().manual_seed(i) for i in range(256)]
        a = samplers.get(name)(_cfg(1.0), x, sigmas, cond=cond, generator=gen)
        gen = [torch.Generator().manual_seed(i) for i in range(256)]
        b = samplers.get(name)(MIX.conditional_denoiser(), x, sigmas, cond=cond, generator=gen)
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    strong = samplers.get("heun")(_cfg(3.0), x, sigmas, cond=cond)
    assert torch.isfinite(strong).all()


@pytest.mark.parametrize("bad", [
    dict(scale=float("nan")), dict(scale="2"), dict(scale=2.0, interval=(2.0, 1.0)), dict(scale=2.0, interval=(-1, 1)),
    dict(scale=2.0, interval=3.0), dict(scale=2.0, rescale=1.5), dict(scale=2.0, rescale_space="v"),
])
def test_bad_arguments(bad):
    with pytest.raises(NoisecraftError):
        ClassifierFreeGuidance(MIX.conditional_denoiser(), **bad)


def test_errors_unconditional_model_missing_cond_and_missing_uncond():
    schedule = build_schedule("edm")
    uncond_net = Denoiser(UNet(UNET_PRESETS["tiny"]), schedule, Prediction("edm"))
    with pytest.raises(NoisecraftError, match="needs a conditional model"):
        ClassifierFreeGuidance(uncond_net, 3.0)
    with pytest.raises(NoisecraftError, match="needs a condition"):
        _cfg(3.0)(torch.zeros(2, 2), 1.0, None)
    text_net = Denoiser(UNet(replace(UNET_PRESETS["tiny"], context_dim=4)), schedule, Prediction("edm"))
    with pytest.raises(NoisecraftError, match="uncond does not.*empty prompt"):
        ClassifierFreeGuidance(text_net, 3.0)(torch.zeros(2, 1, 8, 8), 1.0, {"text_tokens": torch.zeros(2, 3, 4)})


def _randomize(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model.double()


@pytest.mark.parametrize("kind", ["unet", "dit"])
def test_networks_batched_text_guidance_equals_separate_calls(kind):
    """Prompt and negative prompt of different token lengths: the padded, batched call equals two calls."""
    fields = dict(num_classes=3, context_dim=5, pooled_dim=4)
    net = UNet(replace(UNET_PRESETS["tiny"], **fields)) if kind == "unet" else \
        DiT(replace(DIT_PRESETS["tiny"], input_size=8, **fields))
    denoiser = Denoiser(_randomize(net), build_schedule("edm"), Prediction("edm"))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, 8, 8, generator=g, dtype=torch.float64)
    cond = {"class_labels": torch.tensor([0, 2]), "text_tokens": torch.randn(2, 3, 5, generator=g, dtype=torch.float64),
            "text_mask": torch.tensor([[True, True, False], [True, True, True]]),
            "text_pooled": torch.randn(2, 4, generator=g, dtype=torch.float64)}
    negative = {"text_tokens": torch.randn(1, 7, 5, generator=g, dtype=torch.float64),
                "text_mask": torch.tensor([[True] * 4 + [False] * 3]),
                "text_pooled": torch.randn(1, 4, generator=g, dtype=torch.float64)}
    sigma = torch.tensor([0.5, 3.0], dtype=torch.float64)
    with torch.no_grad():
        out = ClassifierFreeGuidance(denoiser, 4.0, uncond=negative)(x, sigma, cond)
        neg = {k: v.expand(2, *v.shape[1:]) for k, v in negative.items()}
        neg["class_labels"] = torch.tensor([3, 3])  # filled in with the null label
        d_c, d_n = denoiser(x, sigma, cond), denoiser(x, sigma, neg)
    torch.testing.assert_close(out, d_n + 4.0 * (d_c - d_n), rtol=1e-9, atol=1e-10)
