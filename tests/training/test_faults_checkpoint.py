"""Fault injection on checkpoint files: a save killed or failing at any stage, and damaged files (truncated,
bit-flipped, a fuzzed safetensors header). The previous checkpoint always survives; a damaged file only
ever raises CheckpointError, in bounded time and memory."""

import json
import os
import resource
import signal
import struct
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import noisecraft.files as files
from noisecraft.checkpoint import CHECKPOINT_FILE, load_checkpoint
from noisecraft.errors import CheckpointError
from noisecraft.presets import get_preset
from noisecraft.training.trainer import Trainer


def small(steps=2):
    cfg = get_preset("toy2d")
    return replace(cfg, network=replace(cfg.network, hidden=16, num_blocks=1, embed_dim=8),
                   data=replace(cfg.data, limit=64),
                   train=replace(cfg.train, steps=steps, batch_size=16, warmup_steps=1, checkpoint_every=1000))


def _temps(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A finished small run: (run dir, checkpoint bytes)."""
    out = tmp_path_factory.mktemp("good")
    Trainer(small(), out, progress=False).run()
    return out, (out / CHECKPOINT_FILE).read_bytes()


# ---------------------------------------------------------------------------------------- (2) saves
KILL_IN_SAVE = textwrap.dedent("""
    import os, signal, sys
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, {tests!r})
    from test_faults_checkpoint import small
    from noisecraft.training.trainer import Trainer
    t = Trainer(small(3), {out!r}, progress=False)
    t.run()                      # a good checkpoint at step 3
    t.train_step()
    def die(*a, **k):
        os.kill(os.getpid(), signal.SIGKILL)
    if {where!r} == "write":     # half the bytes reach the temp file, then the process dies
        real_fdopen = os.fdopen
        def fdopen(fd, *a, **k):
            f = real_fdopen(fd, *a, **k)
            write = f.write
            f.write = lambda data: (write(data[: len(data) // 2]), f.flush(), die())
            return f
        os.fdopen = fdopen
    else:
        setattr(os, {where!r}, die)
    t.save()
""")


@pytest.mark.parametrize("where", ["write", "fsync", "replace"])
def test_kill_inside_save_keeps_the_previous_checkpoint(where, tmp_path):
    """SIGKILL while writing the temp file, before its fsync, or at the rename: the previous checkpoint is
    the one that loads; the partial temp file is never taken for a checkpoint and the next successful save
    removes it."""
    script = KILL_IN_SAVE
    tests = str(Path(__file__).parent)
    proc = subprocess.run([sys.executable, "-c", script.format(tests=tests, out=str(tmp_path), where=where)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert load_checkpoint(tmp_path).state["step"] == 3  # the previous checkpoint, intact
    assert _temps(tmp_path), "the killed save left its temp file (it must not be taken for a checkpoint)"
    t = Trainer(small(4), tmp_path, resume=True, progress=False)
    assert t.step == 3
    t.run()
    assert load_checkpoint(tmp_path).state["step"] == 4 and not _temps(tmp_path)


@pytest.mark.parametrize("stage", ["serialise", "write", "fsync", "chmod", "replace"])
def test_exception_inside_save_keeps_the_previous_checkpoint(stage, good, tmp_path, monkeypatch):
    out, before = tmp_path, good[1]
    (out / CHECKPOINT_FILE).write_bytes(before)
    t = Trainer(small(3), out, resume=True, progress=False)
    t.train_step()

    def boom(*a, **k):
        raise OSError(f"injected failure in {stage}")

    if stage == "serialise":
        import safetensors.torch

        monkeypatch.setattr(safetensors.torch, "save", boom)
    elif stage == "write":
        real = os.fdopen

        def fdopen(fd, *a, **k):
            f = real(fd, *a, **k)
            f.write = boom
            return f

        monkeypatch.setattr(os, "fdopen", fdopen)
    else:
        monkeypatch.setattr(os, stage, boom)
    with pytest.raises(OSError, match="injected"):
        t.save()
    monkeypatch.undo()
    assert (out / CHECKPOINT_FILE).read_bytes() == before
    assert not _temps(out)
    assert load_checkpoint(out).state["step"] == 2
    t.save()  # and the next save works
    assert load_checkpoint(out).state["step"] == 3 and not _temps(out)


def test_successful_save_sweeps_stale_temp_files(good, tmp_path):
    (tmp_path / CHECKPOINT_FILE).write_bytes(good[1])
    stale = tmp_path / f".{CHECKPOINT_FILE}.abc123.tmp"
    stale.write_bytes(good[1][:100])
    other = tmp_path / ".unrelated.tmp"
    other.write_bytes(b"x")
    t = Trainer(small(3), tmp_path, resume=True, progress=False)
    t.save()
    assert not stale.exists() and other.exists()  # only this file's own temp files are removed


# ------------------------------------------------------------------------------ (3) damaged files
def _load_expect_error(path: Path, what: str = "") -> None:
    try:
        load_checkpoint(path)
    except CheckpointError:
        return
    raise AssertionError(f"{path} loaded although damaged ({what})")


def test_truncated_files_raise_checkpoint_error(good, tmp_path):
    data = good[1]
    path = tmp_path / CHECKPOINT_FILE
    header = struct.unpack("<Q", data[:8])[0]
    rng = np.random.default_rng(0)
    cuts = {0, 1, 7, 8, 9, 8 + header // 2, 8 + header, 8 + header + 1, len(data) - 1}
    cuts |= set(rng.integers(0, len(data), 60).tolist())
    for n in sorted(cuts):
        path.write_bytes(data[:n])
        _load_expect_error(path)


@pytest.mark.parametrize("flips", [pytest.param(300, id="300"),
                                   pytest.param(3000, id="3000", marks=pytest.mark.slow)])
def test_every_bit_flip_is_detected(good, tmp_path, flips):
    """A single flipped bit anywhere (length field, header JSON, tensor bytes) raises CheckpointError: the
    SHA-256 digest catches flips that still parse."""
    data = bytearray(good[1])
    path = tmp_path / CHECKPOINT_FILE
    rng = np.random.default_rng(1)
    header = struct.unpack("<Q", data[:8])[0]
    positions = np.concatenate([rng.integers(0, 8 + header, flips // 3), rng.integers(8 + header, len(data),
                                                                                      flips - flips // 3)])
    for pos in positions:
        bit = 1 << int(rng.integers(0, 8))
        data[pos] ^= bit
        path.write_bytes(bytes(data))
        _load_expect_error(path, f"bit {bit} at byte {pos} of {len(data)}, header {header}: "
                                 f"{bytes(data[max(0, pos - 40):pos + 8])!r}")
        data[pos] ^= bit
    path.write_bytes(bytes(data))
    load_checkpoint(path)  # and the undamaged file still loads


DTYPES = ["F32", "F16", "BF16", "F64", "I64", "I32", "I8", "U8", "BOOL", "F8_E4M3", "X", ""]
_int = st.one_of(st.integers(0, 64), st.integers(0, 2**64 - 1), st.integers(-(2**63), -1))
_entry = st.fixed_dictionaries({
    "dtype": st.sampled_from(DTYPES),
    "shape": st.lists(_int, max_size=4),
    "data_offsets": st.lists(_int, min_size=0, max_size=3),
})
_json_value = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                       max_size=3), max_leaves=6)
_meta = st.fixed_dictionaries({}, optional={
    "format": st.sampled_from(["noisecraft.checkpoint", "pt", ""]),
    "version": st.sampled_from(["1", "2"]),
    "config": _json_value.map(json.dumps) | st.text(max_size=10),
    "state": _json_value.map(json.dumps) | st.text(max_size=10),
    "optim_groups": _json_value.map(json.dumps),
    "sha256": st.text("0123456789abcdef", min_size=0, max_size=64),
})
_header = st.builds(lambda tensors, meta, junk: {**tensors, **({"__metadata__": meta} if meta is not None else {}),
                                                 **junk},
                    st.dictionaries(st.sampled_from(["model.w", "ema.w", "optim.0.step", "x", "phema.0.w"]), _entry,
                                    max_size=3),
                    st.none() | _meta,
                    st.dictionaries(st.sampled_from(["__metadata__", "y"]), _json_value, max_size=1))


@st.composite
def safetensors_files(draw):
    header = json.dumps(draw(_header)).encode()
    if draw(st.booleans()):
        header += b" " * (-len(header) % 8)
    claimed = draw(st.one_of(st.just(len(header)), st.integers(0, 2**64 - 1), st.integers(0, len(header) + 8)))
    body = draw(st.binary(max_size=256))
    return struct.pack("<Q", claimed) + header + body


def _fuzz(tmp_path, examples):
    path = tmp_path / "fuzzed.safetensors"
    worst = [0.0, b""]

    @settings(max_examples=examples, deadline=2000, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(safetensors_files())
    def check(data):
        path.write_bytes(data)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            load_checkpoint(path)
        except CheckpointError:
            pass  # the only exception allowed; loading a valid-by-chance file is fine too
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        if grown > worst[0]:
            worst[:] = [grown, data]

    check()
    assert worst[0] < 64, f"peak memory grew by {worst[0]:.0f} MB loading {worst[1][:300]!r}"


def test_fuzzed_headers_raise_only_checkpoint_error(tmp_path):
    _fuzz(tmp_path, 200)


@pytest.mark.slow
def test_fuzzed_headers_raise_only_checkpoint_error_1000(tmp_path):
    _fuzz(tmp_path, 1500)


def test_huge_claimed_sizes_do_not_allocate(tmp_path):
    path = tmp_path / "huge.safetensors"
    meta = {"format": "noisecraft.checkpoint", "version": "1", "config": "{}", "state": "{}", "optim_groups": "[]"}
    cases = [
        struct.pack("<Q", 2**63) + b"{}",  # a header length far beyond the file
        struct.pack("<Q", 2**40) + b"{}",
    ]
    for shape in ([2**40], [2**31, 2**31], [2**62, 4]):
        header = json.dumps({"__metadata__": meta, "model.w": {"dtype": "F32", "shape": shape,
                                                               "data_offsets": [0, 4 * int(np.prod(shape))]}})
        cases.append(struct.pack("<Q", len(header)) + header.encode() + b"\0" * 16)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for data in cases:
        path.write_bytes(data)
        _load_expect_error(path)
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024 < 100


def test_content_digest_covers_metadata_and_tensors():
    t = {"model.w": torch.arange(4.0)}
    m = {"format": "noisecraft.checkpoint", "config": "{}"}
    d = files.content_digest(t, m)
    assert d == files.content_digest({"model.w": torch.arange(4.0)}, dict(m))
    assert d != files.content_digest({"model.w": torch.arange(4.0) + 1e-7}, m)
    assert d != files.content_digest(t, {**m, "config": "{ }"})
    assert d != files.content_digest({"model.w": torch.arange(4.0).reshape(2, 2)}, m)
    assert d == files.content_digest(t, {**m, "sha256": "anything"})  # the digest itself is excluded
