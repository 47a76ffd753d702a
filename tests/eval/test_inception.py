"""InceptionV3 for standard FID: shapes, preprocessing, strict loading, and (where torchvision is installed)
equality with pytorch-fid's own module on the same random weights. The real weights are not available
offline, so the network is checked structurally and numerically against pytorch-fid's code."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from noisecraft.eval.common import WeightsError
from noisecraft.eval.features import get_extractor, prepare_images, to_network_input
from noisecraft.eval.inception import FEATURE_DIM, NUM_CLASSES, FIDInceptionV3, inception_weights_path


def _randomize(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for k, v in net.state_dict().items():
        if k.endswith("running_var"):
            state[k] = 0.5 + torch.rand(v.shape, generator=gen)
        elif v.is_floating_point():
            state[k] = 0.1 * torch.randn(v.shape, generator=gen)
        else:
            state[k] = v
    net.load_state_dict(state)
    return net.eval()


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A weights file with pytorch-fid's keys and shapes (random values)."""
    from safetensors.torch import save_file

    net = _randomize(FIDInceptionV3())
    path = tmp_path_factory.mktemp("inception") / "pt_inception_random.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


def test_output_shapes_and_preprocessing(weights_file):
    ext = get_extractor("inception", weights=weights_file)
    assert (ext.size, ext.dim, ext.antialias) == (299, FEATURE_DIM, False)
    x = torch.rand(2, 1, 40, 30) * 2 - 1  # gray, non-square, any size
    feats, logits = ext.features_and_logits(x)
    assert feats.shape == (2, FEATURE_DIM) and logits.shape == (2, NUM_CLASSES) and feats.dtype == np.float64
    # pytorch-fid: x01 -> bilinear 299 (align_corners=False, no antialias) -> 2 x - 1; gray repeated to RGB
    x01 = (x + 1) / 2
    expected = 2 * F.interpolate(x01.expand(-1, 3, -1, -1), size=(299, 299), mode="bilinear", align_corners=False) - 1
    ours = to_network_input(prepare_images(x), size=299, channels=3, antialias=False)
    torch.testing.assert_close(ours, expected, atol=1e-6, rtol=0)


def test_missing_weights_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("NOISECRAFT_INCEPTION_WEIGHTS", raising=False)
    with pytest.raises(WeightsError, match="--inception-weights"):
        inception_weights_path(None)
    with pytest.raises(WeightsError, match="not found"):
        get_extractor("inception", weights="/nonexistent/pt_inception.pth")


def test_foreign_weights_are_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "bad.safetensors"
    save_file({"fc.weight": torch.zeros(3, 3)}, str(path))
    from noisecraft.eval.inception import load_inception

    with pytest.raises(WeightsError, match="does not fit"):
        load_inception(path)


def test_equals_pytorch_fid_module_on_same_weights():
    """Our network vs pytorch-fid's InceptionV3 (torchvision Inception3 + FID patches), same random weights:
    the state dict keys match exactly (so the real pt_inception file loads) and pool3 features agree."""
    pytest.importorskip("torchvision")
    pfi = pytest.importorskip("pytorch_fid.inception")
    ref = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    for name, block in [("Mixed_5b", pfi.FIDInceptionA(192, 32)), ("Mixed_5c", pfi.FIDInceptionA(256, 64)),
                        ("Mixed_5d", pfi.FIDInceptionA(288, 64)), ("Mixed_6b", pfi.FIDInceptionC(768, 128)),
                        ("Mixed_6c", pfi.FIDInceptionC(768, 160)), ("Mixed_6d", pfi.FIDInceptionC(768, 160)),
                        ("Mixed_6e", pfi.FIDInceptionC(768, 192)), ("Mixed_7b", pfi.FIDInceptionE_1(1280)),
                        ("Mixed_7c", pfi.FIDInceptionE_2(2048))]:
        setattr(ref, name, block)
    _randomize(ref)
    ours = FIDInceptionV3().eval()
    assert set(ours.state_dict()) == set(ref.state_dict())
    ours.load_state_dict(ref.state_dict(), strict=True)
    wrapper_cls = pfi.InceptionV3
    pfi.fid_inception_v3 = lambda: ref  # no download: the wrapper takes our randomised module
    wrapper = wrapper_cls([3], resize_input=True, normalize_input=True).eval()
    x01 = torch.rand(2, 3, 64, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = wrapper(x01)[0].flatten(1)
        got, logits = ours(to_network_input(prepare_images(x01 * 2 - 1), size=299, channels=3, antialias=False))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logits, ref.fc(expected), rtol=1e-4, atol=1e-5)
