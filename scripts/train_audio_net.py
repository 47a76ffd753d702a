"""Train noisecraft's audio feature network (`noisecraft.audio.metrics.AudioNet`) on the real mel spectrograms of
bach-audio's training split, cache it as safetensors in $NOISECRAFT_CACHE/audio/, and print its test-split scores
(mode accuracy, mean TV distance of its pitch-class prediction). `noisecraft.audio.metrics.audio_net` does the same
on first use; this script makes it explicit (and retrains with --force).

    /tmp/ncslot python scripts/train_audio_net.py                 # the network the audio benchmark uses
"""

from __future__ import annotations

import argparse
import json

import torch

from noisecraft.audio.metrics import AudioNetSpec, audio_net, audio_net_metadata, audio_net_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=128, help="mel bands")
    parser.add_argument("--count", type=int, default=None, help="chorales (default: all)")
    parser.add_argument("--steps", type=int, default=AudioNetSpec.steps)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="retrain even if cached")
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = AudioNetSpec(resolution=args.resolution, count=args.count, steps=args.steps, seed=args.seed)
    path = audio_net_path(spec)
    if args.force:
        path.unlink(missing_ok=True)
    audio_net(spec, progress=True)
    print(json.dumps({"path": str(path), **audio_net_metadata(spec)}, indent=1))


if __name__ == "__main__":
    main()
