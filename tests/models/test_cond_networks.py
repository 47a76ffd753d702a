"""The conditioning contract on both backbones (U-Net and DiT): every key changes the output with the right
shapes, masked cross-attention ignores padded tokens, a row without tokens is finite and equals no tokens,
wrong keys/shapes raise errors naming the key, batching helpers, and both backbones training through the same
Trainer and sampling through the same sampler."""

from dataclasses import replace

import pytest
import torch

from noisecraft import samplers
from noisecraft.build import build_denoiser
from noisecraft.errors import NoisecraftError
from noisecraft.models.conditioning import (
    COND_KEYS,
    CrossAttention,
    TokenRefinerConfig,
    concat_cond,
    expand_cond,
    slice_cond,
)
from noisecraft.models.dit import DIT_PRESETS, DiT
from noisecraft.models.unet import UNET_PRESETS, UNet
from noisecraft.presets import get_preset
from noisecraft.schedules.steps import get_sigmas
from noisecraft.training.trainer import Trainer

B, T, D_CTX, D_POOL, D_VEC, K = 3, 5, 6, 4, 2, 4
COND_FIELDS = dict(num_classes=K, context_dim=D_CTX, pooled_dim=D_POOL, vector_dim=D_VEC)


def _randomize(model, seed=0, std=0.1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model.double()


def _unet(**fields):
    return _randomize(UNet(replace(UNET_PRESETS["tiny"], **fields)))


def _dit(**fields):
    return _randomize(DiT(replace(DIT_PRESETS["tiny"], input_size=8, **fields)))


# the n-gram refiner (a conv over the tokens) with its pooled vector in the conditioning
NGRAM = dict(refiner=TokenRefinerConfig(kernel=3, width=8, pool=True))
# the same, added to the encoder's tokens through a zero-initialised projection
RESIDUAL = dict(refiner=TokenRefinerConfig(kernel=3, width=8, pool=True, residual=True))
# every contract test also runs with a token refiner in front of the cross-attention
BACKBONES = {"unet": _unet, "dit": _dit,
             "unet+ngram": lambda **f: _unet(**NGRAM, **f), "dit+ngram": lambda **f: _dit(**NGRAM, **f),
             "unet+residual": lambda **f: _unet(**RESIDUAL, **f), "dit+residual": lambda **f: _dit(**RESIDUAL, **f)}


def _cond(seed=0, batch=B, tokens=T):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, tokens, dtype=torch.bool)
    mask[0, 3:] = False
    return {"class_labels": torch.arange(batch) % (K + 1),
            "text_tokens": torch.randn(batch, tokens, D_CTX, generator=g, dtype=torch.float64),
            "text_mask": mask,
            "text_pooled": torch.randn(batch, D_POOL, generator=g, dtype=torch.float64),
            "vector": torch.randn(batch, D_VEC, generator=g, dtype=torch.float64)}


def _x(batch=B):
    g = torch.Generator().manual_seed(7)
    return torch.randn(batch, 1, 8, 8, generator=g, dtype=torch.float64), torch.rand(batch, generator=g) * 999


@pytest.mark.parametrize("kind", BACKBONES)
@pytest.mark.parametrize("key", ["class_labels", "text_tokens", "text_pooled", "vector"])
def test_each_key_changes_output_with_right_shape(kind, key):
    model = BACKBONES[kind](**COND_FIELDS)
    x, t = _x()
    cond = _cond()
    other = dict(cond)
    other[key] = _cond(seed=1)[key] if key != "class_labels" else (cond[key] + 1) % (K + 1)
    out, out2 = model(x, t, cond), model(x, t, other)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert (out - out2).abs().amax(dim=(1, 2, 3)).min() > 1e-8  # every sample depends on the key


@pytest.mark.parametrize("kind", BACKBONES)
def test_padded_tokens_do_not_change_the_output(kind):
    model = BACKBONES[kind](**COND_FIELDS)
    x, t = _x()
    cond = _cond()
    changed = dict(cond, text_tokens=cond["text_tokens"].clone())
    changed["text_tokens"][0, 3:] = 1e3  # masked positions of sample 0
    torch.testing.assert_close(model(x, t, changed), model(x, t, cond), rtol=0, atol=1e-12)
    # padding the sequence further with masked tokens changes nothing either
    longer = concat_cond([cond], [B])
    longer["text_tokens"] = torch.cat([cond["text_tokens"], torch.randn(B, 4, D_CTX, dtype=torch.float64)], 1)
    longer["text_mask"] = torch.cat([cond["text_mask"], torch.zeros(B, 4, dtype=torch.bool)], 1)
    torch.testing.assert_close(model(x, t, longer), model(x, t, cond), rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", BACKBONES)
def test_row_without_tokens_is_finite_and_equals_no_tokens(kind):
    model = BACKBONES[kind](context_dim=D_CTX)
    x, t = _x()
    tokens = torch.randn(B, T, D_CTX, dtype=torch.float64)
    mask = torch.zeros(B, T, dtype=torch.bool)
    out = model(x, t, {"text_tokens": tokens, "text_mask": mask})
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, model(x, t), rtol=0, atol=0)
    out.sum().backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_cross_attention_matches_naive_masked_softmax():
    torch.manual_seed(0)
    attn = CrossAttention(8, 5, heads=2).double()
    torch.nn.init.normal_(attn.proj.weight)
    h, ctx = torch.randn(2, 4, 8, dtype=torch.float64), torch.randn(2, 3, 5, dtype=torch.float64)
    mask = torch.tensor([[True, False, True], [False, False, False]])
    q = attn.q(h).view(2, 4, 2, 4)
    k, v = attn.kv(ctx).view(2, 3, 2, 2, 4).unbind(2)
    expected = torch.zeros(2, 4, 2, 4, dtype=torch.float64)
    for b in range(2):
        keys = mask[b].nonzero().flatten()
        for head in range(2):
            if len(keys):
                w = torch.softmax(q[b, :, head] @ k[b, keys, head].T / 2.0, dim=-1)  # sqrt(d) = 2
                expected[b, :, head] = w @ v[b, keys, head]
    expected = attn.proj(expected.reshape(2, 4, 8))
    torch.testing.assert_close(attn(h, ctx, mask), expected)


def test_unconditional_networks_reject_every_key():
    for build in BACKBONES.values():
        model = build()
        x, t = _x()
        for key in ("class_labels", "text_tokens", "text_pooled", "vector"):
            with pytest.raises(NoisecraftError, match=rf"cond\['{key}'\] given but the network is configured without"):
                model(x, t, {key: _cond()[key]})


@pytest.mark.parametrize("kind", BACKBONES)
@pytest.mark.parametrize("key,value,message", [
    ("class_labels", torch.zeros(2, dtype=torch.long), r"class_labels.*\(3,\).*\(2,\)"),
    ("class_labels", torch.zeros(3), r"class_labels.*integer"),
    ("class_labels", torch.tensor([0, 1, K + 1]), r"class_labels.*0\.\.3 \(or 4 = null label\)"),
    ("text_tokens", torch.zeros(3, 5, D_CTX + 1, dtype=torch.float64), r"text_tokens.*\(3, T, 6\).*\(3, 5, 7\)"),
    ("text_tokens", torch.zeros(3, 0, D_CTX, dtype=torch.float64), r"text_tokens.*T >= 1"),
    ("text_mask", torch.ones(3, 4, dtype=torch.bool), r"text_mask.*\(3, 5\).*\(3, 4\)"),
    ("text_mask", torch.ones(3, 5), r"text_mask.*bool"),
    ("text_pooled", torch.zeros(3, D_POOL + 1, dtype=torch.float64), r"text_pooled.*\(3, 4\).*\(3, 5\)"),
    ("vector", torch.zeros(3, dtype=torch.float64), r"vector.*\(3, 2\).*\(3,\)"),
    ("prompt", torch.zeros(3), r"unknown cond key 'prompt'; allowed: class_labels, text_tokens"),
])
def test_wrong_shapes_name_key_expected_and_given(kind, key, value, message):
    model = BACKBONES[kind](**COND_FIELDS)
    x, t = _x()
    with pytest.raises(NoisecraftError, match=message):
        model(x, t, dict(_cond(), **{key: value}))


def test_mask_without_tokens_and_non_dict_cond_are_errors():
    model = _unet(**COND_FIELDS)
    x, t = _x()
    with pytest.raises(NoisecraftError, match="text_mask.*without"):
        model(x, t, {"text_mask": torch.ones(B, T, dtype=torch.bool)})
    with pytest.raises(NoisecraftError, match="cond must be None or a dict"):
        model(x, t, [1, 2])


def test_concat_cond_pads_tokens_and_slices_back():
    a, b = _cond(0, batch=2, tokens=3), _cond(1, batch=1, tokens=5)
    del b["text_mask"]
    a["concat"], b["concat"] = torch.randn(2, 3, 4, 4), torch.randn(1, 3, 4, 4)  # spatial maps stack like vectors
    both = concat_cond([a, b], [2, 4])  # b has batch 1: broadcast to 4
    assert torch.equal(both["concat"], torch.cat([a["concat"], b["concat"].expand(4, 3, 4, 4)]))
    assert both["text_tokens"].shape == (6, 5, D_CTX) and both["text_mask"].shape == (6, 5)
    assert both["text_mask"][:2, 3:].sum() == 0 and both["text_mask"][2:].all()
    assert torch.equal(slice_cond(both, slice(0, 2))["text_tokens"][:, :3], a["text_tokens"])
    assert set(both) == set(COND_KEYS)
    assert concat_cond([None, None], [2, 3]) is None
    with pytest.raises(NoisecraftError, match="different keys"):
        concat_cond([{"class_labels": torch.zeros(2, dtype=torch.long)}, None], [2, 2])
    with pytest.raises(NoisecraftError, match="batch size 2 does not match 3"):
        expand_cond({"vector": torch.zeros(2, 1)}, 3)


@pytest.mark.parametrize("kind", BACKBONES)
def test_batched_call_equals_separate_calls_with_different_token_lengths(kind):
    """What classifier-free guidance relies on: one call on [cond; uncond] (tokens padded) = two calls."""
    model = BACKBONES[kind](**COND_FIELDS)
    x, t = _x(2)
    c1, c2 = _cond(0, batch=2, tokens=3), _cond(1, batch=2, tokens=6)
    both = concat_cond([c1, c2], [2, 2])
    out = model(torch.cat([x, x]), torch.cat([t, t]), both)
    torch.testing.assert_close(out, torch.cat([model(x, t, c1), model(x, t, c2)]), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("model_kind", ["unet", "dit"])
def test_both_backbones_train_and_sample_through_the_same_trainer_and_sampler(tmp_path, model_kind):
    """model='dit' or 'unet' in one RunConfig: the same Trainer trains it class-conditionally on mnist-tiny data,
    the checkpoint reloads, and samplers.get('heun') draws class-conditional samples from it."""
    cfg = get_preset("mnist-tiny")
    cfg = replace(cfg, model=model_kind, network=replace(cfg.network if model_kind == "unet" else DIT_PRESETS["tiny"],
                                                         num_classes=10),
                  data=replace(cfg.data, limit=64),
                  train=replace(cfg.train, steps=4, batch_size=8, checkpoint_every=1000, log_every=1))
    trainer = Trainer(cfg, tmp_path / model_kind, progress=False)
    first = trainer.loss(0).item()
    result = trainer.run()
    assert result["step"] == 4 and torch.isfinite(torch.tensor(result["loss"]))
    assert trainer.config.network.in_channels == 1 and trainer.net.__class__ is (DiT if model_kind == "dit" else UNet)
    assert trainer.loss(0).item() != first  # the weights moved
    from noisecraft.pipelines import load as load_denoiser

    loaded = load_denoiser(tmp_path / model_kind)
    assert loaded.data_shape == (1, 28, 28)
    denoiser = build_denoiser(trainer.config, trainer.ema).eval()
    sigmas = get_sigmas(denoiser.schedule, 4, "karras")
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * sigmas[0]
    with torch.no_grad():
        out = samplers.get("heun")(denoiser, x, sigmas, cond={"class_labels": torch.tensor([3, 10])})
        ref = samplers.get("heun")(loaded.denoiser, x, sigmas, cond={"class_labels": torch.tensor([3, 10])})
    assert out.shape == x.shape and torch.isfinite(out).all()
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("refiner", ["ngram", "residual"])
@pytest.mark.parametrize("kind", ["unet", "dit"])
def test_token_refiner_makes_word_order_matter(kind, refiner):
    """Cross-attention alone is a set operation: permuting the tokens leaves the output unchanged, so a frozen
    encoder's near bag-of-words tokens cannot bind "red" to "circle". The refiner's position embedding and
    n-gram block make the output depend on the order (and so on which word stands next to which)."""
    x, t = _x()
    cond = {"text_tokens": _cond()["text_tokens"]}
    shuffled = {"text_tokens": cond["text_tokens"][:, [3, 0, 4, 1, 2]]}
    plain = BACKBONES[kind](context_dim=D_CTX)
    torch.testing.assert_close(plain(x, t, shuffled), plain(x, t, cond), rtol=1e-12, atol=1e-12)
    refined = BACKBONES[f"{kind}+{refiner}"](context_dim=D_CTX)
    assert (refined(x, t, shuffled) - refined(x, t, cond)).abs().amax(dim=(1, 2, 3)).min() > 1e-8


@pytest.mark.parametrize("kind", ["unet", "dit"])
def test_residual_refiner_starts_as_the_network_without_one(kind):
    """refiner.residual: ctx + W_res(refined) and the pooled projection start at zero, so a fresh
    network's output is exactly that of the same weights without a refiner; the zero layers still get a
    gradient (they are not dead)."""
    build = UNet if kind == "unet" else DiT
    base = UNET_PRESETS["tiny"] if kind == "unet" else replace(DIT_PRESETS["tiny"], input_size=8)
    torch.manual_seed(0)
    model = build(replace(base, context_dim=D_CTX, **RESIDUAL)).double()
    x, t = _x()
    cond = {"text_tokens": _cond()["text_tokens"], "text_mask": _cond()["text_mask"]}
    with torch.no_grad():
        for p in model.parameters():  # the networks' own zero layers (outputs) are made non-zero
            if p.abs().max() == 0 and all(p is not q for m in model.refiner.zeroed() for q in m.parameters()):
                p.normal_(std=0.1)
    out = model(x, t, cond)
    refiner, model.refiner = model.refiner, None
    torch.testing.assert_close(out, model(x, t, cond), rtol=0, atol=0)
    model.refiner = refiner
    model(x, t, cond).square().sum().backward()
    assert all(m.weight.grad.abs().max() > 0 for m in refiner.zeroed())


def test_ngram_refiner_reads_exactly_its_neighbours_and_pools_word_order():
    """Kernel k: a token's refined state depends on the tokens within (k - 1) / 2 places and on no other
    (gradient support); the pooled vector of a swapped caption differs, while the mean of the unrefined tokens
    (the frozen encoder's pooled vector) is the same for every order."""
    from noisecraft.models.conditioning import TokenRefiner

    torch.manual_seed(0)
    refiner = TokenRefiner(D_CTX, TokenRefinerConfig(kernel=3, width=8, max_tokens=12, pool=True), pool_dim=5).double()
    torch.nn.init.normal_(refiner.pool_proj.weight)  # (zero at init)
    tokens = torch.randn(1, 9, D_CTX, dtype=torch.float64, requires_grad=True)
    (refiner(tokens, None)[0, 4] * torch.randn(8, dtype=torch.float64)).sum().backward()  # (a sum of LN is constant)
    touched = tokens.grad[0].abs().sum(-1) > 0
    assert touched.tolist() == [i in (3, 4, 5) for i in range(9)]
    swapped = tokens.detach()[:, [0, 1, 5, 3, 4, 2, 6, 7, 8]]  # exchange two words
    mask = torch.ones(1, 9, dtype=torch.bool)
    torch.testing.assert_close(swapped.mean(1), tokens.detach().mean(1))
    pooled = refiner.pooled(refiner(tokens.detach(), mask), mask)
    assert pooled.shape == (1, 5)
    assert (refiner.pooled(refiner(swapped, mask), mask) - pooled).abs().max() > 1e-6


@pytest.mark.parametrize("kind", ["unet", "dit"])
def test_token_refiner_errors(kind):
    from noisecraft.errors import ConfigError

    with pytest.raises(ConfigError, match="refiner.kernel: must be 0 .off. or an odd number >= 1, got 4"):
        TokenRefinerConfig(kernel=4)
    with pytest.raises(ConfigError, match="refiner.kernel: must be .*got -1"):
        TokenRefinerConfig(kernel=-1)
    with pytest.raises(ConfigError, match="refiner.pool: pools the refined tokens: set refiner.kernel too"):
        TokenRefinerConfig(pool=True)
    with pytest.raises(ConfigError, match="refiner.residual: adds the refined tokens to the encoder's: "
                                          "set refiner.kernel too"):
        TokenRefinerConfig(residual=True)
    with pytest.raises(ConfigError, match="refiner.pool: expected true or false, got 1"):
        TokenRefinerConfig(kernel=3, pool=1)
    with pytest.raises(ConfigError, match="refiner.width: must be >= 1, got 0"):
        TokenRefinerConfig(kernel=3, width=0)
    with pytest.raises(ConfigError, match=r"(UNet|DiT)Config.refiner: expected a TokenRefinerConfig, got dict"):
        BACKBONES[kind](context_dim=D_CTX, refiner={"kernel": 3})
    model = BACKBONES[kind](context_dim=D_CTX, refiner=TokenRefinerConfig(kernel=3, width=8, max_tokens=4))
    x, t = _x()
    with pytest.raises(NoisecraftError, match="at most 4 tokens.*got 5"):
        model(x, t, {"text_tokens": _cond()["text_tokens"]})
