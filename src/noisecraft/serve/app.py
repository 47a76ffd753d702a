"""The FastAPI app: AUTOMATIC1111-compatible routes (`/sdapi/v1/...`), noisecraft's job API (`/v1/jobs`, with
server-sent events for progress and previews), the web page (`/`, static files in this package) and the
OpenAPI docs (`/docs`). Every user error is a 4xx JSON `{"detail": message}`; nothing answers a traceback."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi import Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from noisecraft.errors import NoisecraftError
from noisecraft.serve import schemas
from noisecraft.serve.config import ServeConfig
from noisecraft.serve.jobs import Job, QueueFull, Scheduler
from noisecraft.serve.requests import LimitError, check_limits, to_request
from noisecraft.serve.safeguards import PromptFilter, RateLimiter, bearer_key

STATIC = Path(__file__).parent / "static"
OPEN_PATHS = ("/", "/docs", "/openapi.json", "/favicon.ico")


def create_app(models, config: ServeConfig | None = None) -> FastAPI:
    """The app serving `models` (`serve.models.Models`) with `config`; its worker starts with it."""
    from noisecraft.serve.work import preview_png, result, run_batch

    config = config or ServeConfig()
    app = FastAPI(title="noisecraft", description="Diffusion models over HTTP: A1111-compatible routes and jobs.")
    app.state.models, app.state.config = models, config
    app.state.scheduler = Scheduler(models, config, run_batch, lambda s, job, g: result(config, s, job, g),
                                    preview_png)
    app.state.filter, app.state.limiter = PromptFilter(config.blocked_terms), RateLimiter(config.rate_limit)
    app.router.add_event_handler("shutdown", app.state.scheduler.stop)
    app.add_middleware(Guard, server=app)
    add_error_handlers(app)
    add_a1111_routes(app)
    add_job_routes(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_api_route("/", lambda: FileResponse(STATIC / "index.html"), methods=["GET"], include_in_schema=False)
    return app


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


class Guard:
    """Pure ASGI middleware (so a client's disconnect reaches the routes): the body-size limit (413), the API key
    (401) and the per-key rate limit (429 with Retry-After); it sets `scope["state"]["client"]` (key or address)."""

    def __init__(self, app, server):
        self.app, self.server = app, server

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal = self.check(scope)
        if refusal is not None:
            return await refusal(scope, receive, send)
        return await self.app(scope, receive, send)

    def check(self, scope) -> JSONResponse | None:
        config = self.server.state.config
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > config.max_body:
            return error(413, f"the request body is {length} bytes; this server's limit is {config.max_body} bytes")
        path = scope["path"]
        client = scope["client"][0] if scope.get("client") else "-"
        scope.setdefault("state", {})["client"] = client
        if path in OPEN_PATHS or path.startswith("/static/"):
            return None
        key = bearer_key(headers.get("authorization"))
        if config.api_keys and key not in config.api_keys:
            return error(401, "this server needs an API key: send the header 'Authorization: Bearer KEY'"
                         if key is None else "the API key is not valid", {"WWW-Authenticate": "Bearer"})
        client = key or client
        scope["state"]["client"] = client
        wait = self.server.state.limiter.wait_time(client) if scope["method"] == "POST" else 0
        if wait > 0:
            return error(429, f"rate limit of {config.rate_limit:g} requests a minute reached; retry after "
                         f"{wait:.0f} s", {"Retry-After": str(max(1, round(wait + 0.5)))})
        return None


def add_error_handlers(app) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc: RequestValidationError):
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error(400, "the request body is not valid JSON")
        if any(tuple(e.get("loc", ())) == ("body",) for e in errors):
            return error(422, "the request body must be a JSON object (sent with Content-Type: application/json)")
        parts = []
        for e in errors[:5]:
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
            parts.append(f"{where}: {e.get('msg')}")
        return error(422, "; ".join(parts))

    @app.exception_handler(LimitError)
    async def limit(request, exc: LimitError):
        return error(exc.status, str(exc))

    @app.exception_handler(NoisecraftError)
    async def bad(request, exc: NoisecraftError):
        return error(422, str(exc))

    @app.exception_handler(QueueFull)
    async def full(request, exc: QueueFull):
        return error(429, str(exc), {"Retry-After": str(exc.retry_after)})


def make_job(app, body, client: str) -> Job:
    """A checked job for an A1111-shaped body (NoisecraftError naming what is wrong, else ready to submit)."""
    from noisecraft.pipelines import check_request, plan

    served = app.state.models.get(body.model or body.override_settings.get("sd_model_checkpoint"))
    refusal = app.state.filter.refusal(client, body.prompt, body.negative_prompt)
    if refusal:
        raise NoisecraftError(refusal)
    num = check_limits(app.state.config, body, served)
    request = to_request(body, served, num)
    check_request(served.run, request)
    steps = len(plan(served.run, request).sigmas) - 1
    meta = {"prompt": body.prompt, "negative_prompt": body.negative_prompt, "batch_size": body.batch_size,
            "n_iter": body.n_iter, "job_timestamp": time.strftime("%Y%m%d%H%M%S")}
    job = Job(served.name, request, client=client, meta=meta, steps=steps)
    if getattr(body, "init_images", None):
        job.kind, job.edit = "img2img", edit_inputs(body, served)
        job.meta["denoising_strength"] = body.denoising_strength
        if job.edit["mask"] is None:
            from noisecraft.editing.img2img import check_strength, sdedit_start

            check_strength(body.denoising_strength)
            job.steps = steps - sdedit_start(steps, body.denoising_strength)
    return job


def edit_inputs(body, served) -> dict:
    from noisecraft.serve.images import decode_image, image_tensor, mask_tensor

    image = image_tensor(decode_image(body.init_images[0], "init_images[0]"), served.size, served.channels)
    mask = None
    if body.mask:
        mask = mask_tensor(decode_image(body.mask, "mask"), served.size)
        mask = 1 - mask if body.inpainting_mask_invert else mask
    return {"image": image, "mask": mask, "strength": body.denoising_strength}


async def wait(job: Job, request: HTTPRequest | None, scheduler) -> None:
    """Until the job is finished; a client that disconnects first cancels it."""
    while not job.done.is_set():
        if request is not None and await request.is_disconnected():
            scheduler.cancel(job)
            return
        await asyncio.sleep(0.02)


def a1111_answer(job: Job, body) -> dict:
    if job.state == "failed":
        raise NoisecraftError(job.error)
    result = job.result or {"images": [], "info": json.dumps({"interrupted": True, "infotexts": []})}
    parameters = body.model_dump(exclude={"init_images", "mask"})
    return {"images": result["images"] if body.send_images else [], "parameters": parameters,
            "info": result["info"]}


def add_a1111_routes(app) -> None:
    scheduler, models = app.state.scheduler, app.state.models

    async def generate(body, request):
        job = scheduler.submit(make_job(app, body, request.state.client))
        await wait(job, request, scheduler)
        return a1111_answer(job, body)

    @app.post("/sdapi/v1/txt2img", tags=["a1111"])
    async def txt2img(body: schemas.Txt2Img, request: HTTPRequest):
        return await generate(body, request)

    @app.post("/sdapi/v1/img2img", tags=["a1111"])
    async def img2img(body: schemas.Img2Img, request: HTTPRequest):
        if not body.init_images:
            raise NoisecraftError("img2img needs init_images: a list with one base64 image")
        return await generate(body, request)

    @app.post("/sdapi/v1/png-info", tags=["a1111"])
    async def png_info(body: schemas.PngInfo):
        from noisecraft.serve.images import decode_image, png_parameters

        text, meta = png_parameters(decode_image(body.image))
        return {"info": text, "items": {"parameters": text, **({"noisecraft": meta} if meta else {})},
                "parameters": parse_infotext(text)}

    @app.get("/sdapi/v1/samplers", tags=["a1111"])
    async def samplers_list():
        from noisecraft import samplers

        return [{"name": n, "aliases": samplers.aliases_of(n), "options": {}} for n in samplers.available()]

    @app.get("/sdapi/v1/sd-models", tags=["a1111"])
    async def sd_models():
        return [{"title": s.title, "model_name": s.name, "hash": s.hash, "sha256": s.sha256, "filename": s.filename,
                 "config": None} for s in models.by_name.values()]

    @app.get("/sdapi/v1/options", tags=["a1111"])
    async def options():
        return {"sd_model_checkpoint": models.get(None).title, "samples_format": "png"}

    @app.post("/sdapi/v1/options", tags=["a1111"])
    async def set_options(body: schemas.Options):
        if body.sd_model_checkpoint is not None:
            models.current = models.get(body.sd_model_checkpoint).name
        return None

    @app.get("/sdapi/v1/progress", tags=["a1111"])
    async def progress(skip_current_image: bool = False):
        return a1111_progress(scheduler, skip_current_image)

    @app.post("/sdapi/v1/interrupt", tags=["a1111"])
    async def interrupt():
        scheduler.interrupt()
        return None


def a1111_progress(scheduler, skip_image: bool) -> dict:
    from noisecraft.serve.images import b64

    running = list(scheduler.running)
    job = running[0] if running else None
    progress = job.progress if job else 0.0
    elapsed = time.time() - job.started if job and job.started else 0.0
    eta = elapsed / progress - elapsed if progress > 0 else 0.0
    state = {"skipped": False, "interrupted": bool(job and job.cancel_event.is_set()), "job": job.id if job else "",
             "job_count": len(running) + len(scheduler.pending), "job_timestamp": job.meta.get("job_timestamp", "")
             if job else "", "job_no": 0, "sampling_step": job.step if job else 0,
             "sampling_steps": job.steps if job else 0}
    image = b64(job.preview) if job and job.preview and not skip_image else None
    return {"progress": round(progress, 4), "eta_relative": round(eta, 3), "state": state, "current_image": image,
            "textinfo": f"step {job.step}/{job.steps}" if job else None}


def parse_infotext(text: str) -> dict:
    """A1111's `parameters` text -> {"Prompt", "Negative prompt", "Steps", ...}."""
    if not text:
        return {}
    lines = text.strip().split("\n")
    settings, out = lines[-1], {}
    prompt = [line for line in lines[:-1] if not line.startswith("Negative prompt: ")]
    negative = [line[len("Negative prompt: "):] for line in lines[:-1] if line.startswith("Negative prompt: ")]
    out["Prompt"] = "\n".join(prompt)
    out["Negative prompt"] = "\n".join(negative)
    for part in settings.split(", "):
        key, sep, value = part.partition(": ")
        if sep:
            out[key] = value
    return out


def add_job_routes(app) -> None:
    scheduler = app.state.scheduler

    def find(job_id: str) -> Job:
        job = scheduler.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id!r} (finished jobs are kept for the last "
                                     f"{app.state.config.keep_jobs})")
        return job

    @app.post("/v1/jobs", status_code=202, tags=["jobs"])
    async def submit(body: schemas.Job, request: HTTPRequest):
        job = scheduler.submit(make_job(app, body, request.state.client))
        return job.status()

    @app.get("/v1/jobs/{job_id}", tags=["jobs"])
    async def status(job_id: str):
        job = find(job_id)
        return {**job.status(), "result": job.result}

    @app.post("/v1/jobs/{job_id}/cancel", tags=["jobs"])
    async def cancel(job_id: str):
        job = find(job_id)
        scheduler.cancel(job)
        return job.status()

    @app.get("/v1/jobs/{job_id}/events", tags=["jobs"])
    async def events(job_id: str, request: HTTPRequest):
        """Server-sent events: `progress` (state, step, steps, a base64 PNG preview) until `done` (the result)."""
        job = find(job_id)
        return StreamingResponse(event_stream(job, request, scheduler), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})


async def event_stream(job: Job, request: HTTPRequest, scheduler):
    from noisecraft.serve.images import b64

    seen, sent_preview = -1, None
    while True:
        if await request.is_disconnected():
            scheduler.cancel(job)
            return
        if job.version != seen:
            seen = job.version
            data = job.status()
            if job.preview is not None and job.preview is not sent_preview:
                data["preview"], sent_preview = b64(job.preview), job.preview
            if job.done.is_set():
                data["result"] = job.result
                yield f"event: done\ndata: {json.dumps(data)}\n\n"
                return
            yield f"event: progress\ndata: {json.dumps(data)}\n\n"
        await asyncio.sleep(0.05)
