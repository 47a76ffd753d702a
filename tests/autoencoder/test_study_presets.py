"""The latent-vs-pixel study presets fit together: the autoencoder preset, the pixel preset and the latent
preset of one dataset read the same images, and the latent U-Net takes the autoencoder's latents."""

from dataclasses import replace

import pytest

from noisecraft.autoencoder.config import get_ae_preset
from noisecraft.models.autoencoder import latent_shape
from noisecraft.presets import get_preset, latent_preset_for


@pytest.mark.parametrize("ae_name,pixel_name,latent_name,side,latent_side", [
    ("ae-64", "emoji-64", "ldm-64", 64, 16), ("ae-glyphs-64", "glyphs-64", "ldm-glyphs-64", 64, 16),
    ("ae-scenes", "scenes-text", "ldm-scenes-text", 32, 8)])
def test_study_presets_agree(ae_name, pixel_name, latent_name, side, latent_side):
    ae, pixel, latent = get_ae_preset(ae_name), get_preset(pixel_name), get_preset(latent_name)
    assert ae.data == pixel.data == replace(latent.data, autoencoder=None, count=None)  # (latent: more scenes)
    assert latent.data.autoencoder == f"runs/{ae_name}"
    assert latent_preset_for(ae.data.dataset) == latent_name  # what train-autoencoder suggests next
    assert pixel.network.in_channels == ae.autoencoder.in_channels
    channels, *spatial = latent_shape(ae.autoencoder, (ae.autoencoder.in_channels, side, side))
    assert latent.network.in_channels == channels and spatial == [latent_side, latent_side]
    # the same recipe on both sides of the comparison (only the data space and the network differ)
    assert pixel.train == latent.train and pixel.sample == latent.sample
    assert pixel.diffusion.prediction == latent.diffusion.prediction == "edm"
    assert pixel.text == latent.text and pixel.conditioning == latent.conditioning
