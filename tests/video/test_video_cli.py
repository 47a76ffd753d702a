"""End to end: noisecraft train with video presets, then sample to GIF / MP4 / WebM / PNG; image-to-video,
text-to-video with guidance, the causal autoencoder and latent video diffusion; one-line errors."""

import pytest
import torch

from noisecraft.cli.main import main
from noisecraft.data.video import read_video

TINY = ["data.frames=4", "data.resolution=16", "data.limit=32", "train.batch_size=4", "sample.steps=2",
        "sample.num=2"]
TINY_UNET = ["network.base_channels=8", "network.norm_groups=4", "network.head_channels=8"]


def train(preset, out, *extra):
    assert main(["train", "--preset", preset, "--steps", "2", "--out", str(out), "--device", "cpu", *extra]) == 0


@pytest.fixture(scope="module")
def video_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("mm")
    assert main(["train", "--preset", "moving-mnist-tiny", "--minutes", "1", "--steps", "3", "--out", str(out)]) == 0
    return out


def test_train_then_sample_gif_mp4_webm_and_strip(video_run, tmp_path):
    from PIL import Image

    assert (video_run / "samples.png").is_file()  # train's preview: the frame strip writer
    for name in ("clip.gif", "clip.mp4", "clip.webm", "strip.png"):
        assert main(["sample", "--checkpoint", str(video_run), "--num", "2", "--steps", "2",
                     "--out", str(tmp_path / name)]) == 0
    with Image.open(tmp_path / "clip.gif") as gif:
        assert gif.n_frames == 4
    assert read_video(tmp_path / "clip.mp4").shape[0] == 4
    assert read_video(tmp_path / "clip.webm").shape[0] == 4


def test_sample_frames_on_a_unet_run(video_run, tmp_path):
    assert main(["sample", "--checkpoint", str(video_run), "--num", "1", "--steps", "2", "--frames", "7",
                 "--out", str(tmp_path / "long.gif")]) == 0
    from PIL import Image

    with Image.open(tmp_path / "long.gif") as gif:
        assert gif.n_frames == 7


def test_bad_output_and_frames_are_one_line_errors(video_run, tmp_path, capsys):
    assert main(["sample", "--checkpoint", str(video_run), "--out", str(tmp_path / "x.jpg")]) != 0
    assert "a video model writes .gif, .mp4, .png, .webm, a directory; got '.jpg'" in capsys.readouterr().err


def test_dit_frames_error_names_the_trained_count(tmp_path, capsys):
    train("moving-mnist-dit", tmp_path, *TINY, "network.hidden_size=32", "network.depth=1", "network.num_heads=2")
    assert main(["sample", "--checkpoint", str(tmp_path), "--frames", "8", "--out", str(tmp_path / "c.gif")]) != 0
    err = capsys.readouterr().err
    assert "samples exactly 4 frames, the count it was trained on" in err and "Traceback" not in err


def test_image_to_video_and_first_frame_errors(tmp_path, capsys):
    from noisecraft.data import load_dataset
    from noisecraft.pipelines import Request, generate, load
    from noisecraft.viz import save_png, to_uint8

    train("moving-mnist-i2v", tmp_path, *TINY, *TINY_UNET)
    clips = load_dataset("moving-mnist", split="test", frames=4, resolution=16, limit=1).images
    save_png(to_uint8(clips[:, :, 0])[0], tmp_path / "first.png")
    assert main(["sample", "--checkpoint", str(tmp_path), "--num", "2", "--steps", "2", "--guidance", "2",
                 "--first-frame", str(tmp_path / "first.png"), "--out", str(tmp_path / "c.gif")]) == 0
    save_png(to_uint8(torch.zeros(1, 1, 24, 24))[0], tmp_path / "big.png")
    assert main(["sample", "--checkpoint", str(tmp_path), "--first-frame", str(tmp_path / "big.png"),
                 "--out", str(tmp_path / "c.gif")]) != 0
    assert "trained on frames of 16x16 with 1 channel(s); the first frame given is 24x24" in capsys.readouterr().err
    run = load(tmp_path)  # the condition reaches the network as concatenated channels
    cond = run.conditions.request(Request(conditions={"first-frame": clips[0, :, 0]}, num=2), 2)[0]
    assert torch.equal(cond["concat"][0, :, 0], clips[0, :, 0])
    out = generate(run, Request(conditions={"first-frame": clips[0, :, 0]}, num=1, steps=2))
    assert out.images.shape == (1, 1, 4, 16, 16)


def test_inflated_run_keeps_the_image_weights(tmp_path):
    from noisecraft.checkpoint import load_checkpoint

    image, video = tmp_path / "image", tmp_path / "video"
    train("moving-mnist-image", image, *TINY, *TINY_UNET)
    train("moving-mnist-inflated", video, *TINY, *TINY_UNET, f"network.inflate_from={image}")
    a, b = load_checkpoint(image).ema, load_checkpoint(video).model  # inflation starts from the image run's EMA
    assert all(torch.equal(a[k], b[f"image.{k}"]) for k in a)  # frozen: bit-identical after training
    assert any(k.startswith("temporal_") and b[k].abs().sum() > 0 for k in b)  # the temporal layers trained


def test_text_to_video_with_guidance(tmp_path):
    train("moving-scenes-text", tmp_path, *TINY, *TINY_UNET)
    assert main(["sample", "--checkpoint", str(tmp_path), "--prompt", "a red circle moves left", "--guidance", "3",
                 "--sampler", "DPM++ 2M", "--num", "1", "--steps", "2", "--out", str(tmp_path / "c.mp4")]) == 0


def test_causal_autoencoder_and_latent_video_diffusion(tmp_path, capsys):
    from noisecraft.autoencoder import load_autoencoder
    from noisecraft.models.causal_vae import CausalVideoVAE

    ae, ldm = tmp_path / "ae", tmp_path / "ldm"
    assert main(["train-autoencoder", "--preset", "ae-video-tiny", "--out", str(ae)]) == 0
    vae = load_autoencoder(ae)
    assert isinstance(vae, CausalVideoVAE) and vae.scaling_factor > 0
    train("ldm-moving-mnist", ldm, f"data.autoencoder={ae}", "data.frames=5", "data.resolution=16", "data.limit=32",
          "train.batch_size=4", "sample.steps=2", "sample.num=2", *TINY_UNET)
    assert main(["sample", "--checkpoint", str(ldm), "--num", "1", "--steps", "2", "--frames", "9",
                 "--out", str(tmp_path / "c.gif")]) == 0
    assert main(["sample", "--checkpoint", str(ldm), "--frames", "8", "--out", str(tmp_path / "c.gif")]) != 0
    assert "codes clips of 1 + 4 k frames (1, 5, 9, 13, ...); got 8 frames" in capsys.readouterr().err
