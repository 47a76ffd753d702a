"""Jobs and the worker that runs them: a bounded queue (a full one refuses with `QueueFull`, answered 429 with
Retry-After), one worker thread that stacks compatible queued jobs into one batch (`batching`), step progress
with previews, and cancellation (a cancelled job stops at its next sampler step)."""

from __future__ import annotations

import collections
import itertools
import threading
import time
import uuid
from dataclasses import dataclass, field

from noisecraft.errors import NoisecraftError
from noisecraft.pipelines import Request

PREVIEW_EVERY = 0.25  # seconds between preview images of a running job


class QueueFull(Exception):
    def __init__(self, retry_after: int):
        super().__init__(f"the queue is full; retry after {retry_after} s")
        self.retry_after = retry_after


class Cancelled(Exception):
    """Raised inside the sampler's callback to stop a batch whose jobs were all cancelled."""


@dataclass
class Job:
    model: str
    request: Request
    kind: str = "txt2img"                   # txt2img | img2img
    edit: dict | None = None                # img2img: image (C, H, W), mask (1, H, W) or None, strength
    client: str = "-"
    meta: dict = field(default_factory=dict)  # what the route needs to build the answer (A1111 fields)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    state: str = "queued"                   # queued | running | done | failed | cancelled
    step: int = 0
    steps: int = 0
    preview: bytes | None = None            # PNG of the latest denoised estimate of the job's first image
    result: dict | None = None
    error: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    version: int = 0                        # bumped at every change (for event streams)
    cancel_event: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def progress(self) -> float:
        if self.state == "done":
            return 1.0
        return self.step / self.steps if self.steps else 0.0

    def status(self) -> dict:
        return {"id": self.id, "state": self.state, "model": self.model, "step": self.step, "steps": self.steps,
                "progress": round(self.progress, 4), "error": self.error, "created": self.created,
                "started": self.started, "finished": self.finished}


class Scheduler:
    """The queue and its worker. run_batch(served, jobs, callback) -> {job id: Generation} generates (errors it
    raises, NoisecraftError, fail the batch's jobs with the message); encode(served, job, generation) -> the job's
    result (watermarked PNGs) runs in a small thread pool, so the worker samples the next batch meanwhile."""

    def __init__(self, models, config, run_batch, encode, preview):
        from concurrent.futures import ThreadPoolExecutor

        self.models, self.config, self.run_batch, self.make_preview = models, config, run_batch, preview
        self.encode = encode
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="noisecraft-serve-encode")
        self.pending: collections.deque[Job] = collections.deque()
        self.jobs: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self.running: list[Job] = []
        self.cond = threading.Condition()
        self.seconds_per_job = 1.0
        self.stopped = False
        self.thread = threading.Thread(target=self._loop, name="noisecraft-serve-worker", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> Job:
        with self.cond:
            if len(self.pending) >= self.config.max_queue:
                raise QueueFull(self.retry_after())
            self.pending.append(job)
            self.jobs[job.id] = job
            self._forget_old()
            self.cond.notify_all()
        return job

    def retry_after(self) -> int:
        return max(1, round(self.seconds_per_job * (len(self.pending) + 1) / max(1, self.config.max_batch) + 0.5))

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def cancel(self, job: Job) -> None:
        with self.cond:
            job.cancel_event.set()
            if job in self.pending:
                self.pending.remove(job)
                self._finish(job, "cancelled", error="cancelled")
            self.cond.notify_all()

    def interrupt(self) -> int:
        """Cancel the running jobs (A1111's /interrupt); how many."""
        running = list(self.running)
        for job in running:
            self.cancel(job)
        return len(running)

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            for job in list(self.pending):
                self.cancel(job)
            self.cond.notify_all()
        self.thread.join(timeout=10)
        self.pool.shutdown(wait=True)

    def _forget_old(self) -> None:
        done = [j for j in self.jobs.values() if j.done.is_set()]
        for job in done[:max(0, len(done) - self.config.keep_jobs)]:
            del self.jobs[job.id]

    def _finish(self, job: Job, state: str, *, result=None, error=None) -> None:
        job.state, job.result, job.error, job.finished = state, result, error, time.time()
        job.version += 1
        job.done.set()

    def _take(self) -> list[Job]:
        """The next job and the queued jobs that can share its batch (up to max_batch images)."""
        with self.cond:
            while not self.pending and not self.stopped:
                self.cond.wait()
            if self.stopped:
                return []
            first = self.pending.popleft()
        if self.config.batch_window > 0:
            time.sleep(self.config.batch_window)
        group, key = [first], self._key(first)
        with self.cond:
            if key is not None:
                images = first.request.num
                for job in list(self.pending):
                    if job.model == first.model and self._key(job) == key and images + job.request.num \
                            <= self.config.max_batch:
                        self.pending.remove(job)
                        group.append(job)
                        images += job.request.num
            for job in group:
                job.state, job.started, job.version = "running", time.time(), job.version + 1
            self.running = group
        return group

    def _key(self, job: Job):
        from noisecraft.serve.batching import batch_key

        if job.kind != "txt2img":
            return None
        return batch_key(self.models.get(job.model).run, job.request)

    def _loop(self) -> None:
        while True:
            group = self._take()
            if not group:
                return
            t0 = time.monotonic()
            self._run(group)
            self.seconds_per_job = 0.8 * self.seconds_per_job + 0.2 * (time.monotonic() - t0)
            with self.cond:
                self.running = []

    def _run(self, group: list[Job]) -> None:
        served = self.models.get(group[0].model)
        try:
            results = self.run_batch(served, group, self._callback(served, group))
        except Cancelled:
            results = {}
        except NoisecraftError as e:
            for job in group:
                self._finish(job, "failed", error=str(e))
            return
        except Exception as e:  # noqa: BLE001 - the worker must survive anything; the client sees a message
            import logging

            logging.getLogger("noisecraft.serve").exception("generation failed")
            for job in group:
                self._finish(job, "failed", error=f"generation failed: {type(e).__name__}: {e}")
            return
        for job in group:
            if job.cancel_event.is_set() or job.id not in results:
                self._finish(job, "cancelled", error="cancelled")
            else:
                self.pool.submit(self._encode, served, job, results[job.id])

    def _encode(self, served, job: Job, generation) -> None:
        try:
            self._finish(job, "done", result=self.encode(served, job, generation))
        except Exception as e:  # noqa: BLE001 - as in _run: the job fails with a message, the server goes on
            import logging

            logging.getLogger("noisecraft.serve").exception("encoding the outputs failed")
            self._finish(job, "failed", error=f"encoding the outputs failed: {type(e).__name__}: {e}")

    def _callback(self, served, group: list[Job]):
        """The sampler callback: each job's step and (every PREVIEW_EVERY s) preview; Cancelled when all cancel."""
        offsets = list(itertools.accumulate([0] + [j.request.num for j in group]))[:-1]
        last = [0.0]

        def callback(info):
            if all(j.cancel_event.is_set() for j in group):
                raise Cancelled()
            now = time.monotonic()
            preview = now - last[0] >= PREVIEW_EVERY
            if preview:
                last[0] = now
            for job, at in zip(group, offsets):
                job.step = min(job.steps, info.get("i", job.step) + 1)
                if preview:
                    job.preview = self.make_preview(served, info["denoised"][at:at + 1])
                job.version += 1

        return callback
