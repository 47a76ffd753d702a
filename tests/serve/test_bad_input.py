"""Bad input is a 4xx with a clear message, never a 500 or a traceback, and the server keeps serving."""

import pytest

SIZE = {"width": 280, "height": 280}


@pytest.mark.parametrize("path, body, status, message", [
    ("/sdapi/v1/txt2img", b"{not json", 400, "not valid JSON"),
    ("/sdapi/v1/txt2img", b"[1, 2]", 422, "must be a JSON object"),
    ("/sdapi/v1/txt2img", {"steps": "many"}, 422, "steps: Input should be a valid integer"),
    ("/sdapi/v1/txt2img", {"prompt": 5}, 422, "prompt: Input should be a valid string"),
    ("/sdapi/v1/txt2img", {"width": -28, "height": 28}, 422, "width must be a positive number of pixels"),
    ("/sdapi/v1/txt2img", {"width": 100000, "height": 100000}, 413, "limit of 1048576 pixels"),
    ("/sdapi/v1/txt2img", {"width": 64, "height": 64}, 422, "generates 28x28 or 280x280 images"),
    ("/sdapi/v1/txt2img", {"steps": 100000}, 422, "steps must be in [1, 150] (this server's limit)"),
    ("/sdapi/v1/txt2img", {"batch_size": 100}, 422, "over this server's limit of 16 images per request"),
    ("/sdapi/v1/txt2img", {"sampler_name": "nope"}, 422, "unknown sampler 'nope'"),
    ("/sdapi/v1/txt2img", {"model": "nope"}, 422, "unknown model 'nope'; allowed: mnist-class, mnist-tiny"),
    ("/sdapi/v1/txt2img", {"model": "../../etc/passwd"}, 422, "unknown model '../../etc/passwd'"),
    ("/sdapi/v1/txt2img", {"override_settings": {"sd_model_checkpoint": "../x"}}, 422, "unknown model '../x'"),
    ("/sdapi/v1/txt2img", {"class_ids": [12]}, 422, "class id 12 is out of range"),
    ("/sdapi/v1/txt2img", {"seed": -5}, 422, "seed must be -1 (random) or an integer >= 0"),
    ("/sdapi/v1/txt2img", {"prompt": "a forbidden   THING"}, 422, "refused by this server's prompt filter"),
    ("/sdapi/v1/txt2img", {"prompt": "a f0rbidden th1ng"}, 422, "refused by this server's prompt filter"),
    ("/sdapi/v1/img2img", {"init_images": ["not base64!"]}, 422, "init_images[0] is not a decodable base64"),
    ("/sdapi/v1/img2img", {"init_images": ["aGVsbG8="]}, 422, "init_images[0] is not a decodable base64"),
    ("/sdapi/v1/img2img", {}, 422, "img2img needs init_images"),
    ("/sdapi/v1/png-info", {"image": "@@@"}, 422, "image is not a decodable base64"),
    ("/sdapi/v1/options", {"sd_model_checkpoint": "../other"}, 422, "unknown model '../other'"),
    ("/v1/jobs", {"steps": -1}, 422, "steps must be in [1, 150]"),
])
def test_bad_input_is_a_clear_4xx(client, path, body, status, message):
    r = client.post(path, content=body, headers={"content-type": "application/json"}) if isinstance(body, bytes) \
        else client.post(path, json=body)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]
    assert "Traceback" not in r.text


def test_unknown_job_and_huge_body(client):
    assert client.get("/v1/jobs/nope").status_code == 404
    r = client.post("/sdapi/v1/txt2img", content=b"x" * (16 * 1024 * 1024 + 1),
                    headers={"content-type": "application/json"})
    assert r.status_code == 413 and "limit is 16777216 bytes" in r.json()["detail"]
    assert client.post("/sdapi/v1/txt2img", json={"model": "mnist-tiny", "steps": 1, **SIZE}).status_code == 200


def test_refusals_are_logged(client, caplog):
    with caplog.at_level("WARNING", logger="noisecraft.serve"):
        client.post("/sdapi/v1/txt2img", json={"prompt": "Forbídden.thing"})
    assert "matched blocked term 'forbidden thing'" in caplog.text
