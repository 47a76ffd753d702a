"""A1111-compatible routes against a real uvicorn, with httpx and with webuiapi (a real A1111 client)."""

import base64
import io
import json

from PIL import Image

from noisecraft.serve.watermark import is_marked

SIZE = {"width": 280, "height": 280}  # the 28x28 digits, served enlarged 10 times (the watermark's minimum)


def png(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_txt2img_with_httpx_returns_pngs_with_parameters(client):
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "", "class_ids": [3], "cfg_scale": 2, "steps": 3,
                                               "seed": 5, "batch_size": 2, "sampler_name": "Euler", **SIZE})
    assert r.status_code == 200, r.text
    out = r.json()
    assert len(out["images"]) == 2
    info = json.loads(out["info"])
    assert info["all_seeds"] == [5, 6] and info["steps"] == 3 and info["sampler_name"] == "euler"
    assert info["sd_model_name"] == "mnist-class" and len(info["sd_model_hash"]) == 10
    image = png(out["images"][1])
    assert image.size == (280, 280)
    text = image.text["parameters"]
    for part in ("Steps: 3", "Sampler: euler", "Seed: 6", "Size: 280x280", "CFG scale: 2",
                 f"Model hash: {info['sd_model_hash']}"):
        assert part in text
    meta = json.loads(image.text["noisecraft"])
    assert meta["provenance"]["watermark"]["library"] == "invisible-watermark"
    assert is_marked(__import__("numpy").asarray(image.convert("RGB")))


def test_same_seed_same_image_and_listing_routes(client):
    body = {"model": "mnist-tiny", "steps": 2, "seed": 11, **SIZE}
    a, b = (client.post("/sdapi/v1/txt2img", json=body).json()["images"][0] for _ in range(2))
    assert png(a).tobytes() == png(b).tobytes()
    names = [s["name"] for s in client.get("/sdapi/v1/samplers").json()]
    assert "heun" in names and "euler" in names
    models = client.get("/sdapi/v1/sd-models").json()
    assert {m["model_name"] for m in models} == {"mnist-class", "mnist-tiny"}
    assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"].startswith("mnist-class [")
    progress = client.get("/sdapi/v1/progress").json()
    assert set(progress) >= {"progress", "eta_relative", "state", "current_image", "textinfo"}
    assert client.post("/sdapi/v1/interrupt").status_code == 200
    assert client.get("/docs").status_code == 200 and "/sdapi/v1/txt2img" in client.get("/openapi.json").text


def test_webuiapi_txt2img_png_info_and_model_option(server):
    import webuiapi

    host, port = server.url.rsplit(":", 1)
    api = webuiapi.WebUIApi(host=host.split("//")[1], port=int(port))
    result = api.txt2img(prompt="", steps=2, seed=3, sampler_name="Euler a", width=280, height=280, cfg_scale=1)
    assert result.info["all_seeds"] == [3] and result.image.size == (280, 280)
    info = api.png_info(result.image)  # webuiapi re-encodes the PNG with its text chunks
    assert "Seed: 3" in info.info and info.parameters["Seed"] == "3"
    api.util_set_model("mnist-tiny")
    try:
        assert api.get_options()["sd_model_checkpoint"].startswith("mnist-tiny [")
        assert api.txt2img(steps=2, seed=1, width=280, height=280).info["sd_model_name"] == "mnist-tiny"
    finally:
        api.util_set_model("mnist-class")


def test_img2img_and_inpainting(client):
    first = client.post("/sdapi/v1/txt2img", json={"model": "mnist-tiny", "steps": 2, "seed": 1, **SIZE}).json()
    init = first["images"][0]
    r = client.post("/sdapi/v1/img2img", json={"model": "mnist-tiny", "init_images": [init], "steps": 4, "seed": 2,
                                               "denoising_strength": 0.5, **SIZE})
    assert r.status_code == 200, r.text
    assert json.loads(r.json()["info"])["denoising_strength"] == 0.5
    mask = Image.new("L", (28, 28), 0)
    mask.paste(255, (0, 0, 14, 28))  # regenerate the left half
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    r = client.post("/sdapi/v1/img2img", json={"model": "mnist-tiny", "init_images": [init], "steps": 2,
                                               "mask": base64.b64encode(buffer.getvalue()).decode(), **SIZE})
    assert r.status_code == 200, r.text
    assert png(r.json()["images"][0]).size == (280, 280)
