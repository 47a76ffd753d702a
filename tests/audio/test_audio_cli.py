"""End to end: noisecraft train --preset bach-audio (tiny: 16 mel bands, two chorales, two steps), then
noisecraft sample --out clip.wav (Griffin-Lim), a spectrogram .png and a directory of WAVs; a wrong extension is
a one-line error."""

import numpy as np
import pytest

pytest.importorskip("librosa")
pytest.importorskip("music21")

from noisecraft.audio.io import GAP_SECONDS, read_wav  # noqa: E402
from noisecraft.audio.synth import SAMPLE_RATE  # noqa: E402
from noisecraft.cli.main import main  # noqa: E402

TINY = ["data.count=2", "data.resolution=16", "train.batch_size=4", "network.base_channels=8",
        "network.channel_mult=[1,2]", "network.attention_levels=[1]", "network.head_channels=8",
        "network.norm_groups=4", "sample.steps=2", "sample.num=2"]
CLIP = 64 * 512  # samples of one 64-frame clip


@pytest.fixture(scope="module")
def audio_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bach")
    assert main(["train", "--preset", "bach-audio", "--steps", "2", "--out", str(out), "--device", "cpu",
                 *TINY]) == 0
    return out


def test_train_then_sample_wav_png_and_directory(audio_run, tmp_path):
    assert (audio_run / "samples.png").is_file()  # train's preview: the spectrograms
    assert main(["sample", "--checkpoint", str(audio_run), "--num", "2", "--steps", "2", "--class", "1",
                 "--guidance", "2", "--out", str(tmp_path / "clip.wav")]) == 0
    y = read_wav(tmp_path / "clip.wav")
    assert y.shape == (2 * CLIP + round(GAP_SECONDS * SAMPLE_RATE),) and np.isfinite(y).all()
    assert np.abs(y).max() <= 1.0 and np.abs(y).max() > 0
    assert main(["sample", "--checkpoint", str(audio_run), "--num", "2", "--steps", "2", "--seed", "5",
                 "--out", str(tmp_path / "clips")]) == 0
    assert sorted(p.name for p in (tmp_path / "clips").iterdir()) == ["000005.wav", "000006.wav"]
    assert read_wav(tmp_path / "clips" / "000006.wav").shape == (CLIP,)
    assert main(["sample", "--checkpoint", str(audio_run), "--num", "2", "--steps", "2",
                 "--out", str(tmp_path / "spec.png")]) == 0
    from PIL import Image

    with Image.open(tmp_path / "spec.png") as im:
        assert im.size[0] > 100


def test_bad_extension_is_a_one_line_error(audio_run, tmp_path, capsys):
    assert main(["sample", "--checkpoint", str(audio_run), "--out", str(tmp_path / "x.mp3")]) != 0
    err = capsys.readouterr().err
    assert "audio model writes .png, .wav, a directory; got '.mp3'" in err and "Traceback" not in err
    assert not (tmp_path / "x.mp3").exists()


def test_text_preset_trains_and_samples_a_prompt(tmp_path):
    pytest.importorskip("transformers")
    assert main(["train", "--preset", "bach-audio-text", "--steps", "1", "--out", str(tmp_path), "--device", "cpu",
                 *TINY]) == 0
    assert main(["sample", "--checkpoint", str(tmp_path), "--num", "1", "--steps", "2", "--prompt",
                 "a chorale phrase in C minor", "--guidance", "2", "--out", str(tmp_path / "minor.wav")]) == 0
    assert read_wav(tmp_path / "minor.wav").shape == (CLIP,)
