"""Where a generation goes on disk: one writer per (modality, file extension).

A run's modality is that of its dataset (`DATASET_MODALITY`, "image" when a dataset is not listed, "points" for
1-D samples such as the 2-D toys). `sample --out PATH`, img2img and inpaint call `writer_for(run, PATH)`; a
modality package registers its writers here by dotted path, so this module imports nothing heavy:

    OUTPUT_WRITERS["audio"] = {".wav": "noisecraft.audio.io:write_wav", ".png": ...}

A writer is `write(result: Generation, out: Path, run: Run) -> Path` and returns what it wrote. The "image"
modality's writers stay in `noisecraft.cli.sample_cmd.save_generation` (a .png grid, or a directory of PNGs).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from noisecraft.errors import NoisecraftError

# dataset name -> modality; datasets not listed are "image" (or "points" for 1-D samples).
DATASET_MODALITY: dict[str, str] = {}
# modality -> {file extension (lower case, with the dot) or "" for a directory: "module:function"}
OUTPUT_WRITERS: dict[str, dict[str, str]] = {}

# video (noisecraft.data.video, noisecraft.video.io): clips (N, C, T, H, W) as a GIF / MP4 / WebM grid, a PNG frame
# strip (train's samples.png preview), or a directory of one GIF per clip
DATASET_MODALITY.update({name: "video" for name in ("moving-mnist", "moving-scenes", "video-folder")})
OUTPUT_WRITERS["video"] = {".gif": "noisecraft.video.io:write_gif", ".mp4": "noisecraft.video.io:write_video",
                           ".webm": "noisecraft.video.io:write_video", ".png": "noisecraft.video.io:write_strip",
                           "": "noisecraft.video.io:write_directory"}

# molecules (noisecraft.molecules): SDF (bonds inferred) and XYZ files of all molecules, a PNG picture (the preview)
DATASET_MODALITY["molecules"] = "molecules"
OUTPUT_WRITERS["molecules"] = {".sdf": "noisecraft.molecules.io:write_sdf", ".xyz": "noisecraft.molecules.io:write_xyz",
                               ".png": "noisecraft.molecules.io:write_png"}

# 3-D point clouds (noisecraft.points.io): one PLY of all clouds, a PNG of them rendered in 3-D (the preview)
DATASET_MODALITY["shapes-points"] = "point-clouds"
OUTPUT_WRITERS["point-clouds"] = {".ply": "noisecraft.points.io:write_ply", ".png": "noisecraft.points.io:write_png"}

# audio (noisecraft.audio.io): mel images back to sound by Griffin-Lim, one WAV of all clips or a directory of one
# WAV per clip, and a PNG of the spectrograms (the preview)
DATASET_MODALITY["bach-audio"] = "audio"
OUTPUT_WRITERS["audio"] = {".wav": "noisecraft.audio.io:write_wav", "": "noisecraft.audio.io:write_wav_directory",
                           ".png": "noisecraft.audio.io:write_png"}


def modality(run) -> str:
    """The modality of a loaded run: its dataset's entry in DATASET_MODALITY, else "points" for 1-D samples,
    else "image"."""
    dataset = getattr(getattr(getattr(run, "config", None), "data", None), "dataset", None)
    if dataset in DATASET_MODALITY:
        return DATASET_MODALITY[dataset]
    return "points" if len(run.data_shape) == 1 else "image"


def writer_for(run, out):
    """The registered writer for `out` on this run's modality, or None when the modality has none registered
    (the image and 2-D point writers of save_generation apply). An extension the modality does not write is
    an error naming the ones it does."""
    kind = modality(run)
    writers = OUTPUT_WRITERS.get(kind)
    if not writers:
        return None
    out = Path(out)
    key = out.suffix.lower()
    if key not in writers:
        allowed = ", ".join(sorted(k or "a directory" for k in writers))
        article = "an" if kind[:1] in "aeiou" else "a"
        raise NoisecraftError(f"--out {str(out)!r}: {article} {kind} model writes {allowed}; got "
                              f"{key or 'no extension'!r}")
    module, _, name = writers[key].partition(":")
    return getattr(importlib.import_module(module), name)


def sample_titles(result, class_names=()) -> list[str]:
    """One title per sample of a generation result, for previews: its prompt or its class (named by class_names
    where it has a name) and its seed."""
    cond = result.parameters.get("conditioning") or {}
    prompts, labels = cond.get("prompts") or [], cond.get("class_ids")
    out = []
    for i, seed in enumerate(result.seeds):
        if prompts:
            out.append(f"{prompts[i if len(prompts) > 1 else 0]} (seed {seed})")
        elif isinstance(labels, list | tuple) and labels:
            label = int(labels[i if len(labels) > 1 else 0])
            out.append(f"{class_names[label] if label < len(class_names) else label} (seed {seed})")
        else:
            out.append(f"seed {seed}")
    return out
