"""Audio: Bach chorales rendered by a small synthesiser, log-mel spectrograms as 1-channel images (Riffusion /
AudioLDM style mel diffusion, in pixel space), Griffin-Lim back to sound (issue 24).

    synth     notes -> waveform (additive harmonics with an ADSR envelope per note)
    chorales  the music21 Bach chorale corpus -> note events (pitch, onset, duration, voice), in C major / minor
    mel       waveform <-> log-mel image in [-1, 1] (librosa), Griffin-Lim inversion (Griffin & Lim 1984)
    data      dataset "bach-audio": 2-s clips as (1, 128, 64) mel images, labels = mode, captions; the
              shuffled-notes baseline
    io        WAV files (soundfile; strict sample rate / channels / NaN checks, atomic writes) and the
              "audio" modality's writers: `sample --out clip.wav` (Griffin-Lim), a directory of WAVs, a .png
    metrics   note statistics estimated from audio (pitch-class histogram and co-occurrence, note durations,
              inter-onset intervals) and a Frechet distance on the features of noisecraft's own AudioNet
    presets   `bach-audio` (class-conditional U-Net) and `bach-audio-text`

Nothing here is imported by `import noisecraft`; music21 and librosa are imported inside the functions that use
them (extra `audio`).
"""
