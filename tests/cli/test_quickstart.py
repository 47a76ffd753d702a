"""`noisecraft quickstart`: a short real run writes its outputs; --precision picks the arithmetic."""

import json

import pytest

from noisecraft.cli.main import main


def test_quickstart_short_run_writes_samples_loss_and_checkpoint(tmp_path, capsys):
    out = tmp_path / "qs"
    assert main(["quickstart", "--minutes", "0.05", "--out", str(out), "--precision", "bf16"]) == 0
    assert all((out / name).is_file() for name in ("samples.png", "loss.png", "config.json",
                                                     "checkpoint.safetensors"))
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["bf16"] is True and config["network"]["channels_last"] is False
    assert "bf16 autocast" in capsys.readouterr().out


@pytest.mark.parametrize("precision, native, bf16", [("fp32", True, False), ("bf16", False, True),
                                                     ("auto", True, True), ("auto", False, False)])
def test_quickstart_precision_choice(monkeypatch, tmp_path, precision, native, bf16):
    import noisecraft.cli.train_cmd as train_cmd
    import noisecraft.training.precision as precision_mod

    seen = {}

    def fake_train(config, out, *, resume, device):
        seen["config"] = config
        return {"step": 0, "loss": 0.0}

    monkeypatch.setattr(train_cmd, "train_and_preview", fake_train)
    monkeypatch.setattr(precision_mod, "fast_bf16", lambda device: native)
    assert main(["quickstart", "--out", str(tmp_path), "--precision", precision]) == 0
    cfg = seen["config"]
    assert cfg.train.bf16 is bf16 and cfg.network.channels_last is (not bf16) and cfg.train.minutes == 8.0


def test_fast_bf16_follows_the_cpu_flags():
    """On Linux the answer for the CPU is the kernel's amx_tile flag; devices other than CPU and CUDA: False."""
    from pathlib import Path

    from noisecraft.training.precision import fast_bf16

    assert fast_bf16("meta") is False
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo to compare with")
    flags = {f for line in cpuinfo.read_text().splitlines() if line.startswith("flags") for f in line.split()}
    assert fast_bf16("cpu") is ("amx_tile" in flags)
