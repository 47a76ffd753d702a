"""Phrase-structured text conditioning (noisecraft.text.phrases): the chunker on the scene grammar and on
free text, the exact layout of the phrase slots, batch independence, the cache identity, and config errors."""

import itertools

import pytest
import torch

from noisecraft.data.scenes import COLOURS, RELATIONS, SHAPES, SIZES, SceneObject, SceneSpec
from noisecraft.errors import ConfigError
from noisecraft.text import TextConfig
from noisecraft.text.encoders import TextEncoder, masked_mean
from noisecraft.text.phrases import PhraseEncoder, limit_phrases, split_phrases


class WordEncoder(TextEncoder):
    """A deterministic frozen stand-in: one token per word, a token = a fixed random vector of the word plus
    its position (so a word's state depends on where it stands), pooled = sum of the tokens."""

    token_dim = pooled_dim = 8
    max_tokens = 32
    identity = "words:v1"

    def _vec(self, word: str, pos: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(sum(map(ord, word)) * 7919 + pos)
        return torch.randn(self.token_dim, generator=g, dtype=torch.float64).float()

    def _encode(self, prompts):
        words = [p.split() for p in prompts]
        T = max(1, max(len(w) for w in words))
        tokens, mask = torch.zeros(len(prompts), T, self.token_dim), torch.zeros(len(prompts), T, dtype=torch.bool)
        for b, ws in enumerate(words):
            for i, w in enumerate(ws):
                tokens[b, i], mask[b, i] = self._vec(w, i), True
        return tokens, mask, tokens.sum(1) * 0.5


def test_every_scene_caption_splits_into_its_objects_and_relation():
    objects = [SceneObject(s, c, z) for s, c, z in itertools.product(SHAPES, COLOURS, SIZES)]
    for a in objects:
        assert split_phrases(SceneSpec((a,)).caption()) == [f"a {a.phrase()}"]
    for a, b, rel in itertools.product(objects[:6], objects[-6:], RELATIONS):
        assert split_phrases(SceneSpec((a, b), rel).caption()) == [f"a {a.phrase()}", rel, f"a {b.phrase()}"]


def test_split_phrases_free_text_rules():
    assert split_phrases("A Cat  ON TOP OF a table, oil painting") == ["A Cat", "ON TOP OF", "a table", "oil painting"]
    assert split_phrases("a dog to the left of a tree") == ["a dog", "to the left of", "a tree"]  # longest match
    assert split_phrases("an online shop beside the ocean") == ["an online shop", "beside", "the ocean"]  # whole words
    assert split_phrases("") == [] and split_phrases(" , ; ") == []
    assert split_phrases("red and blue", separators=("blue",)) == ["red and", "blue"]
    assert split_phrases("a  b c", separators=()) == ["a b c"]
    assert limit_phrases(["a", "b", "c", "d"], 2) == ["a", "b c d"] and limit_phrases(["a"], 3) == ["a"]


def test_phrase_slots_are_the_exact_encodings_of_each_phrase():
    base = WordEncoder()
    enc = PhraseEncoder(base, 3)
    prompts = ["a small red circle left of a large blue square", "a red circle", "big red dog with a hat and a ball"]
    tokens, mask, pooled = enc.encode(prompts)
    full_t, full_m, full_p = base.encode(prompts)
    T = full_t.shape[1]
    assert tokens.shape == (3, 3 + T, 8) and mask.shape == (3, 3 + T) and pooled.shape == (3, 4 * 8)
    assert torch.equal(tokens[:, 3:], full_t) and torch.equal(mask[:, 3:], full_m)  # the prompt's own tokens
    assert torch.equal(pooled[:, :8], full_p)
    expected = [["a small red circle", "left of", "a large blue square"], ["a red circle"],
                ["big red dog", "with", "a hat and a ball"]]  # the overflow is merged into the last slot
    for b, phrases in enumerate(expected):
        assert enc.phrases(prompts[b]) == phrases
        t, m, p = base.encode(phrases)
        n = len(phrases)
        torch.testing.assert_close(tokens[b, :n], masked_mean(t, m), atol=0, rtol=0)
        torch.testing.assert_close(pooled[b, 8:8 + 8 * n], p.flatten(), atol=0, rtol=0)
        assert mask[b, :n].all() and not mask[b, n:3].any()
        assert torch.all(tokens[b, n:3] == 0) and torch.all(pooled[b, 8 + 8 * n:] == 0)  # empty slots


def test_swapping_attributes_changes_the_ordered_pooled_vector():
    enc = PhraseEncoder(WordEncoder(), 3)
    a, b = "a small red circle left of a large blue square", "a small blue circle left of a large red square"
    _, _, p = enc.encode([a, b])
    # slot 1 (the first object's phrase) changes with its colour; slot 2 (the relation "left of") does not
    assert not torch.allclose(p[0, 8:16], p[1, 8:16]) and torch.equal(p[0, 16:24], p[1, 16:24])


def test_phrase_encoding_does_not_depend_on_the_batch_and_null_has_no_slots():
    enc = PhraseEncoder(WordEncoder(), 2)
    alone = enc.encode(["a red circle above a dog"])
    batch = enc.encode(["x", "a red circle above a dog", "one two three four five six seven eight nine"])
    n = alone[0].shape[1]
    torch.testing.assert_close(batch[0][1, :n], alone[0][0], atol=1e-6, rtol=0)  # (float sums over other lengths)
    assert torch.equal(batch[1][1, :n], alone[1][0]) and not batch[1][1, n:].any()
    torch.testing.assert_close(batch[2][1], alone[2][0], atol=1e-6, rtol=0)
    t, m, p = enc.null()
    assert not m[0, :2].any() and torch.all(p[0, 8:] == 0)


def test_identity_and_config_errors():
    base = WordEncoder()
    ids = {PhraseEncoder(base, 3).identity, PhraseEncoder(base, 2).identity,
           PhraseEncoder(base, 3, ("left of",)).identity, base.identity}
    assert len(ids) == 4  # the cache key changes with K and with the separators
    with pytest.raises(ConfigError, match="text.phrases"):
        TextConfig(encoder="trainable", phrases=3)
    with pytest.raises(ConfigError, match="text.phrases"):
        TextConfig(encoder="minilm", phrases=-1)
    with pytest.raises(ConfigError, match="phrase_separators"):
        TextConfig(encoder="minilm", phrases=2, phrase_separators=("left of", " "))
    with pytest.raises(ConfigError, match=">= 1"):
        PhraseEncoder(base, 0)
    frozen = WordEncoder()
    frozen.identity = None
    with pytest.raises(ConfigError, match="frozen"):
        PhraseEncoder(frozen, 2)


def test_phrase_only_mode_is_the_slots_alone():
    base = WordEncoder()
    add, only = PhraseEncoder(base, 3), PhraseEncoder(base, 3, mode="only")
    prompts = ["a small red circle left of a large blue square", "a red circle"]
    t_add, m_add, p_add = add.encode(prompts)
    t, m, p = only.encode(prompts)
    assert t.shape == (2, 3, 8) and p.shape == (2, 3 * 8) and only.pooled_dim == 24 and add.pooled_dim == 32
    assert torch.equal(t, t_add[:, :3]) and torch.equal(m, m_add[:, :3]) and torch.equal(p, p_add[:, 8:])
    t0, m0, p0 = only.null()  # the null text: no phrase, nothing to attend to, a zero vector
    assert t0.shape == (1, 3, 8) and not m0.any() and torch.all(p0 == 0) and torch.all(t0 == 0)
    assert only.identity != add.identity
    with pytest.raises(ConfigError, match="phrase_mode"):
        PhraseEncoder(base, 3, mode="replace")
    with pytest.raises(Exception, match="phrase_mode"):
        TextConfig(encoder="minilm", phrases=3, phrase_mode="replace")
