"""Reading images to evaluate: noisecraft grids split back exactly, directories, .npy layouts, clear errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from noisecraft.eval import EvalError
from noisecraft.eval.image_io import load_images
from noisecraft.viz import save_grid


def _images(n, c=1, h=28, w=28, seed=0):
    u8 = torch.randint(0, 256, (n, c, h, w), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    return u8.float() / 127.5 - 1  # exactly representable in 8 bits


@pytest.mark.parametrize("n,c,scale", [(7, 1, 2), (16, 3, 1), (5, 1, 3), (1, 1, 1)])
def test_grid_png_round_trip(tmp_path, n, c, scale):
    x = _images(n, c, 12, 10)
    path = tmp_path / "grid.png"
    save_grid(x, path, scale=scale, info={"num": n})
    torch.testing.assert_close(load_images(path), x, rtol=0, atol=1e-6)


def test_grid_size_from_parameters(tmp_path):
    """`noisecraft sample` grids carry 'Size: WxH' in the parameters chunk; it pins the tile size."""
    x = _images(4, 1, 8, 8)
    save_grid(x, tmp_path / "g.png", scale=2, parameters="Steps: 3, Size: 8x8", info={"num": 4})
    torch.testing.assert_close(load_images(tmp_path / "g.png"), x, rtol=0, atol=1e-6)


def test_directory_of_single_image_pngs_and_plain_files(tmp_path):
    x = _images(3, 1, 16, 16)
    for i in range(2):  # as `noisecraft sample --out DIR`: each file a 1-image grid with its 2-px border
        save_grid(x[i:i + 1], tmp_path / f"{i:06d}.png", scale=1, info={"num": 1})
    Image.fromarray(((x[2, 0] + 1) * 127.5).round().byte().numpy(), "L").save(tmp_path / "zz_plain.png")
    torch.testing.assert_close(load_images(tmp_path), x, rtol=0, atol=1e-6)


def test_npy_layouts(tmp_path):
    x = _images(4, 3, 9, 9)
    u8 = ((x + 1) * 127.5).round().byte().numpy()
    np.save(tmp_path / "nchw.npy", u8)
    np.save(tmp_path / "nhwc.npy", u8.transpose(0, 2, 3, 1))
    np.save(tmp_path / "float.npy", x.numpy())
    for name in ("nchw", "nhwc", "float"):
        torch.testing.assert_close(load_images(tmp_path / f"{name}.npy"), x, rtol=0, atol=1e-6)
    np.save(tmp_path / "gray.npy", u8[:, 0])
    assert load_images(tmp_path / "gray.npy").shape == (4, 1, 9, 9)


def test_mixed_sizes_and_bad_paths_are_clear_errors(tmp_path):
    Image.new("L", (28, 28)).save(tmp_path / "a.png")
    Image.new("L", (32, 28)).save(tmp_path / "b.png")
    with pytest.raises(EvalError, match=r"mixed sizes: .*a.png is 28x28 but .*b.png is 32x28"):
        load_images(tmp_path)
    with pytest.raises(EvalError, match="not found"):
        load_images(tmp_path / "missing")
    np.save(tmp_path / "bad.npy", np.zeros((2, 5, 5, 5)))
    with pytest.raises(EvalError, match=r"expected \(N, C, H, W\)"):
        load_images(tmp_path / "bad.npy")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvalError, match="no images under"):
        load_images(tmp_path / "empty")
