"""The job API (submit, status, server-sent events with previews, cancel), the bounded queue (429 with
Retry-After, no accepted job lost) and a disconnecting client cancelling its job."""

import json
import time

import httpx
import pytest

LONG = {"model": "mnist-class", "class_ids": [1], "cfg_scale": 2, "steps": 150, "batch_size": 16, "seed": 0,
        "sampler_name": "heun", "width": 280, "height": 280}
SHORT = {"model": "mnist-tiny", "steps": 3, "seed": 1, "width": 280, "height": 280}


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


def test_job_events_report_progress_and_previews_then_the_result(client):
    job = client.post("/v1/jobs", json={**SHORT, "steps": 20})
    assert job.status_code == 202, job.text
    job_id = job.json()["id"]
    events = []
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
        kind = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
    assert events[-1][0] == "done" and events[-1][1]["state"] == "done"
    steps = [d["step"] for k, d in events if k == "progress"]
    assert steps == sorted(steps) and events[-1][1]["progress"] == 1.0
    assert len(events[-1][1]["result"]["images"]) == 1
    status = client.get(f"/v1/jobs/{job_id}").json()
    assert status["state"] == "done" and status["result"]["seeds"] == [1]


def test_cancel_a_running_job(client, server):
    job_id = client.post("/v1/jobs", json=LONG).json()["id"]
    scheduler = server.app.state.scheduler
    wait_for(lambda: scheduler.get(job_id).step > 0)
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    wait_for(lambda: scheduler.get(job_id).done.is_set())
    assert client.get(f"/v1/jobs/{job_id}").json()["state"] == "cancelled"


@pytest.fixture
def small_queue(models):
    from serve_helpers import serve

    s = serve(models, max_queue=1, max_batch=16)
    yield s
    s.close()


def test_full_queue_answers_429_and_loses_no_accepted_job(small_queue):
    scheduler = small_queue.app.state.scheduler
    with httpx.Client(base_url=small_queue.url, timeout=60) as c:
        running = c.post("/v1/jobs", json=LONG).json()["id"]
        wait_for(lambda: scheduler.get(running).state == "running")
        queued = c.post("/v1/jobs", json=SHORT)
        assert queued.status_code == 202
        refused = c.post("/v1/jobs", json=SHORT)
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert "the queue is full" in refused.json()["detail"]
        c.post(f"/v1/jobs/{running}/cancel")
        wait_for(lambda: scheduler.get(queued.json()["id"]).done.is_set())
        assert c.get(f"/v1/jobs/{queued.json()['id']}").json()["state"] == "done"


def test_a_client_that_disconnects_cancels_its_job(server):
    scheduler = server.app.state.scheduler
    before = set(scheduler.jobs)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/sdapi/v1/txt2img", json=LONG, timeout=httpx.Timeout(60, read=1.0))
    (job_id,) = set(scheduler.jobs) - before
    wait_for(lambda: scheduler.get(job_id).done.is_set())
    job = scheduler.get(job_id)
    assert job.state == "cancelled" and job.step < job.steps


def test_progress_shows_the_running_job_with_a_preview(client, server):
    job_id = client.post("/v1/jobs", json=LONG).json()["id"]
    scheduler = server.app.state.scheduler
    wait_for(lambda: scheduler.get(job_id).preview is not None)
    progress = client.get("/sdapi/v1/progress").json()
    assert progress["state"]["job"] == job_id and 0 < progress["progress"] < 1
    assert progress["state"]["sampling_steps"] == 150 and progress["current_image"]
    client.post("/sdapi/v1/interrupt")
    wait_for(lambda: scheduler.get(job_id).done.is_set())
    assert scheduler.get(job_id).state == "cancelled"
