"""noisecraft's generation server: `noisecraft serve --checkpoint RUN` (FastAPI + uvicorn).

- AUTOMATIC1111-compatible routes (`/sdapi/v1/txt2img`, `img2img`, `png-info`, `samplers`, `sd-models`,
  `options`, `progress`, `interrupt`), so A1111 clients work against it; noisecraft's job API (`/v1/jobs`,
  server-sent events with progress and previews, cancel); OpenAPI docs at `/docs`; a web page at `/`.
- A bounded queue (429 with Retry-After when full), limits answered 413/422 naming the limit, a client that
  disconnects cancels its job, and dynamic batching of compatible requests (`serve.batching`).
- Safeguards: bearer API keys with per-key rate limits, a prompt filter, an image-checker hook, and an invisible
  watermark with provenance metadata on every output (`serve.watermark`).
"""

from noisecraft.serve.config import ServeConfig

__all__ = ["ServeConfig", "create_app"]


def create_app(models, config=None):
    from noisecraft.serve.app import create_app as make

    return make(models, config)
