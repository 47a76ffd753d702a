"""Guidance as denoiser wrappers: each takes a denoiser and returns a denoiser (x, sigma, cond) -> x0_hat,
so every sampler runs it unchanged.

    ClassifierFreeGuidance(denoiser, scale, uncond=..., interval=(lo, hi), rescale=phi)   Ho & Salimans 2022
    AutoGuidance(good, bad, scale, interval=...)                                          Karras et al. 2024
    ClassifierGuidance(denoiser, classifier, scale)                                       Dhariwal & Nichol 2021
    train_noisy_classifier(dataset, schedule, ...) / load_noisy_classifier(path)         its noise-aware classifier
"""

from noisecraft.guidance.cfg import (
    RESCALE_SPACES,
    AutoGuidance,
    ClassifierFreeGuidance,
    cond_spec_of,
    in_interval,
    null_class_cond,
    require_conditional,
    rescale_guidance,
)
from noisecraft.guidance.classifier import (
    ClassifierConfig,
    ClassifierGuidance,
    NoisyClassifier,
    classifier_accuracy,
    load_noisy_classifier,
    save_noisy_classifier,
    train_noisy_classifier,
)

__all__ = [
    "RESCALE_SPACES", "AutoGuidance", "ClassifierConfig", "ClassifierFreeGuidance", "ClassifierGuidance",
    "NoisyClassifier", "classifier_accuracy", "cond_spec_of", "in_interval", "load_noisy_classifier",
    "null_class_cond", "require_conditional", "rescale_guidance", "save_noisy_classifier", "train_noisy_classifier",
]
