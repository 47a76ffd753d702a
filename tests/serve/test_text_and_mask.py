"""A text-to-image model through the server (prompt, negative prompt and guidance reach the sampler and the PNG
parameters), and a mask drawn with the pointer in the web page reaching the inpainting path."""

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from serve_helpers import serve

from noisecraft.serve.models import Models

TEXT_RUN = Path(__file__).parents[1] / "fixtures" / "legacy" / "text-trainable"  # glyphs-text, 16x16, tiny


def png(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


@pytest.fixture(scope="module")
def text_server():
    import torch

    models = Models.load([TEXT_RUN], watermark=False)
    net = models.get(None).run.denoiser.net
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # the 2-step run's zero-initialised cross-attention outputs ignore the text: wake them up
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    s = serve(models, watermark=False)
    yield s
    s.close()


@pytest.fixture(scope="module")
def text_client(text_server):
    import httpx

    with httpx.Client(base_url=text_server.url, timeout=60) as c:
        yield c


def _expected(run, scale, **request):
    from noisecraft.pipelines import Request, generate
    from noisecraft.serve.images import to_rgb

    return to_rgb(generate(run, Request(**request)).images, scale)[0]


def test_text_model_prompt_negative_prompt_and_guidance(text_server, text_client):
    served = text_server.app.state.models.get(None)
    body = {"prompt": "bold serif capital letter G", "negative_prompt": "italic sans digit 3", "cfg_scale": 3,
            "steps": 3, "seed": 4, "sampler_name": "heun"}
    r = text_client.post("/sdapi/v1/txt2img", json=body)
    assert r.status_code == 200, r.text
    image = png(r.json()["images"][0])
    text = image.text["parameters"]
    assert text.startswith("bold serif capital letter G\nNegative prompt: italic sans digit 3\n")
    assert "CFG scale: 3" in text and "Seed: 4" in text
    got = np.asarray(image.convert("RGB"))
    want = _expected(served.run, served.scale, prompts=(body["prompt"],), negative_prompt=body["negative_prompt"],
                     guidance=3.0, sampler="heun", steps=3, seed=4, num=1, batch_size=1)
    np.testing.assert_array_equal(got, want)  # the server generates what the library generates
    other = text_client.post("/sdapi/v1/txt2img", json={**body, "prompt": "light sans small letter a"}).json()
    assert not np.array_equal(np.asarray(png(other["images"][0]).convert("RGB")), got)  # the prompt matters
    unguided = text_client.post("/sdapi/v1/txt2img", json={**body, "cfg_scale": 1}).json()
    assert "CFG scale" not in png(unguided["images"][0]).text["parameters"]


def test_text_model_refuses_a_class(text_client):
    r = text_client.post("/sdapi/v1/txt2img", json={"prompt": "capital letter G", "class_ids": [3], "steps": 2})
    assert r.status_code == 422 and "class" in r.text


def test_mask_drawn_in_the_page_reaches_inpainting(browser, server, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 255  # a "1"
    Image.fromarray(digit, "L").save(tmp_path / "init.png")
    browser.get(server.url + "/")
    wait = WebDriverWait(browser, 60)
    wait.until(lambda b: len(Select(b.find_element(By.ID, "model")).options) == 2)
    Select(browser.find_element(By.ID, "model")).select_by_value("mnist-tiny")
    browser.find_element(By.ID, "init").send_keys(str(tmp_path / "init.png"))
    wait.until(lambda b: b.execute_script("return initImage !== null"))
    canvas = browser.find_element(By.ID, "maskcanvas")
    width = canvas.size["width"]
    # a stroke along the top of the canvas, left to right: the top rows are regenerated, the rest is kept
    ActionChains(browser).move_to_element_with_offset(canvas, -width // 2 + 20, -width // 2 + 20).click_and_hold() \
        .move_by_offset(width // 3, 0).move_by_offset(width // 3, 0).release().perform()
    assert browser.execute_script("return maskDrawn")
    for field, value in (("steps", "3"), ("seed", "5")):
        element = browser.find_element(By.ID, field)
        element.clear()
        element.send_keys(value)
    browser.find_element(By.ID, "generate").click()
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#gallery img.result"))
    src = browser.find_elements(By.CSS_SELECTOR, "#gallery img.result")[-1].get_attribute("src")
    meta = json.loads(png(src.partition(",")[2]).text["noisecraft"])
    regenerated = meta["inpaint"]["regenerated"]
    assert 0.02 < regenerated < 0.4, regenerated  # the stroke, not nothing and not the whole image
