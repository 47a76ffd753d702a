"""Audio: a `bach-audio` run trained on a CPU budget, scored by note statistics estimated from its Griffin-Lim audio
and by the Frechet distance on AudioNet features, against real held-out clips and a shuffled-notes baseline
(results: benchmarks/modalities.md, "Audio"; benchmarks/results/audio.json).

    /tmp/ncslot python benchmarks/audio.py train --cpu-minutes 20 --out runs/audio-bench
    /tmp/ncslot python benchmarks/audio.py eval --run runs/audio-bench --png benchmarks/audio_spectrograms.png \\
        --wav benchmarks/audio_sample.wav

`train`: one torch thread, the `bach-audio` preset, stopped after a budget of process CPU seconds
(`time.process_time`, counted from the first step; loading and rendering the data are outside it), because the
2-core machine is shared and wall budgets are not comparable.

`eval` (`noisecraft.audio.metrics` defines every statistic):
1. Reference: every clip of the bach-audio test split (chorales never trained on).
2. Compared sets of N clips each (default 256): generated (the run's own sampler and steps, class-conditional
   with the modes of N random test clips, seeds 1000..); real train clips (real against real: what a perfect model
   reaches with sets of this size); the shuffled-notes baseline (the same N test clips with every voice's pitches
   and durations permuted, `noisecraft.audio.data.shuffle_notes`, rendered by the same synthesiser).
3. Every waveform the statistics see has been through the same path, mel image -> Griffin-Lim (32 iterations):
   generated clips can only be heard that way, so real and shuffled clips are rendered, turned into mel images
   and inverted too. One more row, "real train vs test, rendered waveforms", scores the statistics on the
   synthesiser's own audio (no mel / Griffin-Lim) to show what the inversion costs.
4. FD_audionet: the Frechet distance of AudioNet features (64-d; noisecraft's own network, trained on the train
   split's mel images; not comparable to published FAD) of each set's mel images against the reference's;
   "mode adherence": the fraction of generated clips that AudioNet classifies as the mode they were asked for.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cpu_budget import meta, record, train_preset_command

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "audio.json"


def _meta(argv) -> dict:
    return meta("audio.py", argv)


def _record(key: str, value: dict) -> None:
    record(RESULTS, key, value)


def cmd_train(args, argv) -> None:
    train_preset_command("audio.py", RESULTS, args, argv)


def _via_mel(waves, spec) -> tuple[torch.Tensor, list[np.ndarray]]:
    """Waveforms -> mel images (N, 1, n_mels, frames) and their Griffin-Lim waveforms."""
    from noisecraft.audio.mel import image_to_wave, wave_to_image

    images = np.stack([wave_to_image(y, spec) for y in waves])
    back = [image_to_wave(x, spec, seed=i) for i, x in enumerate(images)]
    return torch.from_numpy(images[:, None]), back


def _row(stats, ref_stats, images, ref_images, net) -> dict:
    from noisecraft.audio.metrics import distances, frechet_audio_distance_nc

    out = {k: round(v, 4) for k, v in distances(stats, ref_stats).items()}
    out["onsets_per_clip"] = round(stats.onsets_per_clip, 2)
    if images is not None:
        out["fd_audionet"] = round(frechet_audio_distance_nc(images, ref_images, net), 3)
    return out


def cmd_eval(args, argv) -> None:
    from noisecraft.audio.data import clip_images, render_clip, shuffle_notes, split_mask
    from noisecraft.audio.io import save_wav, spectrogram_png
    from noisecraft.audio.mel import image_to_wave, spec_for_shape
    from noisecraft.audio.metrics import AudioNetSpec, audio_features, audio_net, audio_net_metadata, statistics
    from noisecraft.files import atomic_write_bytes
    from noisecraft.pipelines import Request, generate, load

    torch.set_num_threads(1)
    c0 = time.process_time()
    run = load(args.run)
    spec = spec_for_shape(run.data_shape)
    items = clip_images(args.count, spec)[1]
    test_idx, train_idx = np.flatnonzero(split_mask(items, "test")), np.flatnonzero(split_mask(items, "train"))
    rng = np.random.default_rng(args.seed)
    pick_test = rng.choice(test_idx, size=min(args.num, len(test_idx)), replace=False)
    pick_train = rng.choice(train_idx, size=args.num, replace=False)
    net_spec = AudioNetSpec(resolution=spec.n_mels, count=args.count, steps=args.audionet_steps)
    net = audio_net(net_spec, progress=True)
    net_meta = audio_net_metadata(net_spec)
    t_net = time.process_time() - c0

    def rendered(idx, shuffle=False):
        r = np.random.default_rng(args.seed + 1)
        return [render_clip(shuffle_notes(items[i].events, r) if shuffle else items[i].events, spec) for i in idx]

    ref_wave = rendered(test_idx)
    ref_images, ref_gl = _via_mel(ref_wave, spec)
    train_wave = rendered(pick_train)
    train_images, train_gl = _via_mel(train_wave, spec)
    shuf_images, shuf_gl = _via_mel(rendered(pick_test, shuffle=True), spec)

    labels = tuple(int(items[i].mode) for i in pick_test)
    c1 = time.process_time()
    with torch.no_grad():
        result = generate(run, Request(class_ids=labels, num=len(labels), seed=1000, guidance=args.guidance))
    t_gen = time.process_time() - c1
    gen_images = result.images.clamp(-1, 1)
    gen_gl = [image_to_wave(x[0].numpy(), spec, seed=s) for x, s in zip(gen_images, result.seeds, strict=True)]

    ref_stats = statistics(ref_gl)
    rows = {
        "real train clips": _row(statistics(train_gl), ref_stats, train_images, ref_images, net),
        "shuffled notes": _row(statistics(shuf_gl), ref_stats, shuf_images, ref_images, net),
        "generated": _row(statistics(gen_gl), ref_stats, gen_images, ref_images, net),
        "real train vs test, rendered waveforms (no mel / Griffin-Lim)":
            _row(statistics(train_wave), statistics(ref_wave), None, None, net),
    }
    rows["reference (test clips)"] = {"onsets_per_clip": round(ref_stats.onsets_per_clip, 2)}
    with torch.no_grad():
        mode = net.heads["mode"](torch.from_numpy(audio_features(net, gen_images)).float()).argmax(1)
        real_mode = net.heads["mode"](torch.from_numpy(audio_features(net, ref_images)).float()).argmax(1)
    adherence = float((mode == torch.tensor(labels)).float().mean())
    real_acc = float((real_mode == torch.tensor([items[i].mode for i in test_idx])).float().mean())
    report = {"run": args.run, "step": result.parameters["model_step"], "sampler": result.parameters["sampler"],
              "steps": result.parameters["steps"], "guidance": args.guidance, "num": len(labels),
              "reference_clips": len(test_idx), "rows": rows,
              "mode_adherence_generated": round(adherence, 4), "audionet_mode_accuracy_test_clips": round(real_acc, 4),
              "audionet": net_meta, "cpu_s_generate": round(t_gen, 1), "cpu_s_audionet": round(t_net, 1),
              "cpu_s_total": round(time.process_time() - c0, 1), "meta": _meta(argv)}
    print(json.dumps(report, indent=1))
    _record(f"eval {args.run}", report)
    if args.png is not None:  # top row: real test clips; then generated, major then minor
        major = [i for i, m in enumerate(labels) if m == 0][:4]
        minor = [i for i, m in enumerate(labels) if m == 1][:4]
        real = [int(np.flatnonzero(test_idx == pick_test[i])[0]) for i in (major[:2] + minor[:2])]
        grid = torch.cat([ref_images[real], gen_images[major], gen_images[minor]])
        names = ("major", "minor")
        titles = [f"real {names[items[test_idx[j]].mode]}" for j in real]
        titles += [f"generated {names[labels[i]]} (seed {result.seeds[i]})" for i in major + minor]
        atomic_write_bytes(args.png, spectrogram_png(grid, titles, columns=4, spec=spec))
    if args.wav is not None:  # one generated major clip, then one minor, 0.25 s apart
        first = [labels.index(m) for m in (0, 1) if m in labels]
        parts = [part for i in first for part in (gen_gl[i], np.zeros(4000, np.float32))][:-1]
        save_wav(np.concatenate(parts), args.wav)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--preset", default="bach-audio")
    t.add_argument("--cpu-minutes", type=float, default=20.0)
    t.add_argument("--out", required=True)
    t.add_argument("overrides", nargs="*", help="section.field=value")
    e = sub.add_parser("eval")
    e.add_argument("--run", required=True)
    e.add_argument("--num", type=int, default=256)
    e.add_argument("--guidance", type=float, default=None, help="CFG scale (default: the conditional model)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--count", type=int, default=None, help="chorales (default: all; fewer for a smoke run)")
    e.add_argument("--audionet-steps", type=int, default=800)
    e.add_argument("--png", type=Path, default=None)
    e.add_argument("--wav", type=Path, default=None)
    args = parser.parse_args()
    {"train": cmd_train, "eval": cmd_eval}[args.command](args, sys.argv[1:])


if __name__ == "__main__":
    main()
