"""Dynamic batching: requests stacked along the batch dimension give every image exactly its own noise and the
image its request gives alone (bit-identical 8-bit pixels; the float images to the last bits the CPU kernels
round differently by batch size), and concurrent clients of a real server share batches."""

import threading

import httpx
import pytest
import torch

from noisecraft.core.random import make_generators, randn_like
from noisecraft.pipelines import Request, generate, load
from noisecraft.serve.batching import batch_key, generate_together, initial_noise
from noisecraft.viz import to_uint8


@pytest.mark.parametrize("requests", [
    [Request(class_ids=(3,), guidance=2.0, seed=4, num=2, steps=3), Request(class_ids=(1, 7), guidance=2.0, seed=9,
                                                                            num=2, steps=3),
     Request(class_ids=(0,), guidance=2.0, seed=4, num=1, steps=3)],
    [Request(seed=0, num=1, steps=3, sampler="euler_a"), Request(seed=100, num=3, steps=3, sampler="euler_a")],
])
def test_stacked_requests_are_bit_identical_to_alone(run_dirs, requests):
    run = load(run_dirs["class"])
    assert len({batch_key(run, r) for r in requests}) == 1
    _, x = initial_noise(run, requests, 80.0)
    alone_noise = [randn_like(torch.empty(r.num, *run.data_shape), make_generators(r.seed, r.num)) * 80.0
                   for r in requests]  # as pipelines.sample_batches draws a request's noise
    assert torch.equal(x, torch.cat(alone_noise))
    together = generate_together(run, requests)
    for r, g in zip(requests, together):
        alone = generate(run, r)
        assert g.seeds == alone.seeds and g.parameters == alone.parameters
        assert (to_uint8(g.images) == to_uint8(alone.images)).all()
        torch.testing.assert_close(g.images, alone.images, rtol=0, atol=1e-5)


def test_incompatible_requests_have_different_keys(run_dirs):
    run = load(run_dirs["class"])
    base = Request(class_ids=(1,), guidance=2.0, steps=3)
    for other in (Request(class_ids=(1,), guidance=3.0, steps=3), Request(class_ids=(1,), guidance=2.0, steps=4),
                  Request(class_ids=(1,), guidance=2.0, steps=3, sampler="euler")):
        assert batch_key(run, other) != batch_key(run, base)


def test_concurrent_clients_share_batches_and_get_their_own_images(models):
    from serve_helpers import serve

    server = serve(models, batch_window=0.2)
    batches = []
    scheduler = server.app.state.scheduler
    run_batch = scheduler.run_batch
    scheduler.run_batch = lambda s, jobs, cb: batches.append(len(jobs)) or run_batch(s, jobs, cb)
    bodies = [{"model": "mnist-class", "class_ids": [i], "cfg_scale": 2, "steps": 3, "seed": 10 + i,
               "width": 280, "height": 280} for i in range(4)]
    answers = [None] * 4

    def ask(i):
        answers[i] = httpx.post(server.url + "/sdapi/v1/txt2img", json=bodies[i], timeout=60).json()

    try:
        threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert max(batches) > 1  # at least two requests shared a batch
        for i in range(4):  # and each answer is what the request gives alone
            alone = httpx.post(server.url + "/sdapi/v1/txt2img", json=bodies[i], timeout=60).json()
            assert _pixels(answers[i]) == _pixels(alone)
    finally:
        server.close()


def _pixels(answer):
    import base64
    import io

    from PIL import Image

    return Image.open(io.BytesIO(base64.b64decode(answer["images"][0]))).tobytes()
