"""Autoencoder checkpoints share the diffusion checkpoints' writer: SHA-256 digest, finite check, atomic."""

import pytest
import torch

from noisecraft.autoencoder.checkpoint import load_ae_checkpoint, save_ae_checkpoint
from noisecraft.errors import CheckpointError


def _save(tmp_path, w):
    model = {"w": w}
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(3))]).state_dict()
    return save_ae_checkpoint(tmp_path, config={"name": "t"}, state={"step": 1}, model=model, disc=None,
                              optimizers={"optim_ae": opt})


def test_round_trip_and_flipped_byte_detected(tmp_path):
    path = _save(tmp_path, torch.arange(64, dtype=torch.float32))
    ck = load_ae_checkpoint(tmp_path)
    assert torch.equal(ck.tensors["model"]["w"], torch.arange(64, dtype=torch.float32))
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x10  # inside the tensor bytes at the end of the file
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_ae_checkpoint(tmp_path)


def test_non_finite_weights_are_not_saved(tmp_path):
    with pytest.raises(CheckpointError, match="non-finite"):
        _save(tmp_path, torch.tensor([1.0, float("nan")]))
    assert not list(tmp_path.iterdir())
