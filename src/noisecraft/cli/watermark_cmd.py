"""`noisecraft watermark --check IMAGE`: is the server's invisible watermark in an image (`serve.watermark`)?"""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("watermark", help="check an image for noisecraft's invisible watermark",
                       description="Read noisecraft's invisible watermark (invisible-watermark, dwtDctSvd) back "
                                   "from images. Exit status 0: found in every image, 1: not found in one.")
    p.add_argument("--check", nargs="+", required=True, metavar="IMAGE", help="image files (PNG, JPEG, ...)")


def run(args) -> int:
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from noisecraft.errors import NoisecraftError
    from noisecraft.serve.watermark import FOUND_ACCURACY, bit_accuracy

    missing = 0
    for path in args.check:
        try:
            rgb = np.asarray(Image.open(path).convert("RGB"))
        except (OSError, UnidentifiedImageError) as e:
            raise NoisecraftError(f"{path}: not a readable image ({e})") from None
        accuracy = bit_accuracy(rgb)
        found = accuracy >= FOUND_ACCURACY
        missing += not found
        print(f"{path}: watermark {'found' if found else 'not found'} ({accuracy:.1%} of bits match)")
    return 1 if missing else 0
