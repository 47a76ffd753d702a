"""The emoji dataset: item order and captions from emoji.json, the cache format, the npm-missing error."""

import io
import json
import tarfile

import numpy as np
import pytest

from noisecraft.data import emoji as E
from noisecraft.errors import DataError

META = [
    {"name": "THUMBS UP SIGN", "image": "1f44d.png", "category": "People & Body", "sort_order": 2,
     "has_img_twitter": True,
     "skin_variations": {"1F3FD": {"image": "1f44d-1f3fd.png", "has_img_twitter": True},
                         "1F3FB": {"image": "1f44d-1f3fb.png", "has_img_twitter": True},
                         "1F3FF": {"image": "1f44d-1f3ff.png", "has_img_twitter": False}}},
    {"name": None, "short_name": "grinning", "image": "1f600.png", "category": "Smileys & Emotion", "sort_order": 1,
     "has_img_twitter": True},
    {"name": "NO TWITTER IMAGE", "image": "x.png", "category": "Symbols", "sort_order": 3, "has_img_twitter": False},
]


def test_items_order_and_captions():
    assert E._items(META) == [
        ("1f600.png", "Smileys & Emotion", "grinning"),
        ("1f44d.png", "People & Body", "thumbs up sign"),
        ("1f44d-1f3fb.png", "People & Body", "thumbs up sign, light skin tone"),
        ("1f44d-1f3fd.png", "People & Body", "thumbs up sign, medium skin tone"),
    ]


def _png(rgba) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGBA", (64, 64), rgba).save(buf, format="PNG")
    return buf.getvalue()


def test_dataset_from_a_package_tarball(tmp_path, monkeypatch):
    monkeypatch.setenv("NOISECRAFT_CACHE", str(tmp_path))
    cache = tmp_path / "emoji"
    cache.mkdir()
    tarball = cache / f"{E.EMOJI_PACKAGE}-{E.EMOJI_VERSION}.tgz"
    files = {"package/emoji.json": json.dumps(META).encode()}
    colours = {"1f600.png": (255, 0, 0, 255), "1f44d.png": (0, 0, 255, 0),  # opaque red; transparent -> white
               "1f44d-1f3fb.png": (0, 255, 0, 255), "1f44d-1f3fd.png": (0, 0, 0, 128)}
    files.update({f"package/img/twitter/64/{k}": _png(v) for k, v in colours.items()})
    with tarfile.open(tarball, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    monkeypatch.setattr(E.shutil, "which", lambda name: "/usr/bin/npm")  # the tarball is there: npm is not run
    ds = E.load_emoji(split="all")
    assert ds.images.shape == (4, 3, 64, 64)
    px = ((ds.images[:, :, 0, 0] + 1) * 127.5).round().numpy()
    np.testing.assert_array_equal(px[0], [255, 0, 0])
    np.testing.assert_array_equal(px[1], [255, 255, 255])
    np.testing.assert_allclose(px[3], [127, 127, 127], atol=1)  # half-transparent black over white
    assert ds.class_names == ("People & Body", "Smileys & Emotion")
    assert ds.labels.tolist() == [1, 0, 0, 0]
    if hasattr(ds, "captions") and ds.captions is not None:
        assert ds.captions[2] == "thumbs up sign, light skin tone"
    assert (cache / f"emoji-{E.EMOJI_VERSION}.safetensors").is_file()


def test_missing_npm_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("NOISECRAFT_CACHE", str(tmp_path))
    monkeypatch.setattr(E.shutil, "which", lambda name: None)
    with pytest.raises(DataError, match="`npm` was not found"):
        E.load_emoji()
