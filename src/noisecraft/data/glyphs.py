"""Letters and digits rendered from the TrueType fonts that ship with matplotlib, with captions.

Each image is one character (A-Z, a-z, 0-9) in white on black, 32x32 grey, captioned from its font's
family, weight and style and the character: "bold serif capital letter G", "italic sans small letter g",
"mono digit 7". The fonts are matplotlib's bundled DejaVu, STIX and Computer Modern faces
(mpl-data/fonts/ttf), so the set is made offline and is the same on every machine with the same
matplotlib and Pillow.

Vocabularies (attribute tensors hold indices into these tuples):

    CHARACTERS = A-Z a-z 0-9 (also the class labels and class_names)
    FAMILIES   = sans, serif, mono          WEIGHTS = regular, bold       STYLES = upright, italic
    TYPEFACES  = dejavu, stix, computer modern (stored, not captioned)

Layout: the glyph is drawn at 4x with its baseline at a fixed height (so capitals, small letters,
ascenders and descenders keep their relative sizes), centred horizontally on its ink, then box-filtered
down. Each (font, character) is drawn VARIANTS times with a scale in [0.85, 1] and a sub-pixel shift of
up to 1.5 px drawn from numpy.random.default_rng(seed). Items are ordered variant, font, character.
"""

from __future__ import annotations

import functools
import string
from pathlib import Path

import numpy as np
import torch

from noisecraft.data.base import ImageDataset, split_indices, uint8_to_float
from noisecraft.errors import DataError

CHARACTERS = tuple(string.ascii_uppercase + string.ascii_lowercase + string.digits)
FAMILIES = ("sans", "serif", "mono")
WEIGHTS = ("regular", "bold")
STYLES = ("upright", "italic")
TYPEFACES = ("dejavu", "stix", "computer modern")
SIDE = 32
VARIANTS = 4
FONT_PX = 26           # font size at 32 px: cap height about 19 px
BASELINE = 24          # baseline row at 32 px
SUPERSAMPLE = 4

# (file in mpl-data/fonts/ttf, family, weight, style, typeface)
FONTS = tuple(
    [(f"DejaVu{face}{suffix}.ttf", family, weight, style, "dejavu")
     for face, family in (("Sans", "sans"), ("Serif", "serif"), ("SansMono", "mono"))
     for suffix, weight, style in (("", "regular", "upright"), ("-Bold", "bold", "upright"),
                                   ("-Oblique" if face != "Serif" else "-Italic", "regular", "italic"),
                                   ("-BoldOblique" if face != "Serif" else "-BoldItalic", "bold", "italic"))]
    + [(f"STIXGeneral{suffix}.ttf", "serif", weight, style, "stix")
       for suffix, weight, style in (("", "regular", "upright"), ("Bol", "bold", "upright"),
                                     ("Italic", "regular", "italic"), ("BolIta", "bold", "italic"))]
    + [("cmr10.ttf", "serif", "regular", "upright", "computer modern"),
       ("cmb10.ttf", "serif", "bold", "upright", "computer modern"),
       ("cmti10.ttf", "serif", "regular", "italic", "computer modern"),
       ("cmss10.ttf", "sans", "regular", "upright", "computer modern"),
       ("cmtt10.ttf", "mono", "regular", "upright", "computer modern")]
)


def font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def caption(character: str, family: str, weight: str, style: str) -> str:
    """'bold italic serif capital letter G', 'sans small letter g', 'mono digit 7'."""
    kind = "digit" if character.isdigit() else "capital letter" if character.isupper() else "small letter"
    words = ([weight] if weight != "regular" else []) + ([style] if style != "upright" else [])
    return " ".join([*words, family, kind, character])


def render_glyph(font_file: str, character: str, scale: float = 1.0, shift=(0.0, 0.0), side: int = SIDE) -> np.ndarray:
    """One character as a (side, side) uint8 array: baseline at BASELINE, centred on its ink.

    Every length (font size, baseline, margins, shift) is given at 32 px and scales with side / 32, so a
    larger side is the same layout rendered natively (not an upsampled 32-px image)."""
    from PIL import Image, ImageDraw

    s, k = SUPERSAMPLE, side / SIDE
    size = round(FONT_PX * k * scale * s)
    font = _font(font_file, size)
    left, _, right, _ = font.getbbox(character, anchor="ls")
    room = (SIDE - 4) * k * s  # wide glyphs (bold W, M) shrink to leave 2 px (at 32 px) each side
    if right - left > room:
        font = _font(font_file, int(size * room / (right - left)))
        left, _, right, _ = font.getbbox(character, anchor="ls")
    img = Image.new("L", (side * s, side * s), 0)
    x = side * s / 2 - (left + right) / 2 + shift[0] * k * s
    ImageDraw.Draw(img).text((x, BASELINE * k * s + shift[1] * k * s), character, font=font, fill=255, anchor="ls")
    return np.asarray(img.reduce(s))


@functools.lru_cache(maxsize=256)
def _font(font_file: str, size: int):
    from PIL import ImageFont

    path = font_dir() / font_file
    if not path.is_file():
        raise DataError(f"dataset 'glyphs' needs matplotlib's font {font_file}, not found in {font_dir()}")
    return ImageFont.truetype(str(path), size)


def _items() -> list[tuple[int, int, int]]:
    """(variant, font index, character index) of every item, in dataset order."""
    return [(v, f, c) for v in range(VARIANTS) for f in range(len(FONTS)) for c in range(len(CHARACTERS))]


@functools.lru_cache(maxsize=2)
def _render_all(seed: int, side: int = SIDE) -> np.ndarray:
    """(N, side, side) uint8 of every item (read-only); the jitter depends on the seed only, not the side."""
    items = _items()
    rng = np.random.default_rng(seed)
    jitter = np.column_stack([rng.uniform(0.85, 1.0, len(items)), rng.uniform(-1.5, 1.5, (len(items), 2))])
    out = np.stack([render_glyph(FONTS[f][0], CHARACTERS[c], jitter[i, 0], jitter[i, 1:], side)
                    for i, (_, f, c) in enumerate(items)])
    out.setflags(write=False)
    return out


def load_glyphs(*, root=None, resolution=None, channels=None, split="all", limit=None, seed=0) -> ImageDataset:
    """The glyph set: 4 x 21 fonts x 62 characters = 5208 images (1, 32, 32), labels = character ids.

    `resolution` renders every glyph natively at that side (the same layout, drawn from the fonts at that
    size; 64 for the latent-vs-pixel study), not by resampling the 32-px images."""
    from noisecraft.data.base import convert_channels

    if root is not None:
        raise DataError(f"dataset 'glyphs' is rendered from bundled fonts; root does not apply, got root={root!r}")
    items = _items()
    labels = np.array([c for _, _, c in items], dtype=np.int64)
    idx = split_indices(labels, len(items), split)[:limit]
    if resolution is not None and (isinstance(resolution, bool) or not isinstance(resolution, int)
                                   or not 8 <= resolution <= 1024):
        raise DataError(f"dataset 'glyphs': resolution must be an integer side in 8..1024, got {resolution!r}")
    images = uint8_to_float(_render_all(seed, resolution or SIDE)[idx])[:, None]  # (n, 1, side, side)
    if channels is not None:
        images = convert_channels(images, channels)
    fonts = [FONTS[items[i][1]] for i in idx]
    chars = [CHARACTERS[items[i][2]] for i in idx]
    attributes = {
        "character": torch.from_numpy(labels[idx].copy()),
        "family": torch.tensor([FAMILIES.index(f[1]) for f in fonts], dtype=torch.int64),
        "weight": torch.tensor([WEIGHTS.index(f[2]) for f in fonts], dtype=torch.int64),
        "style": torch.tensor([STYLES.index(f[3]) for f in fonts], dtype=torch.int64),
        "typeface": torch.tensor([TYPEFACES.index(f[4]) for f in fonts], dtype=torch.int64),
    }
    captions = tuple(caption(ch, f[1], f[2], f[3]) for ch, f in zip(chars, fonts))
    return ImageDataset("glyphs", images, torch.from_numpy(labels[idx].copy()), CHARACTERS, captions, attributes)
