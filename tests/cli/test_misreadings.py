"""Inputs whose interpretation is ambiguous are detected unambiguously or refused with the choices named (issue 25):
value ranges and axis orders of .npy arrays, grid PNGs against one-image PNGs, a run folder's config.json that is not
the checkpoint's config, and `sample --out` into folders that do not exist yet."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from noisecraft.cli.main import main
from noisecraft.eval import EvalError
from noisecraft.eval.features import prepare_images
from noisecraft.eval.image_io import load_images, read_single_image
from noisecraft.viz import save_grid, save_png, to_uint8


def _u8(n=6, c=1, h=12, w=10, seed=0) -> np.ndarray:
    return torch.randint(0, 256, (n, c, h, w), generator=torch.Generator().manual_seed(seed),
                         dtype=torch.uint8).numpy()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "--preset", "mnist-tiny", "--out", str(out), "--steps", "2", "data.limit=16",
                 "train.batch_size=4", "sample.num=1"]) == 0
    return out


# --- value ranges -----------------------------------------------------------------------------------------------

def test_unit_float_array_is_refused_with_the_choices_then_read_exactly(tmp_path):
    u8 = _u8()
    np.save(tmp_path / "unit.npy", u8.astype(np.float32) / 255)
    with pytest.raises(EvalError, match=r"ambiguous.*--value-range unit.*--value-range signed"):
        load_images(tmp_path / "unit.npy")
    expected = torch.from_numpy(u8).float() / 127.5 - 1
    got = load_images(tmp_path / "unit.npy", value_range="unit")
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)  # the same images as the uint8 file


def test_unambiguous_float_ranges_are_detected(tmp_path):
    u8 = _u8()
    expected = torch.from_numpy(u8).float() / 127.5 - 1
    np.save(tmp_path / "byte.npy", u8.astype(np.float64))  # floats holding 0..255
    np.save(tmp_path / "signed.npy", expected.numpy())     # has values below 0
    for name in ("byte", "signed"):
        torch.testing.assert_close(load_images(tmp_path / f"{name}.npy"), expected, rtol=0, atol=1e-6)


def test_a_range_that_does_not_fit_the_values_names_the_ranges():
    with pytest.raises(EvalError, match=r"given as floating point in \[0, 1\].*allowed value ranges: signed"):
        prepare_images(torch.full((1, 1, 4, 4), 200.0), "unit")
    with pytest.raises(EvalError, match="unknown value range 'percent'; allowed: auto, signed, unit, byte"):
        prepare_images(torch.zeros(1, 1, 4, 4), "percent")
    with pytest.raises(EvalError, match="uint8 images are 0..255"):
        prepare_images(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), "unit")


def test_eval_cli_value_range_flag(tmp_path, capsys):
    """The CLI refuses the ambiguous array in one line and reads it with the flag: FD of MNIST digits against
    MNIST is small only when the range is right."""
    from noisecraft.data import load_dataset

    x = load_dataset("mnist", split="test").images[::5][:100]  # (100, 1, 28, 28) in [-1, 1], all ten digits
    np.save(tmp_path / "digits.npy", ((x.numpy() + 1) / 2).astype(np.float32))
    assert main(["eval", "--images", str(tmp_path / "digits.npy"), "--reference", "mnist", "--metrics", "fd"]) == 2
    assert "--value-range unit" in capsys.readouterr().err
    fds = {}
    for value_range in ("unit", "signed"):
        path = tmp_path / f"{value_range}.json"
        assert main(["eval", "--images", str(tmp_path / "digits.npy"), "--reference", "mnist", "--metrics", "fd",
                     "--value-range", value_range, "--json", str(path)]) == 0
        fds[value_range] = json.loads(path.read_text())["fd"]
    assert fds["unit"] * 10 < fds["signed"]


# --- axis order -------------------------------------------------------------------------------------------------

def test_a_shape_that_fits_both_layouts_is_refused_then_read_as_told(tmp_path):
    u8 = _u8(4, 3, 9, 3)  # (N, 3, 9, 3): NCHW with W = 3, or NHWC with H = 3, W = 9 and C = 3
    np.save(tmp_path / "both.npy", u8)
    with pytest.raises(EvalError, match=r"fits both .*--layout nchw or --layout nhwc"):
        load_images(tmp_path / "both.npy")
    assert load_images(tmp_path / "both.npy", layout="nchw").shape == (4, 3, 9, 3)
    nhwc = load_images(tmp_path / "both.npy", layout="nhwc")
    torch.testing.assert_close(nhwc, torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 127.5 - 1, rtol=0, atol=0)


# --- grid PNGs and one-image PNGs ---------------------------------------------------------------------------------

def test_sample_out_dir_files_are_the_images_and_eval_reads_them_as_such(run_dir, tmp_path):
    assert main(["sample", "--checkpoint", str(run_dir), "--steps", "2", "--num", "3", "--out",
                 str(tmp_path / "one")]) == 0
    assert main(["sample", "--checkpoint", str(run_dir), "--steps", "2", "--num", "3", "--out",
                 str(tmp_path / "grid.png")]) == 0
    files = sorted((tmp_path / "one").glob("*.png"))
    assert [Image.open(f).size for f in files] == [(28, 28)] * 3  # the image itself, no border
    per_file = load_images(tmp_path / "one")
    torch.testing.assert_close(per_file, load_images(tmp_path / "grid.png"), rtol=0, atol=0)
    torch.testing.assert_close(read_single_image(files[1]), per_file[1], rtol=0, atol=0)


def test_old_one_image_files_and_one_tile_grids(tmp_path):
    x = torch.from_numpy(_u8(2, 1, 8, 8)).float() / 127.5 - 1
    # a file written before the grid flag: one image whose picture has the Size of its parameters
    save_png(to_uint8(x[:1])[0], tmp_path / "old.png", parameters="Steps: 3, Size: 8x8", info={"num": 1})
    torch.testing.assert_close(read_single_image(tmp_path / "old.png"), x[0], rtol=0, atol=0)
    # a grid of one image (`sample --num 1 --out x.png`): its tile, without border or enlargement
    save_grid(x[:1], tmp_path / "grid1.png", parameters="Steps: 3, Size: 8x8", info={"num": 1})
    assert Image.open(tmp_path / "grid1.png").size == (24, 24)
    torch.testing.assert_close(read_single_image(tmp_path / "grid1.png"), x[0], rtol=0, atol=0)
    save_grid(x, tmp_path / "grid2.png", info={"num": 2})
    with pytest.raises(EvalError, match="is a noisecraft grid of 2 images; give one image"):
        read_single_image(tmp_path / "grid2.png")


def test_img2img_refuses_a_grid_as_its_input_image(run_dir, tmp_path, capsys):
    assert main(["sample", "--checkpoint", str(run_dir), "--steps", "2", "--num", "4", "--out",
                 str(tmp_path / "g.png")]) == 0
    capsys.readouterr()
    assert main(["img2img", "--checkpoint", str(run_dir), "--image", str(tmp_path / "g.png"), "--steps", "2",
                 "--out", str(tmp_path / "e.png")]) == 2
    assert "grid of 4 images" in capsys.readouterr().err
    assert main(["sample", "--checkpoint", str(run_dir), "--steps", "2", "--num", "1", "--out",
                 str(tmp_path / "g1.png")]) == 0
    assert main(["img2img", "--checkpoint", str(run_dir), "--image", str(tmp_path / "g1.png"), "--steps", "2",
                 "--out", str(tmp_path / "e.png")]) == 0  # the grid's one tile is the model's size


# --- run folders and output paths ---------------------------------------------------------------------------------

def _edited(text: str, steps: int) -> str:
    config = json.loads(text)
    config["sample"]["steps"] = steps
    return json.dumps(config)


@pytest.mark.parametrize("edit,needle", [
    (lambda text: "{corrupt", "is not valid JSON"),
    (lambda text: "[1, 2]", "is not a JSON object"),
    (lambda text: _edited(text, steps=99), "differs from the checkpoint's config in sample.steps"),
])
def test_a_config_json_that_is_not_the_checkpoints_is_reported(run_dir, tmp_path, capsys, edit, needle):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    text = (copy / "config.json").read_text()
    (copy / "config.json").write_text(edit(text))
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(copy), "--steps", "2", "--num", "1", "--out",
                 str(tmp_path / "x.png")]) == 0
    err = capsys.readouterr().err
    assert f"noisecraft: warning: {copy / 'config.json'} {needle}" in err
    assert "using the config stored in checkpoint.safetensors" in err and "Traceback" not in err


def test_an_unchanged_config_json_says_nothing(run_dir, tmp_path, capsys):
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(run_dir), "--steps", "2", "--num", "1", "--out",
                 str(tmp_path / "x.png")]) == 0
    assert "warning" not in capsys.readouterr().err


def test_sample_out_into_folders_that_do_not_exist(run_dir, tmp_path):
    for out in (tmp_path / "a" / "b" / "grid.png", tmp_path / "c" / "d" / "dir"):
        assert main(["sample", "--checkpoint", str(run_dir), "--steps", "2", "--num", "2", "--out", str(out)]) == 0
    assert (tmp_path / "a" / "b" / "grid.png").is_file()
    assert len(list((tmp_path / "c" / "d" / "dir").glob("*.png"))) == 2


def test_a_dataset_folder_refuses_sample_sheets(tmp_path):
    from noisecraft.data import load_dataset
    from noisecraft.errors import DataError

    x = torch.from_numpy(_u8(4, 1, 8, 8)).float() / 127.5 - 1
    save_png(to_uint8(x[:1])[0], tmp_path / "a.png", info={"num": 1, "grid": False})  # one image: fine
    assert load_dataset("folder", root=tmp_path, resolution=8, channels=1).images.shape == (1, 1, 8, 8)
    save_grid(x, tmp_path / "sheet.png", info={"num": 4})
    with pytest.raises(DataError, match=r"sheet.png is a noisecraft grid of 4 images, not one image"):
        load_dataset("folder", root=tmp_path, resolution=8, channels=1)
