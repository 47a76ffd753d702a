"""MMDiT (Esser et al. 2024): adaLN-Zero output at init, separate weights per modality, the joint attention's
exact truths (padded text tokens change nothing, text order does not matter without text positions, text
reaches the image only through attention), RoPE's relative-position property, registry and config plumbing,
and bad input with errors naming the limits."""

from dataclasses import replace

import pytest
import torch

from noisecraft.build import adapt_config
from noisecraft.errors import ConfigError, NoisecraftError
from noisecraft.models import build_model
from noisecraft.models.conditioning import concat_cond
from noisecraft.models.mmdit import MMDIT_PRESETS, MMDiT, MMDiTConfig, apply_rope, rope_frequencies
from noisecraft.presets import PRESETS
from noisecraft.runconfig import RunConfig

TINY = replace(MMDIT_PRESETS["tiny"], input_size=8, context_dim=6, pooled_dim=4)
ROPE = replace(TINY, pos_embed="none", rope_axes_dim=(6, 10))


def _randomize(model: torch.nn.Module, seed: int = 0, std: float = 0.2) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model.double().eval()


def _inputs(cfg: MMDiTConfig, batch: int = 2, tokens: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g, dtype=torch.float64)
    cond = {"text_tokens": torch.randn(batch, tokens, cfg.context_dim, generator=g, dtype=torch.float64),
            "text_pooled": torch.randn(batch, cfg.pooled_dim, generator=g, dtype=torch.float64)}
    return x, torch.rand(batch, generator=g, dtype=torch.float64) * 1000, cond


@pytest.mark.parametrize("cfg", [TINY, ROPE, replace(TINY, pos_embed="learned", num_classes=3, vector_dim=2)])
def test_output_exactly_zero_at_init(cfg):
    model = MMDiT(cfg)
    x, t, cond = _inputs(cfg)
    out = model(x.float(), t.float(), {k: v.float() for k, v in cond.items()})
    assert torch.equal(out, torch.zeros_like(out))


def test_every_parameter_gets_a_gradient_within_a_few_steps():
    """adaLN-Zero starts every modulation and the output layer at 0: the output layer moves first, then the
    modulations, then everything before them; within a few steps every weight (both streams, the
    context-pre-only text stream's k/v, the embedders) receives a gradient."""
    torch.manual_seed(0)
    model = MMDiT(TINY)
    x, t, cond = _inputs(TINY)
    x, t, cond = x.float(), t.float(), {k: v.float() for k, v in cond.items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(6):
        opt.zero_grad()
        (model(x, t, cond) - x).pow(2).mean().backward()
        opt.step()
    dead = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().max() == 0]
    assert dead == ["blocks.1.ctx.norm_q.weight"]  # the last block's text queries are unused (as SD3's)
    q_rows = model.blocks[1].ctx.qkv.weight.grad[:TINY.hidden_size]
    assert torch.equal(q_rows, torch.zeros_like(q_rows))


def test_padded_text_tokens_change_nothing_and_batching_equals_separate_calls():
    """What guidance relies on: padding (mask False) is nobody's key, so [cond; uncond] in one call with
    tokens padded to a common length equals two calls."""
    model = _randomize(MMDiT(TINY))
    x, t, c1 = _inputs(TINY, tokens=3)
    _, _, c2 = _inputs(TINY, tokens=6, seed=1)
    both = concat_cond([c1, c2], [2, 2])
    assert not both["text_mask"][:2].all()  # c1 was padded
    out = model(torch.cat([x, x]), torch.cat([t, t]), both)
    torch.testing.assert_close(out, torch.cat([model(x, t, c1), model(x, t, c2)]), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cfg", [TINY, ROPE])
def test_text_order_does_not_matter_and_the_text_changes_the_image(cfg):
    """Text tokens carry no position (SD3 gives them none; RoPE leaves them at position 0), so a joint
    attention over a permuted text sequence gives the same image; other text gives another image."""
    model = _randomize(MMDiT(cfg))
    x, t, cond = _inputs(cfg)
    shuffled = {**cond, "text_tokens": cond["text_tokens"][:, [3, 0, 4, 1, 2]]}
    torch.testing.assert_close(model(x, t, shuffled), model(x, t, cond), rtol=1e-10, atol=1e-12)
    other = {**cond, "text_tokens": cond["text_tokens"].flip(0)}
    assert (model(x, t, other) - model(x, t, cond)).abs().amax(dim=(1, 2, 3)).min() > 1e-6


def test_class_vector_and_concat_conditions():
    """The other condition providers' keys: a class embedding and cond["vector"] join c, cond["concat"] is
    patch-embedded by a bias-free conv (a zero map adds exactly nothing), each changes the output."""
    cfg = replace(TINY, num_classes=3, vector_dim=2, concat_channels=2)
    model = _randomize(MMDiT(cfg))
    x, t, cond = _inputs(cfg)
    base = model(x, t, cond)
    torch.testing.assert_close(model(x, t, {**cond, "concat": torch.zeros(2, 2, 8, 8, dtype=torch.float64)}), base,
                               rtol=0, atol=0)
    torch.testing.assert_close(model(x, t, {**cond, "class_labels": torch.tensor([3, 3])}), base)  # null label
    for extra in ({"class_labels": torch.tensor([0, 2])}, {"vector": torch.ones(2, 2, dtype=torch.float64)},
                  {"concat": torch.ones(2, 2, 8, 8, dtype=torch.float64)}):
        assert (model(x, t, {**cond, **extra}) - base).abs().amax(dim=(1, 2, 3)).min() > 1e-6, extra


def test_separate_weights_per_modality():
    block = MMDiT(TINY).blocks[0]
    ours = {n for n, _ in block.x.named_parameters()}
    assert ours == {n for n, _ in block.ctx.named_parameters()}  # the same layers ...
    assert all(p.data_ptr() != q.data_ptr() for p, q in zip(block.x.parameters(), block.ctx.parameters()))
    last = MMDiT(TINY).blocks[-1]
    assert last.context_pre_only and last.ctx.proj is None and last.ctx.mlp is None  # SD3's last block


def test_rope_scores_depend_only_on_relative_position():
    """<R(p) q, R(p') k> = <R(p + s) q, R(p' + s) k> for a shift s on every axis (Su et al. 2021)."""
    axes = (4, 6, 6)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 2, 16, generator=g), torch.randn(1, 1, 2, 16, generator=g)
    pos = torch.tensor([[0, 2, 5], [0, 7, 1]])
    shift = torch.tensor([[3, -4, 9]])

    def score(p):
        cos, sin = rope_frequencies(p, axes)
        rq, rk = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        return (rq[..., 0, :] * rk[..., 1, :]).sum()

    torch.testing.assert_close(score(pos + shift), score(pos), rtol=1e-5, atol=1e-5)
    cos, sin = rope_frequencies(pos, axes)
    torch.testing.assert_close(apply_rope(q, cos, sin).norm(dim=-1), q.norm(dim=-1))  # a rotation


def test_rope_without_position_table_takes_any_grid():
    model = _randomize(MMDiT(ROPE))
    _, t, cond = _inputs(ROPE)
    x = torch.randn(2, 1, 12, 6, dtype=torch.float64)
    assert model(x, t, cond).shape == x.shape


def test_registry_build_and_run_config():
    assert isinstance(build_model("mmdit", {"hidden_size": 32, "num_heads": 2, "depth": 1}), MMDiT)
    cfg = RunConfig(model="mmdit")
    assert isinstance(cfg.network, MMDiTConfig)
    adapted = adapt_config(replace(PRESETS["scenes-text-mmdit"], network=MMDIT_PRESETS["tiny"]), (3, 32, 32))
    assert adapted.network.input_size == 32 and adapted.network.in_channels == 3
    assert adapted.network.context_dim == 384 and adapted.network.pooled_dim == 384  # MiniLM


def test_conditions_a_model_lacks_name_the_models_that_have_them():
    cfg = replace(PRESETS["scenes-text-mmdit"], model="mlp", network=None)
    with pytest.raises(ConfigError, match=r"which model 'mlp' does not have; models with them: unet, dit, mmdit"):
        adapt_config(cfg, (2,))


# ------------------------------------------------------------------------------------------ bad input
def test_image_size_not_divisible_by_the_patch_size():
    with pytest.raises(ConfigError, match=r"MMDiTConfig.patch_size: 3 must divide input_size 8 \(allowed image "
                                          r"sizes: multiples of 3\)"):
        MMDiTConfig(input_size=8, patch_size=3)
    with pytest.raises(ConfigError, match=r"image size 30 is not divisible by the MMDiT patch size 4"):
        MMDIT_PRESETS["scenes"].for_data((3, 30, 30))
    model = MMDiT(ROPE)
    with pytest.raises(NoisecraftError, match=r"image size 9x8 is not divisible by the patch size 2; allowed: sides "
                                              r"that are multiples of 2"):
        model(torch.zeros(1, 1, 9, 8), torch.zeros(1))
    with pytest.raises(NoisecraftError, match=r"image size 16x16 is outside the position embedding; allowed: 8x8"):
        MMDiT(TINY)(torch.zeros(1, 1, 16, 16), torch.zeros(1))
    with pytest.raises(NoisecraftError, match=r"allowed: sides up to 12 \(pos_embed_max_size 6 patches\)"):
        MMDiT(replace(TINY, pos_embed_max_size=6))(torch.zeros(1, 1, 14, 8), torch.zeros(1))


def test_more_text_tokens_than_the_maximum():
    cfg = replace(TINY, max_text_tokens=4)
    x, t, cond = _inputs(cfg, tokens=5)
    with pytest.raises(NoisecraftError, match=r"5 text tokens given, but the model takes at most 4 "
                                              r"\(MMDiTConfig.max_text_tokens\)"):
        _randomize(MMDiT(cfg))(x, t, cond)


def test_a_condition_the_model_was_not_trained_with():
    model = MMDiT(TINY)
    x, t, cond = _inputs(TINY)
    with pytest.raises(NoisecraftError, match=r"cond\['class_labels'\] given but the network is configured "
                                              r"without it \(num_classes is 0\); it accepts: text_tokens, "
                                              r"text_mask, text_pooled"):
        model(x.float(), t.float(), {"class_labels": torch.zeros(2, dtype=torch.long)})
    with pytest.raises(NoisecraftError, match=r"cond\['text_tokens'\] given but the network is configured without"):
        MMDiT(MMDIT_PRESETS["tiny"])(torch.zeros(2, 1, 28, 28), t.float(), {"text_tokens": torch.zeros(2, 3, 6)})
    with pytest.raises(NoisecraftError, match=r"text_tokens'\]: expected a float tensor of shape \(2, T, 6\)"):
        model(x.float(), t.float(), {"text_tokens": torch.zeros(2, 3, 7)})


@pytest.mark.parametrize("field, value, message", [
    ("rope_axes_dim", (4, 4), r"must sum to the head width hidden_size / num_heads = 16, got 8"),
    ("rope_axes_dim", (3, 13), r"expected even integers >= 2"),
    ("rope_axes_dim", (4, 4, 4, 4), r"needs 2 axes \(row, col\) or 3"),
    ("pos_embed", "none", r"'none' leaves the tokens without positions: set rope_axes_dim too"),
    ("pos_embed", "rope", r"unknown position embedding 'rope'; allowed: sincos, learned, none"),
    ("pos_embed_max_size", 3, r"must be 0 or >= the patch grid input_size / patch_size = 4, got 3"),
    ("num_heads", 3, r"3 must divide hidden_size 32"),
    ("max_text_tokens", 0, r"MMDiTConfig.max_text_tokens: must be >= 1"),
])
def test_config_validation_names_the_field(field, value, message):
    with pytest.raises(ConfigError, match=message):
        replace(TINY, **{field: value})


def test_concat_equals_the_patch_embedding_of_x_and_c_concatenated():
    """cond["concat"] (inpaint, low-res, layout maps): x_embedder(x) + concat_in(c) is the patch embedding of
    [x, c] with weight [W_x, W_c], so the whole model equals one whose input is widened by the map's channels."""
    cfg = replace(TINY, concat_channels=3)
    net = _randomize(MMDiT(cfg))
    wide = MMDiT(replace(TINY, in_channels=4, out_channels=1)).double().eval()
    state = dict(net.state_dict())
    state["x_embedder.weight"] = torch.cat([state["x_embedder.weight"], state.pop("concat_in.weight")], dim=1)
    wide.load_state_dict(state)
    x, t, cond = _inputs(cfg)
    c = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(net(x, t, {**cond, "concat": c}), wide(torch.cat([x, c], 1), t, cond),
                               rtol=0, atol=1e-12)


def test_run_configs_a_model_cannot_take():
    """Found when the trainer adapts the config to the data, before any step: an image side the patch does not
    divide, a non-square image, prompts longer than the network's text-token limit."""
    cfg = PRESETS["scenes-text-mmdit"]
    with pytest.raises(ConfigError, match=r"the data's image size 30 is not divisible by the MMDiT patch size 4 "
                                          r"\(network.patch_size\); allowed: patch sizes that divide 30"):
        adapt_config(cfg, (3, 30, 30))
    with pytest.raises(ConfigError, match=r"needs square images \(C, S, S\); the data has shape \(3, 32, 16\)"):
        adapt_config(cfg, (3, 32, 16))
    long = replace(cfg, text=replace(cfg.text, max_tokens=100))
    with pytest.raises(ConfigError, match=r"text.max_tokens is 100, but model 'mmdit' takes at most 77 text tokens "
                                          r"\(network.max_text_tokens\); allowed: text.max_tokens <= 77"):
        adapt_config(long, (3, 32, 32))
    assert adapt_config(replace(long, network=replace(cfg.network, max_text_tokens=100)), (3, 32, 32))
