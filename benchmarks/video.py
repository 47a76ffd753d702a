"""benchmarks/video.md: text-to-video motion adherence, per-frame FD against the image model, temporal consistency
against independent frames, latent vs pixel video speed and memory, and the causal autoencoder's PSNR and
compression. CPU, short budgets (the minutes are arguments; the steps reached are recorded).

    flock /tmp/noisecraft-train.lock python benchmarks/video.py --out runs/video-bench

Stages are skipped when their run directory already has a checkpoint (delete it to retrain); results go to
OUT/results.json, which benchmarks/video.md quotes.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

SAMPLER, STEPS = "dpmpp_2m", 12


def train(preset: str, out: Path, minutes: float, **changes) -> dict:
    from noisecraft.presets import get_preset
    from noisecraft.training.trainer import Trainer

    if (out / "checkpoint.safetensors").is_file():
        return json.loads((out / "bench_train.json").read_text())
    config = get_preset(preset)
    for section, fields in changes.items():
        config = replace(config, **{section: replace(getattr(config, section), **fields)})
    config = replace(config, train=replace(config.train, minutes=minutes, steps=10**9))
    r = Trainer(config, out, progress=False).run()
    info = {"preset": preset, "minutes": minutes, "steps": r["step"], "loss": r["loss"], "seconds": r["seconds"]}
    (out / "bench_train.json").write_text(json.dumps(info))
    print(f"{preset}: {info}", flush=True)
    return info


def sample(path: Path, num: int, seed: int = 1000, frames: int | None = None, batch_size: int = 32,
           **request) -> torch.Tensor:
    from noisecraft.pipelines import Request, generate, load
    from noisecraft.video.frames import with_frames

    run = load(path)
    run = run if frames is None else with_frames(run, frames)
    return generate(run, Request(num=num, seed=seed, sampler=SAMPLER, steps=STEPS, batch_size=batch_size,
                                 **request)).images


def real_clips(dataset: str, resolution: int, frames: int, channels=None, limit=None):
    from noisecraft.data import load_dataset

    return load_dataset(dataset, split="test", resolution=resolution, frames=frames, channels=channels, limit=limit)


def saved_activation_mb(run_dir: Path, batch: int, frames: int | None = None) -> tuple[float, float]:
    """(MB of tensors saved for backward in one training forward, seconds per training step) of a run's network
    on a batch of its data shape, mean of 3 steps after one warm-up."""
    from noisecraft.core.losses import denoising_loss
    from noisecraft.pipelines import load
    from noisecraft.video.frames import with_frames

    run = load(run_dir, use_ema=False)
    run = run if frames is None else with_frames(run, frames)
    d = run.denoiser
    d.net.train().requires_grad_(True)
    x = torch.randn(batch, *run.data_shape)
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    times = []
    for i in range(4):
        total[0] = 0
        t0 = time.perf_counter()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            sigma = d.schedule.sample_sigma(batch, torch.Generator().manual_seed(i))
            loss = denoising_loss(d, x, sigma, torch.randn_like(x), None).mean()
        loss.backward()
        times.append(time.perf_counter() - t0)
    return total[0] / 2**20, sum(times[1:]) / 3


def sampling_seconds(run_dir: Path, num: int = 8, frames: int | None = None) -> float:
    t0 = time.perf_counter()
    sample(run_dir, num, frames=frames)
    return (time.perf_counter() - t0) / num


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/video-bench")
    ap.add_argument("--minutes", type=float, nargs=5, default=[2.5, 2.5, 4.0, 2.0, 1.5],
                    metavar=("IMAGE", "INFLATED", "T2V", "AE", "LDM"))
    ap.add_argument("--num", type=int, default=128, help="clips per evaluation")
    ap.add_argument("--motion-steps", type=int, default=300, help="training steps of each MotionNet")
    args = ap.parse_args()
    torch.set_num_threads(2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    m_img, m_inf, m_t2v, m_ae, m_ldm = args.minutes
    res = {"budgets": {}}
    res["budgets"]["image"] = train("moving-mnist-image", out / "image", m_img)
    res["budgets"]["inflated"] = train("moving-mnist-inflated", out / "inflated", m_inf,
                                       network={"inflate_from": str(out / "image")})
    res["budgets"]["t2v"] = train("moving-scenes-text-dit", out / "t2v", m_t2v)
    res["budgets"]["ae"] = train_ae(out / "ae", m_ae)
    res["budgets"]["ldm"] = train("ldm-moving-mnist", out / "ldm", m_ldm, data={"autoencoder": str(out / "ae")})
    res.update(evaluate(out, args.num, args.motion_steps))
    (out / "results.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


def train_ae(out: Path, minutes: float) -> dict:
    from noisecraft.video.autoencoder import get_video_ae_preset, train_video_autoencoder

    if (out / "checkpoint.safetensors").is_file():
        return json.loads((out / "bench_train.json").read_text())
    config = get_video_ae_preset("ae-video")
    config = replace(config, train=replace(config.train, minutes=minutes, steps=10**9))
    r = train_video_autoencoder(config, out, progress=False)
    x = real_clips("moving-mnist", 24, 9)
    z_shape = (config.causal_vae.latent_channels, 3, 24 // 4, 24 // 4)
    info = {"minutes": minutes, "steps": r["step"], "psnr_test": r["psnr"], "clip_shape": list(x.data_shape),
            "latent_shape": list(z_shape), "compression": x.images[0].numel() / torch.Size(z_shape).numel()}
    (out / "bench_train.json").write_text(json.dumps(info))
    return info


def evaluate(out: Path, num: int, motion_steps: int) -> dict:
    from noisecraft.data.video import DIRECTIONS
    from noisecraft.video import metrics as vm

    r: dict = {}
    t0 = time.perf_counter()
    mnist_net = vm.motion_net(vm.MotionNetSpec("moving-mnist", 8, 24, 1, steps=motion_steps))
    scenes_net = vm.motion_net(vm.MotionNetSpec("moving-scenes", 8, 32, 3, steps=motion_steps))
    real = real_clips("moving-mnist", 24, 8)
    scenes = real_clips("moving-scenes", 32, 8, limit=num)
    r["motion_net_test_accuracy"] = {
        "moving-mnist": float((vm.predicted(mnist_net, real.images) == real.attributes["direction"]).float().mean()),
        "moving-scenes": float((vm.predicted(scenes_net, scenes.images) == scenes.attributes["direction"])
                               .float().mean())}
    r["motion_net_seconds"] = time.perf_counter() - t0
    # per-frame FD, temporal consistency, FVD-nc: the inflated video U-Net vs the image U-Net's independent frames
    video = sample(out / "inflated", num)
    frames = sample(out / "image", num * 8, batch_size=256)  # (8 num, 1, 24, 24) independent frames
    independent = frames.reshape(num, 8, *frames.shape[1:]).transpose(1, 2)  # (num, 1, 8, 24, 24)
    latent = sample(out / "ldm", num)[:, :, :8]  # decoded 9-frame clips, first 8 frames
    r["per_frame_fd"] = {"video_inflated": vm.per_frame_fd(video, real.images),
                         "image_model": vm.per_frame_fd(independent, real.images),
                         "video_latent": vm.per_frame_fd(latent, real.images)}
    r["warping_error"] = {"real": vm.warping_error(real.images), "video_inflated": vm.warping_error(video),
                          "independent_frames": vm.warping_error(independent), "video_latent": vm.warping_error(latent)}
    r["fvd_nc"] = {"video_inflated": vm.fvd_nc(video, real.images, mnist_net),
                   "independent_frames": vm.fvd_nc(independent, real.images, mnist_net),
                   "video_latent": vm.fvd_nc(latent, real.images, mnist_net),
                   "real_train_vs_test": vm.fvd_nc(real_clips_train(num), real.images, mnist_net)}
    # text-to-video motion adherence on the test split's captions
    for w in (1.0, 3.0):
        clips = sample(out / "t2v", num, prompts=tuple(scenes.captions), guidance=w)
        want = scenes.attributes["direction"]
        r[f"t2v_guidance_{w:g}"] = {"adherence_motion_net": vm.motion_adherence(scenes_net, clips, want),
                                    "adherence_centroid": float((vm.centroid_direction(clips) == want).float().mean()),
                                    "real_clips_centroid": float((vm.centroid_direction(scenes.images) == want)
                                                                 .float().mean()),
                                    "num": num, "directions": list(DIRECTIONS)}
    # latent vs pixel: the pixel video U-Net (inflated run) on 9-frame clips vs the latent one on their latents
    mb_pix, s_pix = saved_activation_mb(out / "inflated", 8, frames=9)
    mb_lat, s_lat = saved_activation_mb(out / "ldm", 8)
    r["latent_vs_pixel"] = {"pixel_saved_activations_mb_batch8": mb_pix, "pixel_train_step_s": s_pix,
                            "latent_saved_activations_mb_batch8": mb_lat, "latent_train_step_s": s_lat,
                            "pixel_sample_s_per_clip": sampling_seconds(out / "inflated", frames=9),
                            "latent_sample_s_per_clip": sampling_seconds(out / "ldm")}
    return r


def real_clips_train(num: int) -> torch.Tensor:
    from noisecraft.data import load_dataset

    return load_dataset("moving-mnist", split="train", resolution=24, frames=8, limit=num).images


if __name__ == "__main__":
    main()
