"""API keys with per-key rate limits, the prompt filter's normalisation and the image-checker hook."""

import httpx
import pytest

from noisecraft.serve.safeguards import PromptFilter, normalise

BODY = {"model": "mnist-tiny", "steps": 1, "seed": 0, "width": 280, "height": 280}


def test_normalise_and_filter():
    assert normalise("Ｆórbídden_THING!!") == "forbidden thing"
    f = PromptFilter(["forbidden thing", "bad"])
    for text in ("a FORBIDDEN thing", "b.a.d", "B4D idea", "forbídden\tthing"):
        assert f.match(text) is not None, text
    for text in ("a badger", "forbidden", "good thing"):
        assert f.match(text) is None, text


@pytest.fixture
def guarded(models):
    from serve_helpers import serve

    def withhold_odd_seeds(rgb, info):
        return "odd seed" if info["seed"] % 2 else None

    s = serve(models, api_keys=("k1", "k2"), rate_limit=6, image_checker=withhold_odd_seeds)
    yield s
    s.close()


def test_api_keys_rate_limits_and_image_checker(guarded):
    url = guarded.url + "/sdapi/v1/txt2img"
    assert httpx.post(url, json=BODY).status_code == 401
    assert httpx.post(url, json=BODY, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert httpx.get(guarded.url + "/").status_code == 200  # the page itself needs no key
    k1 = {"Authorization": "Bearer k1"}
    r = httpx.post(url, json={**BODY, "batch_size": 2}, headers=k1, timeout=60)
    assert r.status_code == 200, r.text
    assert len(r.json()["images"]) == 1  # seed 1 was withheld by the checker
    limited = httpx.post(url, json=BODY, headers=k1)  # 6 a minute: bursts of 1
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert "rate limit of 6 requests a minute" in limited.json()["detail"]
    assert httpx.post(url, json=BODY, headers={"Authorization": "Bearer k2"}, timeout=60).status_code == 200
