"""diffusers AutoencoderKL parity in both directions, and load_autoencoder's errors on foreign files."""

import json

import pytest
import torch

from noisecraft.autoencoder import load_autoencoder
from noisecraft.autoencoder.interop import WEIGHTS_FILE, save_diffusers
from noisecraft.errors import CheckpointError
from noisecraft.models.autoencoder import Autoencoder, AutoencoderConfig

diffusers = pytest.importorskip("diffusers")


def perturb(module, seed=0, scale=0.1):
    """Random-init GroupNorm/attention layers are near identity; shake every parameter so all of them matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return module


@pytest.fixture
def images(gen):
    return torch.rand(2, 3, 32, 32, generator=gen) * 2 - 1


def diffusers_vae(**kw):
    torch.manual_seed(0)
    args = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
                up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 16, 16), layers_per_block=1,
                latent_channels=4, norm_num_groups=4, sample_size=32, scaling_factor=0.5)
    args.update(kw)
    return perturb(diffusers.AutoencoderKL(**args)).eval()


@pytest.mark.parametrize("kw", [{}, {"layers_per_block": 2, "mid_block_add_attention": False},
                                {"use_quant_conv": False, "use_post_quant_conv": False, "shift_factor": 0.1}])
def test_diffusers_folder_loads_and_matches(tmp_path, images, kw):
    ref = diffusers_vae(**kw)
    ref.save_pretrained(tmp_path / "vae")
    ae = load_autoencoder(tmp_path / "vae")
    with torch.no_grad():
        dist = ref.encode(images).latent_dist
        z = ae.encode(images)
        torch.testing.assert_close(z, dist.mean, rtol=0, atol=1e-5)
        torch.testing.assert_close(ae.posterior(images).logvar, dist.logvar, rtol=0, atol=1e-5)
        torch.testing.assert_close(ae.decode(z), ref.decode(z).sample, rtol=0, atol=1e-5)
    assert ae.scaling_factor == 0.5 and ae.shift_factor == kw.get("shift_factor", 0.0)


def test_our_autoencoder_saved_in_diffusers_format_matches(tmp_path, images):
    torch.manual_seed(1)
    ae = perturb(Autoencoder(AutoencoderConfig(block_channels=(8, 16, 16, 16), latent_channels=3, norm_groups=4),
                             scaling_factor=0.7)).eval()
    save_diffusers(ae, tmp_path / "out", sample_size=32)
    ref = diffusers.AutoencoderKL.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        z = ae.encode(images)
        torch.testing.assert_close(ref.encode(images).latent_dist.mean, z, rtol=0, atol=1e-5)
        torch.testing.assert_close(ref.decode(z).sample, ae.decode(z), rtol=0, atol=1e-5)
    assert ref.config.scaling_factor == 0.7
    back = load_autoencoder(tmp_path / "out")  # and back again: identical weights
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), ae.state_dict().values()))


def test_deterministic_autoencoder_exports_as_kl_with_negligible_variance(tmp_path, images):
    torch.manual_seed(2)
    ae = perturb(Autoencoder(AutoencoderConfig(block_channels=(8, 16), latent_channels=2, norm_groups=4,
                                               kind="deterministic"))).eval()
    save_diffusers(ae, tmp_path / "det")
    ref = diffusers.AutoencoderKL.from_pretrained(tmp_path / "det").eval()
    with torch.no_grad():
        dist = ref.encode(images).latent_dist
        torch.testing.assert_close(dist.mean, ae.encode(images), rtol=0, atol=1e-5)
        assert float(dist.std.max()) < 1e-6
        z = ae.encode(images)
        torch.testing.assert_close(ref.decode(z).sample, ae.decode(z), rtol=0, atol=1e-5)


def test_deprecated_attention_names_and_conv_shaped_weights_load(tmp_path, images):
    from safetensors.torch import load_file, save_file

    ref = diffusers_vae()
    ref.save_pretrained(tmp_path / "vae")
    state = load_file(str(tmp_path / "vae" / WEIGHTS_FILE))
    old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    renamed = {}
    for k, v in state.items():
        for new, dep in old.items():
            if f"attentions.0.{new}." in k:
                k = k.replace(f"attentions.0.{new}.", f"attentions.0.{dep}.")
                v = v[:, :, None, None] if v.ndim == 2 else v  # LDM's 1x1 convolutions
        renamed[k] = v
    save_file(renamed, str(tmp_path / "vae" / WEIGHTS_FILE))
    ae = load_autoencoder(tmp_path / "vae")
    with torch.no_grad():
        torch.testing.assert_close(ae.encode(images), ref.encode(images).latent_dist.mean, rtol=0, atol=1e-5)


def test_foreign_checkpoints_are_refused_clearly(tmp_path):
    from noisecraft.checkpoint import save_checkpoint

    run = tmp_path / "diffusion_run"
    run.mkdir()
    lin = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(lin.parameters())
    ema = {k: v.clone() for k, v in lin.state_dict().items()}
    save_checkpoint(run, config={}, state={"step": 0}, model=lin.state_dict(), ema=ema,
                    optimizer=opt.state_dict())
    with pytest.raises(CheckpointError, match="diffusion model checkpoint, not an autoencoder"):
        load_autoencoder(run)
    unet = tmp_path / "unet"
    unet.mkdir()
    (unet / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(CheckpointError, match="'UNet2DModel', not an 'AutoencoderKL'"):
        load_autoencoder(unet)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    diffusers_vae().save_pretrained(pickled)
    (pickled / WEIGHTS_FILE).rename(pickled / "diffusion_pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pickle"):
        load_autoencoder(pickled)
    with pytest.raises(CheckpointError, match="not found"):
        load_autoencoder(tmp_path / "nothing")
    # a diffusers folder whose weights belong to another architecture
    wrong = tmp_path / "wrong"
    diffusers_vae().save_pretrained(wrong)
    cfg = json.loads((wrong / "config.json").read_text())
    (wrong / "config.json").write_text(json.dumps({**cfg, "latent_channels": 8}))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_autoencoder(wrong)
