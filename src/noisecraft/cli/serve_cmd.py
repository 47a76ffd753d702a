"""`noisecraft serve --checkpoint RUN [...]`: the generation server (FastAPI + uvicorn), A1111-compatible routes,
the job API and the web page (`noisecraft.serve`). Binds to 127.0.0.1 unless told otherwise."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve runs over HTTP: A1111-compatible API, job API and a web page",
                       description="Serve one or more runs over HTTP (the web page at http://HOST:PORT/, the "
                                   "OpenAPI docs at /docs).")
    p.add_argument("--checkpoint", action="append", required=True, metavar="RUN",
                   help="a run directory, diffusers folder or checkpoint file (repeat to serve several)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default: 7860, as A1111)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--queue", type=int, default=16, help="jobs that may wait before new ones get 429 (default: 16)")
    p.add_argument("--max-batch", type=int, default=16, help="images stacked into one network batch (default: 16)")
    p.add_argument("--max-steps", type=int, default=150, help="sampling steps a request may ask for (default: 150)")
    p.add_argument("--max-images", type=int, default=16, help="images one request may ask for (default: 16)")
    p.add_argument("--max-pixels", type=int, default=1024 * 1024, help="pixels of one image (default: 1048576)")
    p.add_argument("--api-key", action="append", default=[], metavar="KEY",
                   help="a bearer key clients must send (repeat for several; default: none needed)")
    p.add_argument("--rate-limit", type=float, default=0.0, metavar="PER_MINUTE",
                   help="requests a minute per key or client (default: 0, no limit)")
    p.add_argument("--block", action="append", default=[], metavar="TERM",
                   help="a term the prompt filter refuses (repeat; matched after normalisation)")
    p.add_argument("--block-file", default=None, help="a file of blocked terms, one a line")
    p.add_argument("--image-checker", default=None, metavar="MODULE:FUNCTION",
                   help="checker(rgb, info) -> None to keep the image or a reason to withhold it")
    p.add_argument("--no-watermark", action="store_true", help="do not watermark outputs (they keep provenance)")


def config_from_args(args):
    from pathlib import Path

    from noisecraft.errors import NoisecraftError
    from noisecraft.serve import ServeConfig
    from noisecraft.serve.safeguards import load_checker

    for name in ("queue", "max_batch", "max_steps", "max_images", "max_pixels"):
        if getattr(args, name) < 1:
            raise NoisecraftError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    terms = list(args.block)
    if args.block_file:
        terms += [t.strip() for t in Path(args.block_file).read_text().splitlines() if t.strip()]
    return ServeConfig(max_queue=args.queue, max_batch=args.max_batch, max_steps=args.max_steps,
                       max_images=args.max_images, max_pixels=args.max_pixels, api_keys=tuple(args.api_key),
                       rate_limit=args.rate_limit, blocked_terms=tuple(terms),
                       image_checker=load_checker(args.image_checker) if args.image_checker else None,
                       watermark=not args.no_watermark)


def run(args) -> int:
    import uvicorn

    from noisecraft.serve import create_app
    from noisecraft.serve.models import Models

    config = config_from_args(args)
    models = Models.load(args.checkpoint, device=args.device, watermark=config.watermark)
    print(f"noisecraft serve: {', '.join(models.names())} on http://{args.host}:{args.port}/ (docs at /docs)")
    uvicorn.run(create_app(models, config), host=args.host, port=args.port, log_level="warning")
    return 0
