"""Classifier guidance (Dhariwal & Nichol 2021): with the mixture's exact class posterior, scale 1 reproduces the
exact conditional denoiser (Tweedie + Bayes) and sampling with it lands on the requested class; the noise-aware
classifier network trains, saves/loads through safetensors + JSON, and refuses foreign files."""

import json
from dataclasses import replace

import pytest
import torch

from analytic import GaussianMixture
from noisecraft import samplers
from noisecraft.core.denoiser import Denoiser
from noisecraft.core.prediction import Prediction
from noisecraft.errors import CheckpointError, ConfigError, DataError, NoisecraftError
from noisecraft.guidance import (
    ClassifierConfig,
    ClassifierGuidance,
    NoisyClassifier,
    classifier_accuracy,
    load_noisy_classifier,
    train_noisy_classifier,
)
from noisecraft.models.unet import UNET_PRESETS, UNet
from noisecraft.schedules.steps import get_sigmas
from noisecraft.schedules.training import build_schedule

# four components in three classes (class 1 has two components far apart)
MIX = GaussianMixture(means=[[-4.0, 0.0], [4.0, 1.0], [0.0, 5.0], [1.0, -5.0]], stds=[0.6, 0.8, 0.5, 0.7],
                      weights=[0.3, 0.3, 0.2, 0.2], classes=[0, 1, 2, 1])
C = MIX.num_classes


def exact_classifier(x, sigma):
    """log p(y | x, sigma) of the mixture in closed form: a perfect noise-aware classifier."""
    return MIX.class_log_posterior(x, sigma)


def _batch(n=64, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64) * 4
    sigma = torch.exp(torch.randn(n, generator=g, dtype=torch.float64) * 1.5)
    return x.to(dtype), sigma, torch.randint(0, C, (n,), generator=g)


def test_class_posterior_is_normalised_and_tweedie_identity_holds_in_the_oracle():
    x, sigma, _ = _batch()
    logp = MIX.class_log_posterior(x, sigma)
    torch.testing.assert_close(logp.exp().sum(1), torch.ones(len(x), dtype=torch.float64))
    # classes = components -> the posterior is the component posterior
    single = GaussianMixture(MIX.means, MIX.stds, MIX.weights)
    torch.testing.assert_close(single.class_log_posterior(x, sigma).exp(), single.posterior(x, sigma))
    # the null label gives the unconditional denoiser
    torch.testing.assert_close(MIX.denoise_class(x, sigma, torch.full((len(x),), C)), MIX.denoise(x, sigma))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_scale_one_with_exact_posterior_is_the_exact_conditional_denoiser(dtype, tol):
    """D + sigma^2 grad log p(y | x, sigma) = E[x0 | x, y] (to float tolerance; float32 inputs take the
    gradient in float32)."""
    x, sigma, labels = _batch(dtype=dtype)
    guided = ClassifierGuidance(MIX.denoise, exact_classifier, 1.0)
    with torch.no_grad():  # the wrapper enables gradients itself
        out = guided(x, sigma, {"class_labels": labels})
    expected = MIX.denoise_class(x.double(), sigma, labels)
    err = (out.double() - expected).abs() / (1 + expected.abs())
    assert err.max() < tol, err.max()
    assert out.dtype == dtype


def test_scale_s_is_d_plus_s_sigma2_grad_and_scale_zero_the_base():
    x, sigma, labels = _batch()
    d_c, d = MIX.denoise_class(x, sigma, labels), MIX.denoise(x, sigma)
    out = ClassifierGuidance(MIX.denoise, exact_classifier, 3.0)(x, sigma, {"class_labels": labels})
    torch.testing.assert_close(out, d + 3.0 * (d_c - d), rtol=1e-9, atol=1e-9)  # sigma^2 grad = d_c - d
    unguided = ClassifierGuidance(MIX.denoise, exact_classifier, 0.0)
    torch.testing.assert_close(unguided(x, sigma, {"class_labels": labels}), d)


def test_guided_heun_sampling_lands_on_the_requested_class():
    """Heun, 32 steps, EDM (Karras) sigmas from 80: every class is requested equally; >= 99% of samples end
    nearest to a component of their class (class 1's two components both receive samples)."""
    n = 600
    sigmas = get_sigmas(build_schedule("edm"), 32, "karras")
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64) * sigmas[0]
    labels = torch.arange(n) % C
    guided = ClassifierGuidance(MIX.denoise, exact_classifier, 1.0)
    out = samplers.get("heun")(guided, x, sigmas, cond={"class_labels": labels})
    nearest = torch.cdist(out, MIX.means).argmin(1)
    hit = MIX.classes[nearest] == labels
    assert hit.float().mean() >= 0.99, hit.float().mean()
    assert {1, 3} <= set(nearest[labels == 1].tolist())
    # and it is (numerically) the same as sampling the exact conditional model
    ref = samplers.get("heun")(MIX.conditional_denoiser(), x, sigmas, cond={"class_labels": labels})
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)


def test_guidance_errors():
    x, sigma, labels = _batch(4)
    guided = ClassifierGuidance(MIX.denoise, exact_classifier, 1.0)
    with pytest.raises(NoisecraftError, match="needs cond\\['class_labels'\\]"):
        guided(x, sigma, None)
    with pytest.raises(NoisecraftError, match="classes 0..2"):
        guided(x, sigma, {"class_labels": torch.tensor([0, 1, 2, 3])})
    with pytest.raises(NoisecraftError, match=r"expected shape \(4,\)"):
        guided(x, sigma, {"class_labels": torch.tensor([0, 1])})
    with pytest.raises(NoisecraftError, match="finite number"):
        ClassifierGuidance(MIX.denoise, exact_classifier, float("inf"))


def test_conditional_denoiser_receives_labels_only_when_asked():
    seen = []

    def base(x, sigma, cond=None):
        seen.append(cond)
        return torch.zeros_like(x)

    x, sigma, labels = _batch(4)
    ClassifierGuidance(base, exact_classifier, 1.0)(x, sigma, {"class_labels": labels})
    ClassifierGuidance(base, exact_classifier, 1.0, conditional_denoiser=True)(x, sigma, {"class_labels": labels})
    assert seen[0] is None and torch.equal(seen[1]["class_labels"], labels)


# ------------------------------------------------------------------------------------- the network
def _toy_images(n=256, seed=0):
    """Two classes of 8x8 images: a bright left half or a bright right half."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    images = -torch.ones(n, 1, 8, 8)
    images[labels == 0, :, :, :4] = 1
    images[labels == 1, :, :, 4:] = 1
    return images + 0.1 * torch.randn(images.shape, generator=g), labels


TINY = ClassifierConfig(in_channels=1, num_classes=2, base_channels=8, channel_mult=(1, 2), attention_levels=(1,),
                        head_channels=8, norm_groups=4)


def test_noisy_classifier_trains_saves_and_loads(tmp_path):
    images, labels = _toy_images()
    schedule = build_schedule("edm")
    model = train_noisy_classifier((images, labels), schedule, config=TINY, steps=60, batch_size=32, lr=3e-3,
                                   out_dir=tmp_path, progress=False)
    assert classifier_accuracy(model, images, labels, 0.2) >= 0.95
    assert classifier_accuracy(model, images, labels, 200.0) < 0.8  # pure noise: near chance
    meta = json.loads((tmp_path / "classifier.json").read_text())
    assert meta["config"]["num_classes"] == 2 and meta["info"]["steps"] == 60 and meta["info"]["schedule"] == "edm"
    loaded = load_noisy_classifier(tmp_path)
    x, sigma = images[:4], torch.tensor([0.1, 1.0, 5.0, 50.0])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, sigma), model(x, sigma), rtol=0, atol=0)


def test_guidance_with_the_trained_classifier_runs_through_a_sampler(tmp_path):
    images, labels = _toy_images()
    schedule = build_schedule("edm")
    clf = train_noisy_classifier((images, labels), schedule, config=TINY, steps=20, batch_size=32, progress=False)
    denoiser = Denoiser(UNet(UNET_PRESETS["tiny"]), schedule, Prediction("edm")).eval()
    guided = ClassifierGuidance(denoiser, clf, 2.0)
    sigmas = get_sigmas(schedule, 4, "karras")
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * sigmas[0]
    with torch.no_grad():
        out = samplers.get("heun")(guided, x, sigmas, cond={"class_labels": torch.tensor([0, 1])})
    assert out.shape == x.shape and torch.isfinite(out).all()
    # the classifier's gradient changes the trajectory
    plain = samplers.get("heun")(denoiser, x, sigmas)
    assert not torch.allclose(out, plain)


def test_classifier_files_and_config_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no noisy classifier"):
        load_noisy_classifier(tmp_path)
    (tmp_path / "classifier.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_noisy_classifier(tmp_path)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "classifier.safetensors"), metadata={"format": "other"})
    with pytest.raises(CheckpointError, match="not a noisecraft noisy classifier"):
        load_noisy_classifier(tmp_path / "classifier.safetensors")
    with pytest.raises(ConfigError, match="num_classes"):
        ClassifierConfig(num_classes=1)
    with pytest.raises(ConfigError, match="UNetConfig.norm_groups"):
        replace(TINY, norm_groups=3)
    with pytest.raises(DataError, match="labelled dataset"):
        train_noisy_classifier(torch.zeros(4, 1, 8, 8), build_schedule("edm"), progress=False)
    with pytest.raises(NoisecraftError, match=r"expected shape \(B, 1, S, S\)"):
        NoisyClassifier(TINY)(torch.zeros(2, 1, 7, 7), 1.0)


@pytest.mark.parametrize("scale", [0.5, 3.0])
def test_exact_classifier_guidance_equals_exact_classifier_free_guidance(scale):
    """Ho & Salimans 2022, sec. 3: with exact models, D_c - D_u = sigma^2 grad log p(y | x, sigma), so CFG at
    scale w and classifier guidance at scale w (on the unconditional model) are the same denoiser."""
    from noisecraft.guidance import ClassifierFreeGuidance

    x, sigma, labels = _batch()
    cg = ClassifierGuidance(MIX.denoise, exact_classifier, scale)(x, sigma, {"class_labels": labels})
    cfg = ClassifierFreeGuidance(MIX.conditional_denoiser(), scale)(x, sigma, {"class_labels": labels})
    torch.testing.assert_close(cg, cfg, rtol=1e-9, atol=1e-9)
