"""The invisible watermark: read back from every served image after PNG re-encoding, at >= 95% of its bits after
JPEG at quality 90, and not found in unwatermarked images; `noisecraft watermark --check`."""

import base64
import io

import numpy as np
from PIL import Image

from noisecraft.cli.main import main
from noisecraft.serve.watermark import bit_accuracy, is_marked


def served_images(client, n=8):
    out = []
    for model, extra in (("mnist-tiny", {}), ("mnist-class", {"class_ids": list(range(n // 2)), "cfg_scale": 2})):
        r = client.post("/sdapi/v1/txt2img", json={"model": model, "steps": 4, "seed": 7, "batch_size": n // 2,
                                                   "width": 280, "height": 280, **extra})
        out += [Image.open(io.BytesIO(base64.b64decode(b))).convert("RGB") for b in r.json()["images"]]
    return out


def reencode(image, **options):
    buffer = io.BytesIO()
    image.save(buffer, **options)
    return np.asarray(Image.open(buffer).convert("RGB"))


def test_watermark_survives_png_and_jpeg_and_is_absent_elsewhere(client, server):
    images = served_images(client)
    assert all(is_marked(reencode(im, format="PNG")) for im in images)
    jpeg = [bit_accuracy(reencode(im, format="JPEG", quality=90)) for im in images]
    assert np.mean(jpeg) >= 0.95, jpeg
    from serve_helpers import serve

    plain = serve(server.app.state.models, watermark=False)
    try:
        import httpx

        with httpx.Client(base_url=plain.url, timeout=60) as c:
            unmarked = served_images(c)
    finally:
        plain.close()
    assert not any(is_marked(np.asarray(im)) for im in unmarked)


def test_watermark_check_command(client, tmp_path, capsys):
    marked = served_images(client, n=2)[0]
    marked.save(tmp_path / "marked.png")
    Image.fromarray(np.full((256, 256, 3), 90, np.uint8)).save(tmp_path / "plain.png")
    assert main(["watermark", "--check", str(tmp_path / "marked.png")]) == 0
    assert "watermark found" in capsys.readouterr().out
    assert main(["watermark", "--check", str(tmp_path / "plain.png")]) == 1
    assert "watermark not found" in capsys.readouterr().out
    assert main(["watermark", "--check", str(tmp_path / "nothing.png")]) == 2
