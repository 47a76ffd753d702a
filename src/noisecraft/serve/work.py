"""What the worker does with a batch of jobs: generate (stacked txt2img, or one img2img / inpainting edit) and
turn each job's images into watermarked PNGs with their parameters and provenance, and A1111's answer."""

from __future__ import annotations

import json

import numpy as np

from noisecraft.serve import images as io
from noisecraft.serve import watermark
from noisecraft.serve.safeguards import check_images


def run_batch(served, jobs, callback) -> dict:
    """{job id: its Generation} for jobs on one run (`jobs.Scheduler`): the txt2img jobs stacked into one batch,
    or one img2img / inpainting job."""
    if jobs[0].kind == "img2img":
        generations = [edit(served.run, jobs[0], callback)]
    else:
        from noisecraft.serve.batching import generate_together

        generations = generate_together(served.run, [j.request for j in jobs], callback=callback)
    return {job.id: g for job, g in zip(jobs, generations)}


def edit(run, job, callback):
    e = job.edit
    if e.get("mask") is not None:
        from noisecraft.editing.inpaint import inpaint

        return inpaint(run, e["image"], e["mask"], job.request, callback=callback)
    from noisecraft.editing.img2img import img2img

    return img2img(run, e["image"], job.request, e["strength"], callback=callback)


def result(config, served, job, generation) -> dict:
    """The job's PNGs (base64), infotexts, withheld images and A1111's `info`."""
    rgb = io.to_rgb(generation.images, served.scale)
    generation.images = generation.images.new_zeros(len(rgb), 3, *rgb.shape[1:3])  # Size: the served size
    texts = [f"{generation.infotext(i)}, Model hash: {served.hash}" for i in range(len(rgb))]
    infos = [{**generation.parameters, "seed": generation.seeds[i], "num": 1, "grid": False,
              "provenance": io.provenance(served.name, served.hash, config.watermark)} for i in range(len(rgb))]
    withheld = check_images(config.image_checker, list(rgb), infos)
    pngs, kept = [], []
    for i, image in enumerate(rgb):
        if withheld[i] is not None:
            continue
        marked = watermark.embed(image) if config.watermark else image
        pngs.append(io.b64(io.png_bytes(marked, texts[i], infos[i])))
        kept.append(i)
    return {"images": pngs, "infotexts": [texts[i] for i in kept], "seeds": [generation.seeds[i] for i in kept],
            "withheld": [{"index": i, "reason": r} for i, r in enumerate(withheld) if r is not None],
            "info": a1111_info(served, job, generation, texts, kept, rgb.shape)}


def a1111_info(served, job, generation, texts, kept, shape) -> str:
    """A1111's `info`: a JSON string of the generation's settings."""
    m, c = job.meta, generation.parameters["conditioning"]
    seeds = [generation.seeds[i] for i in kept]
    return json.dumps({
        "prompt": m.get("prompt", ""), "all_prompts": [m.get("prompt", "")] * len(kept),
        "negative_prompt": m.get("negative_prompt", ""), "all_negative_prompts": [m.get("negative_prompt", "")]
        * len(kept), "seed": generation.seeds[0], "all_seeds": seeds, "subseed": -1, "all_subseeds": [-1] * len(kept),
        "subseed_strength": 0, "width": int(shape[2]), "height": int(shape[1]),
        "sampler_name": generation.parameters["sampler"], "cfg_scale": c.get("guidance", 1.0),
        "steps": generation.parameters["steps"], "batch_size": m.get("batch_size", len(kept)),
        "n_iter": m.get("n_iter", 1), "restore_faces": False, "sd_model_name": served.name,
        "sd_model_hash": served.hash, "seed_resize_from_w": -1, "seed_resize_from_h": -1,
        "denoising_strength": m.get("denoising_strength"), "extra_generation_params": {
            "Schedule type": generation.parameters["step_schedule"]},
        "index_of_first_image": 0, "infotexts": [texts[i] for i in kept], "styles": [],
        "job_timestamp": m.get("job_timestamp", ""), "clip_skip": 1, "is_using_inpainting_conditioning": False,
        "version": "noisecraft"})


def preview_png(served, denoised) -> bytes:
    """A small PNG of a denoised estimate (1, *sample shape): decoded for a latent run, no watermark."""
    from noisecraft.viz import to_uint8, upscale

    arr = to_uint8(served.run.to_images(denoised.float().cpu()))[0]
    arr = np.repeat(arr, 3, axis=-1) if arr.shape[-1] == 1 else arr
    return io.png_bytes(upscale(arr, max(1, 128 // max(arr.shape[:2]))), "", {})
