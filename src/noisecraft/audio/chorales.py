"""The Bach chorales of music21's bundled corpus (offline: the scores ship inside the package) as note events.

For each MusicXML chorale (`music21.corpus.getComposer("bach")`, the .mxl/.xml files in file-name order) with the
four parts Soprano, Alto, Tenor and Bass (voices 0..3; doubling instrument parts are ignored):

- ties are merged (`stripTies`), rests are gaps, every pitch of a chord sounds;
- the key is music21's Krumhansl-Schmuckler estimate (`analyze("key")`); its mode is the chorale's label
  (MODES: 0 = major, 1 = minor), and every pitch is transposed by the semitones in -5..6 that take the tonic to C,
  so all chorales are in C major or C minor;
- time is in quarter notes at a fixed tempo, SECONDS_PER_QUARTER (the scores' fermatas and tempi are ignored).

The events of each chorale are read once and kept as JSON in $NOISECRAFT_CACHE/audio/ (music21 takes about 0.1 s
a chorale), keyed by the music21 version.
"""

from __future__ import annotations

import functools
import json

import numpy as np

from noisecraft.errors import DataError

PARTS = ("Soprano", "Alto", "Tenor", "Bass")
MODES = ("major", "minor")
SECONDS_PER_QUARTER = 0.5  # 120 quarter notes a minute
CACHE_VERSION = "1"


def _music21():
    try:
        import music21
    except ImportError as e:
        raise DataError("dataset 'bach-audio' needs music21: pip install 'noisecraft[audio]'") from e
    return music21


def chorale_files() -> list:
    """The MusicXML Bach chorales bundled with music21, sorted by file name."""
    m21 = _music21()
    return sorted((p for p in m21.corpus.getComposer("bach") if p.suffix in (".mxl", ".xml")), key=lambda p: p.name)


def transpose_to_c(tonic_pitch_class: int) -> int:
    """The semitone shift in -5..6 that takes a tonic pitch class (0 = C .. 11 = B) to C."""
    return (-tonic_pitch_class + 5) % 12 - 5


def score_events(score) -> tuple[np.ndarray, int] | None:
    """(events (n, 4) = midi, onset s, duration s, voice; mode index) of a parsed chorale in C, or None when it
    lacks one of the four PARTS."""
    parts = {p.partName: p for p in score.parts}
    if not all(name in parts for name in PARTS):
        return None
    key = score.analyze("key")
    shift = transpose_to_c(key.tonic.pitchClass)
    rows = []
    for voice, name in enumerate(PARTS):
        for n in parts[name].stripTies().flatten().notes:
            for p in n.pitches:
                rows.append((p.midi + shift, float(n.offset) * SECONDS_PER_QUARTER,
                             float(n.quarterLength) * SECONDS_PER_QUARTER, voice))
    events = np.asarray(sorted(rows, key=lambda r: (r[1], r[3])), dtype=np.float64).reshape(-1, 4)
    return events, MODES.index(key.mode) if key.mode in MODES else 0


def _cache_path():
    from noisecraft.paths import cache_dir

    return cache_dir() / "audio" / f"bach-chorales-v{CACHE_VERSION}-music21-{_music21().__version__}.json"


@functools.lru_cache(maxsize=4)
def chorales(count: int | None = None) -> tuple[tuple[str, np.ndarray, int], ...]:
    """(file name, events, mode) of the first `count` usable chorales (None: all), in file-name order. Only the
    files needed are parsed; what was parsed is kept in the cache file (a file without the four parts as null)."""
    path = _cache_path()
    cache = json.loads(path.read_text()) if path.is_file() else {}
    out, parsed = [], False
    for f in chorale_files():
        if count is not None and len(out) >= count:
            break
        if f.name not in cache:
            got = score_events(_music21().corpus.parse(f))
            cache[f.name] = None if got is None else [got[0].tolist(), got[1]]
            parsed = True
        if cache[f.name] is not None:
            events, mode = cache[f.name]
            out.append((f.name, np.asarray(events, dtype=np.float64).reshape(-1, 4), int(mode)))
    if parsed:
        from noisecraft.files import atomic_write_json

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, cache)
    return tuple(out)
