"""WAV files: exact round trips (int16 and float32), and a wrong sample rate, channel count or NaN raise a
WavError naming the expected values, with nothing written on error."""

import numpy as np
import pytest

pytest.importorskip("soundfile")
import soundfile as sf  # noqa: E402

from noisecraft.audio.io import WavError, read_wav, save_wav, wav_bytes  # noqa: E402
from noisecraft.audio.synth import SAMPLE_RATE  # noqa: E402


def test_int16_round_trip_is_exact(tmp_path):
    y = np.random.default_rng(0).integers(-32768, 32768, size=4000).astype(np.int16)
    path = save_wav(y, tmp_path / "a.wav")
    back = read_wav(path, dtype="int16")
    assert back.dtype == np.int16 and np.array_equal(back, y)
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")


def test_float_round_trip_is_exact_and_pcm16_to_a_step(tmp_path):
    y = np.random.default_rng(1).uniform(-1, 1, size=4000).astype(np.float32)
    back = read_wav(save_wav(y, tmp_path / "f.wav", subtype="FLOAT"))
    assert back.dtype == np.float32 and np.array_equal(back, y)
    pcm = read_wav(save_wav(y, tmp_path / "p.wav"))
    assert np.abs(pcm - y).max() <= 1 / 32767


def test_wrong_sample_rate_channels_and_nan_in_files(tmp_path):
    sf.write(str(tmp_path / "rate.wav"), np.zeros(100, np.float32), 22050, subtype="PCM_16")
    with pytest.raises(WavError, match="sample rate 22050 Hz, expected 16000 Hz"):
        read_wav(tmp_path / "rate.wav")
    sf.write(str(tmp_path / "stereo.wav"), np.zeros((100, 2), np.float32), SAMPLE_RATE, subtype="PCM_16")
    with pytest.raises(WavError, match=r"2 channel\(s\), expected 1 \(mono\)"):
        read_wav(tmp_path / "stereo.wav")
    assert read_wav(tmp_path / "stereo.wav", channels=2).shape == (100, 2)
    nan = np.zeros(100, np.float32)
    nan[7] = np.nan
    sf.write(str(tmp_path / "nan.wav"), nan, SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(WavError, match=r"1 sample\(s\) are NaN or inf"):
        read_wav(tmp_path / "nan.wav")
    (tmp_path / "junk.wav").write_bytes(b"not a wav")
    with pytest.raises(WavError, match="not a readable sound file"):
        read_wav(tmp_path / "junk.wav")


def test_bad_waveforms_are_refused_and_nothing_is_written(tmp_path):
    out = tmp_path / "bad.wav"
    nan = np.zeros(100, np.float32)
    nan[3] = np.inf
    with pytest.raises(WavError, match="NaN or inf"):
        save_wav(nan, out)
    with pytest.raises(WavError, match=r"lie in \[-1, 1\], got a peak of 1.5"):
        save_wav(np.full(10, 1.5, np.float32), out)
    with pytest.raises(WavError, match=r"mono waveform of shape \(samples,\), got shape \(2, 10\)"):
        save_wav(np.zeros((2, 10), np.float32), out)
    with pytest.raises(WavError, match="allowed: PCM_16, FLOAT"):
        wav_bytes(np.zeros(10, np.float32), subtype="MP3")
    assert list(tmp_path.iterdir()) == []
