"""`noisecraft search`: the k indexed items most similar to a query picture, printed (id, label, cosine) and
written as a PNG grid: the query, then its neighbours, best first. See noisecraft.search."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("search", help="find the indexed images most similar to a picture",
                       description="Embed a query picture as the index was built and print its k nearest "
                                   "indexed items (cosine similarity); --out writes them as a PNG grid.")
    p.add_argument("--index", required=True, help="an index directory written by `noisecraft index`")
    p.add_argument("--image", required=True, help="the query picture (PNG, JPEG, ...)")
    p.add_argument("-k", type=int, default=10, help="number of neighbours (default 10)")
    p.add_argument("--out", help="write the query and its neighbours as a PNG grid")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")


def run(args) -> int:
    import torch

    from noisecraft.data import load_dataset
    from noisecraft.eval.image_io import read_single_image
    from noisecraft.search import load_index, search

    index = load_index(args.index)
    shape = index.meta["image_shape"]
    query = read_single_image(args.image, "--image", channels=shape[0])[None]  # (1, C, H, W)
    scores, ids = search(index, query, args.k, device=args.device)
    labels = dict(zip(index.meta["ids"], index.meta["labels"] or []))
    for rank, (i, s) in enumerate(zip(ids[0], scores[0]), 1):
        label = f"  label {labels[int(i)]}" if labels else ""
        print(f"{rank:3d}. id {int(i):6d}  score {float(s):.4f}{label}")
    if args.out:
        from noisecraft.viz import save_grid

        d = index.meta["dataset"]
        images = load_dataset(d["name"], split=d["split"], limit=d.get("limit")).images
        tiles = torch.cat([query, images[torch.as_tensor(ids[0])]])
        save_grid(tiles, args.out, nrow=len(tiles), info={"num": len(tiles), "nrow": len(tiles),
                  "ids": [int(i) for i in ids[0]], "scores": [round(float(s), 5) for s in scores[0]]})
        print(f"wrote {args.out} (query, then its {len(ids[0])} neighbours)")
    return 0
