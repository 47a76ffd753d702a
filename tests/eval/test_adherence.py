"""The prompt-adherence metric is only meaningful if its classifier is right: it must read held-out
rendered scenes correctly (>= 98%), and reject the same images scored against altered prompts."""

import dataclasses

import pytest
import torch

from noisecraft.data.base import uint8_to_float
from noisecraft.data.scenes import COLOURS, SceneObject, SceneSpec, generate_scenes, parse_caption
from noisecraft.eval.adherence import Canonical, canonical, load_scene_classifier, prompt_adherence, targets
from noisecraft.eval.common import EvalError

HELD_OUT_SEED = 202  # the classifier trains on seed 101 (scripts/train_scene_classifier.py)


@pytest.fixture(scope="module")
def held_out():
    pixels, specs, _ = generate_scenes(1000, HELD_OUT_SEED)
    return uint8_to_float(pixels).permute(0, 3, 1, 2).contiguous(), specs


@pytest.fixture(scope="module")
def net():
    return load_scene_classifier()


def test_canonical_form_ignores_the_order_of_naming():
    red, blue = SceneObject("circle", "red", "small"), SceneObject("square", "blue", "large")
    assert canonical(SceneSpec((red, blue), "left of")) == canonical(SceneSpec((blue, red), "right of")) \
        == Canonical(2, "horizontal", (red, blue))
    assert canonical(SceneSpec((red, blue), "below")) == Canonical(2, "vertical", (blue, red))
    assert canonical(SceneSpec((red,))) == Canonical(1, None, (red,))
    t = targets([SceneSpec((red,)), SceneSpec((red, blue), "above")])
    assert t["layout"].tolist() == [-100, 1] and t["colour1"].tolist() == [-100, COLOURS.index("blue")]


def test_classifier_reads_held_out_rendered_scenes(held_out, net):
    images, specs = held_out
    result = prompt_adherence(images, [s.caption() for s in specs], net)
    assert result["adherence"] >= 0.98, result
    assert all(v >= 0.98 for v in result["per_attribute"].values()), result
    assert result["satisfied"].shape == (1000,)


def _altered(spec: SceneSpec, k: int) -> SceneSpec:
    """The spec with one attribute changed (cycling through colour, shape, size and relation)."""
    o = spec.objects[0]
    kind = k % 4 if spec.relation else k % 3
    if kind == 0:
        return dataclasses.replace(spec, objects=(dataclasses.replace(o, colour=COLOURS[(COLOURS.index(o.colour) + 1)
                                                                                        % len(COLOURS)]),
                                                  *spec.objects[1:]))
    if kind == 1:
        return dataclasses.replace(spec, objects=(dataclasses.replace(
            o, shape={"circle": "square", "square": "triangle", "triangle": "circle"}[o.shape]), *spec.objects[1:]))
    if kind == 2:
        return dataclasses.replace(spec, objects=(dataclasses.replace(
            o, size="large" if o.size == "small" else "small"), *spec.objects[1:]))
    flip = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
    return dataclasses.replace(spec, relation=flip[spec.relation])


def test_altered_prompts_are_rejected(held_out, net):
    images, specs = held_out
    wrong = [_altered(s, i) for i, s in enumerate(specs[:400])]
    assert all(w != s for w, s in zip(wrong, specs))
    assert prompt_adherence(images[:400], wrong, net)["adherence"] <= 0.02


def test_bad_inputs():
    with pytest.raises(EvalError, match="one prompt per image"):
        prompt_adherence(torch.zeros(2, 3, 32, 32), ["a small red circle"])
    with pytest.raises(EvalError, match=r"\(N, 3, 32, 32\)"):
        prompt_adherence(torch.zeros(1, 1, 32, 32), ["a small red circle"])
    assert parse_caption("a small red circle") == SceneSpec((SceneObject("circle", "red", "small"),))
