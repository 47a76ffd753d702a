"""Video metrics on clips with known answers."""

import pytest
import torch

from noisecraft.errors import DataError
from noisecraft.video.metrics import MotionNet, centroid_direction, fvd_nc, warping_error


def moving_square(shift=(1, 0), frames=6, side=24, start=(4, 8)):
    x = -torch.ones(1, 1, frames, side, side)
    for t in range(frames):
        r, c = start[1] + shift[1] * t, start[0] + shift[0] * t
        x[0, 0, t, r:r + 6, c:c + 6] = 1.0
    return x


def test_warping_error_is_low_for_motion_and_high_for_independent_frames():
    smooth = torch.cat([moving_square((1, 0)), moving_square((0, 1))])
    g = torch.Generator().manual_seed(0)
    independent = smooth[:, :, torch.randperm(6, generator=g)]  # the same frames, shuffled in time
    independent[:, :, ::2] = independent[:, :, ::2].flip(-1)
    assert warping_error(smooth) < 0.02 < warping_error(independent)
    still = moving_square((0, 0)).expand(2, -1, -1, -1, -1)
    assert warping_error(still) == 0.0


def test_centroid_direction_of_known_motions():
    clips = torch.cat([moving_square(s) for s in ((-1, 0), (1, 0), (0, -1), (0, 1))], dim=0)
    assert centroid_direction(clips).tolist() == [0, 1, 2, 3]  # left, right, up, down


def test_fvd_nc_is_zero_for_identical_sets_and_checks_shapes():
    torch.manual_seed(0)
    net = MotionNet(1, {"direction": 4}).eval()
    x = torch.rand(128, 1, 4, 16, 16) * 2 - 1
    assert abs(fvd_nc(x, x, net)) < 1e-6
    assert fvd_nc(x, -x, net) > 1e-3
    with pytest.raises(DataError, match="expected the same"):
        fvd_nc(x, x[:, :, :3], net)
