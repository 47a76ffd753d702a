"""`noisecraft index`: embed a dataset split with a run's diffusion features (or a baseline) into a faiss index
directory (index.faiss + index.json), for `noisecraft search`. See noisecraft.search."""

from __future__ import annotations

from noisecraft.cli.argtypes import positive_int

FEATURES = ("diffusion", "pixels", "effnet")


def add_parser(sub) -> None:
    p = sub.add_parser("index", help="build a similarity-search index of a dataset",
                       description="Embed a dataset split (diffusion features of a run's denoiser at noise level "
                                   "--sigma, or raw pixels / EffNet features) into a faiss index directory.")
    p.add_argument("--checkpoint", help="the run (directory or checkpoint file); needed for --features diffusion")
    p.add_argument("--dataset", required=True, help="dataset name, e.g. mnist")
    p.add_argument("--split", default="train", help="train, test or all (default train)")
    p.add_argument("--limit", type=positive_int, default=None, help="index only the first LIMIT items")
    p.add_argument("--features", choices=FEATURES, default="diffusion", help="embedding (default diffusion)")
    p.add_argument("--sigma", type=float, default=0.5, help="noise level of the diffusion features (default 0.5)")
    p.add_argument("--layer", default="mid", help="network block: mid, down<l>, up<l> (U-Net), block<i> (DiT)")
    p.add_argument("--pool", type=positive_int, default=1, help="average-pool activations to POOL x POOL cells")
    p.add_argument("--draws", type=positive_int, default=1, help="average over this many fixed noise images")
    p.add_argument("--seed", type=int, default=0, help="seed of the fixed noise images (default 0)")
    p.add_argument("--noise", choices=("fixed", "inversion"), default="fixed",
                   help="x = x0 + sigma * fixed noise, or the probability-flow ODE inversion of x0 (default fixed)")
    p.add_argument("--inversion-steps", type=positive_int, default=8, help="Euler steps of --noise inversion")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--out", required=True, help="the index directory to write")


def run(args) -> int:
    from noisecraft.data import load_dataset
    from noisecraft.errors import NoisecraftError
    from noisecraft.search import DiffusionEmbedder, EffNetEmbedder, PixelEmbedder, build_index

    if args.features == "diffusion":
        if not args.checkpoint:
            raise NoisecraftError("--features diffusion needs --checkpoint RUN")
        from noisecraft.pipelines import load

        embedder = DiffusionEmbedder(load(args.checkpoint, device=args.device), sigma=args.sigma, layer=args.layer,
                                     pool=args.pool, draws=args.draws, seed=args.seed, batch_size=args.batch_size,
                                     noise=args.noise, inversion_steps=args.inversion_steps)
    else:
        embedder = PixelEmbedder() if args.features == "pixels" else EffNetEmbedder(args.device, args.batch_size)
    ds = load_dataset(args.dataset, split=args.split, limit=args.limit)
    dataset = {"name": args.dataset, "split": args.split, "limit": args.limit}
    index = build_index(embedder, ds.images, labels=ds.labels, dataset=dataset)
    index.save(args.out)
    print(f"wrote {args.out}: {len(index)} {args.dataset} {args.split} items, {index.meta['dim']}-d "
          f"{args.features} embeddings")
    return 0
