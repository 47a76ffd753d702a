"""The audio building blocks: the synthesiser's pitches by FFT, its amplitude bound, the ADSR envelope, and the
log-mel image <-> waveform round trip (Griffin-Lim) on a rendered note."""

import numpy as np
import pytest

from noisecraft.audio.synth import ADSR, SAMPLE_RATE, envelope, midi_to_hz, render, render_note


@pytest.mark.parametrize("midi", [45, 57, 60, 69, 74, 81])
def test_rendered_note_fundamental_by_fft(midi):
    n = SAMPLE_RATE  # 1 s: 1 Hz FFT bins
    y = render_note(midi, n, adsr=ADSR(attack=0.0, decay=0.0, sustain=1.0, release=0.0))
    spectrum = np.abs(np.fft.rfft(y * np.hanning(n)))
    f0 = float(midi_to_hz(midi))
    peak = int(np.argmax(spectrum[: int(f0 * 1.5)]))  # the fundamental is the strongest partial (amplitude 1)
    assert abs(peak - f0) <= 1.0, (peak, f0)
    assert midi_to_hz(69) == 440.0 and np.isclose(midi_to_hz(81), 880.0)


def test_partials_stay_below_max_freq():
    n = SAMPLE_RATE
    y = render_note(84, n, max_freq=4000.0, adsr=ADSR(0.0, 0.0, 1.0, 0.0))  # C6, 1046.5 Hz: partials 1..3 only
    spectrum = np.abs(np.fft.rfft(y * np.hanning(n)))
    assert spectrum[4200:].max() < 1e-3 * spectrum.max()


def test_envelope_shape_and_render_bound():
    e = envelope(1600, SAMPLE_RATE, ADSR(attack=0.01, decay=0.02, sustain=0.5, release=0.01))
    assert len(e) == 1600 and e[0] == 0.0 and e.max() <= 1.0 and e[-1] == 0.0
    assert np.allclose(e[480:1440], 0.5)
    assert len(envelope(10, SAMPLE_RATE)) == 10  # shorter than attack + decay + release: scaled down
    loud = np.array([[m, 0.0, 1.0, v] for v, m in enumerate((48, 55, 64, 72))])  # four voices at once
    y = render(loud, 1.0)
    assert y.dtype == np.float32 and len(y) == SAMPLE_RATE and np.abs(y).max() <= 1.0
    assert render(np.array([[60, 2.0, 1.0, 0]]), 1.0).max() == 0.0  # a note past the end is cut


def test_mel_round_trip_keeps_the_loud_bins():
    pytest.importorskip("librosa")
    from noisecraft.audio.mel import MelSpec, image_to_wave, wave_to_image

    spec = MelSpec(n_mels=32, frames=32)
    notes = np.array([[60, 0.0, 0.5, 0], [67, 0.5, 0.5, 1]])
    y = render(notes, spec.clip_seconds) * 4  # one voice at a time: use the range
    x = wave_to_image(y, spec)
    assert x.shape == (32, 32) and x.min() >= -1 and x.max() <= 1
    back = wave_to_image(image_to_wave(x, spec, n_iter=32, seed=0), spec)
    loud = x > 0
    assert loud.any() and np.abs(back - x)[loud].mean() < 0.1
