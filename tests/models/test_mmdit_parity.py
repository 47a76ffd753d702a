"""MMDiT parity with diffusers (tiny configs built locally, no hub): one SD3 joint block (ordinary and
context-pre-only), the whole SD3Transformer2DModel with cropped position embedding and QK RMSNorm, and the FLUX
double-stream block with 2-D RoPE; weights through `noisecraft.interop.diffusers_sd3`. float32, 1e-5."""

import pytest
import torch

from noisecraft.interop.diffusers_sd3 import from_diffusers_sd3, joint_block_from_diffusers, mmdit_config_from_sd3
from noisecraft.models.mmdit import MMDiT, MMDiTBlock, MMDiTConfig, rope_frequencies

diffusers = pytest.importorskip("diffusers")
TOL = dict(rtol=1e-5, atol=1e-5)


def _randomize(module: torch.nn.Module, seed: int = 0, std: float = 0.2) -> torch.nn.Module:
    """Random weights; norm scales around 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std + (1.0 if "norm" in name and p.ndim == 1 else 0.0))
    return module.eval()


def _tokens(*shape, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("pre_only", [False, True])
def test_joint_block_equals_sd3_joint_transformer_block(pre_only):
    from diffusers.models.attention import JointTransformerBlock

    dim, heads = 16, 2
    peer = _randomize(JointTransformerBlock(dim, heads, dim // heads, context_pre_only=pre_only, qk_norm="rms_norm"))
    ours = MMDiTBlock(MMDiTConfig(hidden_size=dim, num_heads=heads, context_dim=7), context_pre_only=pre_only).eval()
    ours.load_state_dict(joint_block_from_diffusers(peer.state_dict()), strict=True)
    x, ctx, c = _tokens(2, 9, dim), _tokens(2, 5, dim, seed=2), _tokens(2, dim, seed=3)
    with torch.no_grad():
        ctx_ref, x_ref = peer(x, ctx, c)
        x_out, ctx_out = ours(x, ctx, c)
    torch.testing.assert_close(x_out, x_ref, **TOL)
    if pre_only:
        assert ctx_out is None and ctx_ref is None
    else:
        torch.testing.assert_close(ctx_out, ctx_ref, **TOL)


def _tiny_sd3(max_size: int, qk_norm: str | None = "rms_norm"):
    return diffusers.SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, num_layers=3, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=12, caption_projection_dim=16, pooled_projection_dim=10, out_channels=4,
        pos_embed_max_size=max_size, qk_norm=qk_norm)


@pytest.mark.parametrize("max_size, qk_norm", [(6, "rms_norm"), (None, "rms_norm"), (6, None)])
def test_whole_model_equals_sd3_transformer(max_size, qk_norm):
    """SD3.5-style (QK RMSNorm) with and without a cropped position table, and SD3.0 (no QK-norm)."""
    peer = _randomize(_tiny_sd3(max_size, qk_norm))
    cfg = mmdit_config_from_sd3(dict(peer.config))
    assert cfg.pos_embed == ("learned" if max_size else "sincos") and cfg.qk_norm == (qk_norm is not None)
    ours = MMDiT(cfg).eval()
    ours.load_state_dict(from_diffusers_sd3(peer.state_dict()), strict=True)
    x, text, pooled = _tokens(2, 4, 8, 8), _tokens(2, 6, 12, seed=2), _tokens(2, 10, seed=3)
    t = torch.tensor([0.0, 731.5])
    with torch.no_grad():
        ref = peer(x, encoder_hidden_states=text, pooled_projections=pooled, timestep=t).sample
        out = ours(x, t, {"text_tokens": text, "text_pooled": pooled})
    torch.testing.assert_close(out, ref, **TOL)
    if max_size:  # SD3's cropping: a smaller input reads the centre of the table
        with torch.no_grad():
            ref = peer(x[..., :6, :4], encoder_hidden_states=text, pooled_projections=pooled, timestep=t).sample
            out = ours(x[..., :6, :4], t, {"text_tokens": text, "text_pooled": pooled})
        torch.testing.assert_close(out, ref, **TOL)


def test_fixed_sincos_table_equals_sd3_saved_table():
    """Our fixed sin-cos table equals the one SD3 saves (pos_embed_max_size > 0: scaled coordinates)."""
    peer = _tiny_sd3(6)
    cfg = mmdit_config_from_sd3(dict(peer.config))
    fixed = MMDiT(MMDiTConfig(**{**cfg.__dict__, "pos_embed": "sincos"}))
    torch.testing.assert_close(fixed.pos_embed, peer.pos_embed.pos_embed, rtol=0, atol=1e-6)


@pytest.mark.parametrize("axes", [(4, 6, 6), (8, 8)])
def test_flux_double_stream_block_with_rope(axes):
    """FLUX's (index, row, col) axes and the 2-axis (row, col) form; FLUX's rotary table from its ids equals
    ours from the same positions (reordered: FLUX puts the text first)."""
    from diffusers.models.transformers.transformer_flux import FluxPosEmbed, FluxTransformerBlock

    dim, heads = 32, 2
    peer = _randomize(FluxTransformerBlock(dim, heads, dim // heads))
    ours = MMDiTBlock(MMDiTConfig(hidden_size=dim, num_heads=heads, context_dim=5, rope_axes_dim=axes)).eval()
    ours.load_state_dict(joint_block_from_diffusers(peer.state_dict()), strict=True)
    gh, gw, T = 3, 4, 5
    rows, cols = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    img_ids = torch.stack([torch.zeros(gh * gw, dtype=torch.long), rows.flatten(), cols.flatten()], dim=1)
    img_ids = img_ids[:, 3 - len(axes):]
    txt_ids = torch.zeros(T, len(axes), dtype=torch.long)
    theirs = FluxPosEmbed(10000, list(axes))(torch.cat([txt_ids, img_ids]).float())  # FLUX order: [text, image]
    mine = rope_frequencies(torch.cat([img_ids, txt_ids]), axes)  # ours: [image, text]
    torch.testing.assert_close(mine[0], torch.cat([theirs[0][T:], theirs[0][:T]]), rtol=0, atol=1e-6)
    torch.testing.assert_close(mine[1], torch.cat([theirs[1][T:], theirs[1][:T]]), rtol=0, atol=1e-6)
    model = MMDiT(MMDiTConfig(hidden_size=dim, num_heads=heads, context_dim=5, rope_axes_dim=axes, pos_embed="none"))
    for got, want in zip(model._rope(gh, gw, T, "cpu"), mine):  # the positions the whole model gives its tokens
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    x, ctx, c = _tokens(2, gh * gw, dim), _tokens(2, T, dim, seed=2), _tokens(2, dim, seed=3)
    with torch.no_grad():
        ctx_ref, x_ref = peer(x, ctx, c, image_rotary_emb=theirs)
        x_out, ctx_out = ours(x, ctx, c, rope=mine)
    torch.testing.assert_close(x_out, x_ref, **TOL)
    torch.testing.assert_close(ctx_out, ctx_ref, **TOL)


def test_load_sd3_transformer_folder(tmp_path):
    from noisecraft.errors import CheckpointError
    from noisecraft.interop.diffusers_sd3 import load_sd3_transformer

    peer = _randomize(_tiny_sd3(6))
    peer.save_pretrained(tmp_path / "transformer", safe_serialization=True)
    ours = load_sd3_transformer(tmp_path / "transformer").eval()
    x, text, pooled = _tokens(1, 4, 8, 8), _tokens(1, 3, 12, seed=2), _tokens(1, 10, seed=3)
    t = torch.tensor([500.0])
    with torch.no_grad():
        ref = peer(x, encoder_hidden_states=text, pooled_projections=pooled, timestep=t).sample
        torch.testing.assert_close(ours(x, t, {"text_tokens": text, "text_pooled": pooled}), ref, **TOL)
    (tmp_path / "transformer" / "config.json").write_text('{"_class_name": "UNet2DModel"}')
    with pytest.raises(CheckpointError, match="expected an SD3Transformer2DModel folder, got 'UNet2DModel'"):
        load_sd3_transformer(tmp_path / "transformer")
    with pytest.raises(CheckpointError, match="dual_attention_layers"):
        mmdit_config_from_sd3({**dict(peer.config), "dual_attention_layers": [0]})
