"""Audio: Bach chorales rendered by a small synthesiser, log-mel spectrograms as 1-channel images, Griffin-Lim
back to sound. The building blocks of the audio modality (issue 24); the dataset, WAV writers, metrics and the
`bach-audio` preset are not built yet.

    synth     notes -> waveform (additive harmonics with an ADSR envelope per note)
    mel       waveform <-> log-mel image in [-1, 1] (librosa), Griffin-Lim inversion
    chorales  the music21 Bach chorale corpus -> note events (pitch, onset, duration, voice)

Nothing here is imported by `import noisecraft`; music21 and librosa are imported inside the functions that use
them (extra `audio`).
"""
