"""Video datasets: exact motion ground truth, determinism, the folder loader and its errors."""

import numpy as np
import pytest
import torch

from noisecraft.data import load_dataset
from noisecraft.data.video import DIRECTIONS, UNIT, bounce, check_clip, read_video, render_digit_clip
from noisecraft.errors import DataError


def test_moving_mnist_shapes_range_and_determinism():
    a = load_dataset("moving-mnist", split="train", limit=16, frames=6, resolution=24)
    b = load_dataset("moving-mnist", split="train", limit=16, frames=6, resolution=24)
    assert a.images.shape == (16, 1, 6, 24, 24) and torch.equal(a.images, b.images)
    assert a.images.min() >= -1 and a.images.max() <= 1
    assert a.labels.shape == (16,) and len(set(a.labels.tolist())) > 1


def test_moving_mnist_positions_follow_velocity_and_bounce_off_the_walls():
    ds = load_dataset("moving-mnist", split="train", limit=64, frames=8, resolution=24)
    pos, v = ds.attributes["position"].double(), ds.attributes["velocity"].double()  # (N, T, 2), (N, 2)
    size = 12
    assert pos.min() >= 0 and pos.max() <= 24 - size + 1e-6
    step = pos[:, 1] - pos[:, 0]
    free = ((pos[:, 0] + v) >= 0).all(1) & ((pos[:, 0] + v) <= 24 - size).all(1)
    torch.testing.assert_close(step[free], v[free], rtol=0, atol=1e-5)  # off the walls: one velocity step
    d = ds.attributes["direction"]
    ux = torch.tensor([UNIT[n][0] for n in DIRECTIONS], dtype=torch.float64)[d]
    uy = torch.tensor([UNIT[n][1] for n in DIRECTIONS], dtype=torch.float64)[d]
    assert ((v[:, 0] * ux + v[:, 1] * uy) > 0).all()  # the velocity points (within 30 degrees) the named way


def test_bounce_is_a_reflection():
    p = np.array([-1.0, 0.0, 3.0, 11.0, 12.0, 25.0])
    assert np.allclose(bounce(p, 0.0, 10.0), [1.0, 0.0, 3.0, 9.0, 8.0, 5.0])


def test_digit_is_pasted_where_the_position_says():
    digit = np.full((4, 4), 200, np.uint8)
    clip = render_digit_clip(digit, np.array([[0.0, 0.0], [3.2, 5.0]]), 10)
    assert clip[0, :4, :4].min() == 200 and clip[0].sum() == 200 * 16
    assert clip[1, 5:9, 3:7].min() == 200 and clip[1].sum() == 200 * 16


def test_moving_scenes_captions_name_the_motion_and_the_shape_moves_that_way():
    from noisecraft.data import scenes as sc

    ds = load_dataset("moving-scenes", split="train", limit=48, frames=8)
    assert ds.images.shape == (48, 3, 8, 32, 32)
    a = ds.attributes
    for i, caption in enumerate(ds.captions):
        words = caption.split()
        assert words[-1] == DIRECTIONS[int(a["direction"][i])]
        assert words[-2] == ("bounces" if a["bounce"][i] else "moves")
        assert words[-3] == sc.SHAPES[int(a["shape"][i])] and words[-4] == sc.COLOURS[int(a["colour"][i])]
    from noisecraft.video.metrics import centroid_direction

    assert torch.equal(centroid_direction(ds.images), a["direction"])  # the rendered pixels move as labelled


def test_bouncing_shapes_come_back():
    ds = load_dataset("moving-scenes", split="train", limit=64, frames=8)
    a = ds.attributes
    along = torch.where(a["direction"] < 2, 0, 1)  # x for left/right, y for up/down
    p = ds.attributes["position"][torch.arange(64), :, along]  # (N, T)
    forward = torch.tensor([-1.0, 1.0, -1.0, 1.0])[a["direction"]]
    first, last = (p[:, 1] - p[:, 0]) * forward, (p[:, -1] - p[:, -2]) * forward
    assert (first > 0).all()
    assert ((last < 0) == a["bounce"].bool()).all()


def write_clip(path, frames=6, side=16):
    from noisecraft.pipelines.generate import Generation
    from noisecraft.video.io import write_video

    x = torch.linspace(-1, 1, frames * side * side).reshape(1, 1, frames, side, side).expand(1, 3, -1, -1, -1)
    return write_video(Generation(x.contiguous(), [0], {}, x), path)


def test_video_folder_reads_files_and_captions(tmp_path):
    for i in range(2):
        write_clip(tmp_path / f"c{i}.mp4")
        (tmp_path / f"c{i}.txt").write_text(f"clip {i}")
    ds = load_dataset("video-folder", root=str(tmp_path), frames=4, resolution=16)
    assert ds.images.shape == (2, 3, 4, 16, 16) and ds.captions == ("clip 0", "clip 1")


def test_video_file_errors_name_what_was_expected(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(DataError, match="is empty .0 bytes.; expected a video"):
        read_video(tmp_path / "empty.mp4")
    (tmp_path / "junk.mp4").write_bytes(bytes(range(256)) * 8)
    with pytest.raises(DataError, match="cannot decode video file .*junk.mp4"):
        read_video(tmp_path / "junk.mp4")
    write_clip(tmp_path / "short.mp4", frames=3)
    with pytest.raises(DataError, match="has 3 frames; expected at least 8"):
        read_video(tmp_path / "short.mp4", frames=8)
    with pytest.raises(DataError, match="is not a directory"):
        load_dataset("video-folder", root=str(tmp_path / "none"))
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match="no video files found .* allowed extensions"):
        load_dataset("video-folder", root=str(tmp_path / "images"))


def test_check_clip_names_trained_frames_and_size():
    with pytest.raises(DataError, match="trained on 8 frames of 24x24 with 1 channel.*got 6 frames of 32x32"):
        check_clip(torch.zeros(1, 6, 32, 32), (1, 8, 24, 24))
    with pytest.raises(DataError, match="data.frames applies to the video datasets"):
        load_dataset("mnist", frames=4)
