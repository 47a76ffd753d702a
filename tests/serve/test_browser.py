"""The web page in a real headless Chromium (Debian's chromium + chromium-driver through Selenium, installed by
the set-up when missing): generate with the keyboard, watch the progress bar move, check the gallery image and
its parameters, and read a PNG's parameters back through the page."""

import base64
import io
import time

from PIL import Image


def test_page_generates_with_progress_and_metadata(browser, server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser.get(server.url + "/")
    wait = WebDriverWait(browser, 60)
    wait.until(lambda b: len(Select(b.find_element(By.ID, "model")).options) == 2)
    Select(browser.find_element(By.ID, "model")).select_by_value("mnist-tiny")
    for field, value in (("steps", "60"), ("seed", "12")):
        element = browser.find_element(By.ID, field)
        element.clear()
        element.send_keys(value)
    browser.find_element(By.ID, "seed").send_keys(Keys.ENTER)  # Enter in a field submits: keyboard only
    seen = set()
    deadline = time.monotonic() + 60
    while not browser.find_elements(By.CSS_SELECTOR, "#gallery img.result") and time.monotonic() < deadline:
        seen.add(float(browser.find_element(By.ID, "progress").get_attribute("value")))
        time.sleep(0.02)
    assert any(0 < v < 1 for v in seen), seen  # the bar moved through intermediate values
    src = browser.find_element(By.CSS_SELECTOR, "#gallery img.result").get_attribute("src")
    image = Image.open(io.BytesIO(base64.b64decode(src.partition(",")[2])))
    assert image.size == (280, 280) and "Steps: 60" in image.text["parameters"]
    assert "Seed: 12" in image.text["parameters"] and "noisecraft" in image.text
    assert float(browser.find_element(By.ID, "progress").get_attribute("value")) == 1
    image.save(tmp_path / "result.png", pnginfo=_meta(image))
    browser.find_element(By.ID, "pnginfo").send_keys(str(tmp_path / "result.png"))
    wait.until(lambda b: "Seed: 12" in b.find_element(By.ID, "params").text)


def _meta(image):
    from PIL.PngImagePlugin import PngInfo

    meta = PngInfo()
    for key, value in image.text.items():
        meta.add_text(key, value)
    return meta
