"""The sampler registry, aliases, option checks, the stateless step form, the callback, dtypes and
reproducibility."""

import pytest
import torch

from analytic import GaussianMixture
from noisecraft import samplers
from noisecraft.errors import NoisecraftError
from noisecraft.samplers import STEPS, available, get, get_step, options, resolve_alias
from noisecraft.samplers._common import run_multistep
from noisecraft.schedules.steps import karras_sigmas

MIX = GaussianMixture([[1.0, 0.5], [-1.0, 0.0]], [0.4, 0.3])
SIGMAS = karras_sigmas(0.01, 20.0, 6)
STOCHASTIC = {"ddpm", "euler_a", "dpmpp_2s_a", "dpmpp_2m_sde", "dpmpp_3m_sde", "euler_maruyama", "pc"}
REQUIRED = {"ddpm", "ddim", "euler", "euler_a", "heun", "dpm_solver_2", "dpm_solver_3", "dpmpp_2s", "dpmpp_2m",
            "dpmpp_3m", "dpmpp_2m_sde", "dpmpp_3m_sde", "unipc", "lms", "deis", "euler_maruyama", "pc", "ode"}


def x_T(n=4, seed=0, dtype=torch.float32):
    return 20.0 * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed)).to(dtype)


def test_every_method_is_registered():
    assert REQUIRED <= set(available())


@pytest.mark.parametrize("alias,expected", [
    ("Euler a", ("euler_a", None)), ("DPM++ 2M Karras", ("dpmpp_2m", "karras")),
    ("dpm++ 2m sde karras", ("dpmpp_2m_sde", "karras")), ("DPM++ 3M SDE Exponential", ("dpmpp_3m_sde", "exponential")),
    ("UniPC", ("unipc", None)), ("Heun", ("heun", None)), ("LMS", ("lms", None)), ("LMS Karras", ("lms", "karras")),
    ("DDIM", ("ddim", None)), ("DPM2", ("dpm_solver_2", None)), ("DPM++ 2S a", ("dpmpp_2s_a", None)),
    ("  Euler  ", ("euler", None)), ("DPM adaptive", ("ode", None)), ("k_dpmpp_2m", ("dpmpp_2m", None)),
])
def test_aliases(alias, expected):
    assert resolve_alias(alias) == expected
    assert get(alias) is samplers.SAMPLERS[expected[0]]


def test_unknown_sampler_names_the_allowed_ones():
    with pytest.raises(NoisecraftError, match="unknown sampler 'nope'.*dpmpp_2m"):
        get("nope")
    with pytest.raises(NoisecraftError, match="single-step form.*unipc"):
        get_step("heun")


@pytest.mark.parametrize("name,bad,match", [
    ("dpmpp_2m", {"order": 4}, "order must be one of 1, 2, 3"),
    ("unipc", {"order": 4}, "order must be one of 1, 2, 3"),
    ("lms", {"order": 5}, "order must be one of 1, 2, 3, 4"),
    ("dpm_solver_2", {"order": 1}, "order must be one of 2, 3"),
    ("ddim", {"eta": -0.1}, r"eta must be a number in \[0.0, 1.0\]"),
    ("dpmpp_2m_sde", {"eta": -1.0}, "eta must be a number in"),
    ("unipc", {"variant": "bh3"}, "'bh1', 'bh2'"),
    ("dpmpp_2m", {"solver_type": "rk4"}, "'midpoint', 'heun'"),
    ("dpmpp_3m", {"final": "magic"}, "'denoise', 'extrapolate'"),
    ("deis", {"final": "magic"}, "'step', 'denoise', 'extrapolate'"),
    ("heun", {"s_churn": -1.0}, "s_churn must be"),
    ("pc", {"snr": -0.1}, "snr must be"),
    ("pc", {"predictor": "rk4"}, "'euler_maruyama', 'ancestral'"),
    ("pc", {"corrector_steps": 1.5}, "corrector_steps must be an integer"),
    ("ode", {"rtol": -1.0}, "rtol must be"),
])
def test_bad_options_raise_with_allowed_values(name, bad, match):
    with pytest.raises(NoisecraftError, match=match):
        get(name)(MIX.denoise, x_T(), SIGMAS, **bad)


def test_bad_sigmas_raise():
    for bad in ([20.0, 1.0], [1.0, 2.0, 0.0], [[1.0, 0.0]], [5.0, 5.0, 0.0], [float("nan"), 0.0]):
        with pytest.raises(NoisecraftError):
            get("euler")(MIX.denoise, x_T(), torch.tensor(bad))


def test_options_lists_defaults():
    assert options("unipc")["variant"] == "bh2" and options("dpmpp_3m")["order"] == 3
    assert options("dpmpp_2m_sde")["eta"] == 1.0 and "s_churn" in options("heun")


def test_option_specs_come_from_the_signatures():
    """Every keyword-only parameter but cond / generator / callback is an option, with its default, a type
    and a meaning; aliases name the same options."""
    import inspect

    for name in available():
        specs = samplers.option_specs(name)
        params = inspect.signature(get(name)).parameters
        expected = [k for k, p in params.items() if p.kind is p.KEYWORD_ONLY and k not in samplers.NOT_OPTIONS]
        assert list(specs) == expected, name
        for key, spec in specs.items():
            assert spec.default == params[key].default and spec.meaning, (name, key)
        assert name in samplers.DESCRIPTIONS
    heun = samplers.option_specs("k_heun")["s_churn"]
    assert (heun.type, heun.default, heun.bounds) == (float, 0.0, (0.0, float("inf")))
    assert samplers.option_specs("unipc")["corrector"].type is bool
    assert samplers.option_specs("lms")["order"].choices == (1, 2, 3, 4)


def test_check_options_converts_text_to_the_declared_types():
    assert samplers.check_options("heun", {"s_churn": "0.5", "s_tmax": "inf", "final": "extrapolate"}) == {
        "s_churn": 0.5, "s_tmax": float("inf"), "final": "extrapolate"}
    checked = samplers.check_options("UniPC", {"order": "2", "corrector": "false", "lower_order_final": "True"})
    assert checked == {"order": 2, "corrector": False, "lower_order_final": True}
    assert type(checked["order"]) is int
    assert samplers.check_options("ddim", {"eta": 1}) == {"eta": 1.0}  # Python values pass, ints widen to float
    assert samplers.check_options("euler", {}) == {} and samplers.check_options("euler", None) == {}


@pytest.mark.parametrize("name,bad,match", [
    ("heun", {"eta": "0.5"}, r"^sampler 'heun' has no option 'eta'; allowed: s_churn \(float, default 0, >= 0: EDM"),
    ("euler", {"order": "2"}, "^sampler 'euler' has no option 'order'; allowed: none"),
    ("euler_a", {"eta": "-1"}, r"^sampler 'euler_a': option 'eta' must be in \[0, 1\]; got -1$"),
    ("Euler a", {"eta": "x"}, "^sampler 'euler_a': option 'eta' must be a number; got 'x'$"),
    ("unipc", {"order": "2.5"}, "option 'order' must be an integer; got '2.5'"),
    ("unipc", {"order": "4"}, "option 'order' must be one of 1, 2, 3; got 4"),
    ("unipc", {"corrector": "maybe"}, "option 'corrector' must be true or false"),
    ("lms", {"final": "magic"}, "option 'final' must be one of step, denoise, extrapolate; got magic"),
    ("dpmpp_2m_sde", {"eta": "-0.5"}, "option 'eta' must be >= 0; got -0.5"),
    ("ddim", {"eta": True}, "option 'eta' must be a float; got True"),
    ("ode", {"dtype": "float32"}, "option 'dtype' takes a Python object"),
])
def test_check_options_names_the_sampler_and_what_is_allowed(name, bad, match):
    with pytest.raises(NoisecraftError, match=match):
        samplers.check_options(name, bad)


def _outside(spec):
    """Values the declared bounds / choices refuse."""
    if spec.choices is not None:
        return [] if spec.type is bool else [{int: 99, str: "nope"}[spec.type]]
    lo, hi = spec.bounds
    return [lo - 1] + ([hi + 1] if hi != float("inf") else [])


def _inside(spec):
    if spec.choices is not None:
        return list(spec.choices)
    return [v for v in spec.bounds if v != float("inf")]


@pytest.mark.parametrize("name", sorted(samplers.SAMPLERS))
def test_declared_values_match_the_sampler_checks(name):
    """OPTION_DOCS restates the samplers' own checks: what it allows the sampler runs with, what it refuses
    the sampler refuses too."""
    sigmas = karras_sigmas(0.5, 5.0, 3)
    for key, spec in samplers.option_specs(name).items():
        if spec.bounds is None and spec.choices is None:
            continue
        for value in _inside(spec):
            assert samplers.check_options(name, {key: value}) == {key: value}
            get(name)(MIX.denoise, x_T(2), sigmas, generator=torch.Generator().manual_seed(0), **{key: value})
        for value in _outside(spec):
            with pytest.raises(NoisecraftError, match=f"sampler '{name}': option '{key}'"):
                samplers.check_options(name, {key: value})
            with pytest.raises(NoisecraftError):
                get(name)(MIX.denoise, x_T(2), sigmas, generator=torch.Generator().manual_seed(0), **{key: value})


def test_euler_ancestral_errors_name_it():
    with pytest.raises(NoisecraftError, match="^Euler ancestral eta must be"):
        get("euler_a")(MIX.denoise, x_T(), SIGMAS, eta=-1.0)


@pytest.mark.parametrize("name", sorted(STEPS))
def test_step_form_equals_the_sampler(name):
    """Driving `get_step(name)` by hand reproduces `get(name)` (same generator, same noise order)."""
    x = x_T(dtype=torch.float64)
    ref = get(name)(MIX.denoise, x, SIGMAS, generator=torch.Generator().manual_seed(1))
    step, g, state = get_step(name), torch.Generator().manual_seed(1), None
    kw = {"generator": g} if name in STOCHASTIC else {}
    for i in range(len(SIGMAS) - 1):
        s, s_next = float(SIGMAS[i]), float(SIGMAS[i + 1])
        x, state = step(x, s, s_next, MIX.denoise(x, s), state, **kw)
    if name == "unipc":  # the sampler lowers the order near the end (lower_order_final); compare without
        ref = get(name)(MIX.denoise, x_T(dtype=torch.float64), SIGMAS, lower_order_final=False)
    torch.testing.assert_close(x, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_callback_dict_and_dtypes(name):
    seen = []
    out = get(name)(MIX.denoise, x_T(), SIGMAS, generator=torch.Generator().manual_seed(0), callback=seen.append)
    assert out.dtype == torch.float32 and out.shape == (4, 2) and torch.isfinite(out).all()
    assert [info["i"] for info in seen] == list(range(len(SIGMAS) - 1))
    assert set(seen[0]) == {"i", "x", "sigma", "sigma_next", "denoised"}
    assert seen[0]["sigma"] == pytest.approx(float(SIGMAS[0])) or name == "heun"
    assert seen[-1]["sigma_next"] == 0.0


@pytest.mark.parametrize("name", ["euler", "dpmpp_3m", "unipc", "lms", "heun", "dpmpp_2m_sde"])
def test_half_precision_input_uses_float32_arithmetic(name):
    """A float16 x is sampled in float32 (the denoiser sees float32) and returned as float16."""
    dtypes = set()

    def denoiser(x, sigma, cond=None):
        dtypes.add(x.dtype)
        return MIX.denoise(x, sigma)

    x16 = x_T().half()
    out = get(name)(denoiser, x16, SIGMAS, generator=torch.Generator().manual_seed(0))
    ref = get(name)(MIX.denoise, x16.float(), SIGMAS, generator=torch.Generator().manual_seed(0))
    assert dtypes == {torch.float32} and out.dtype == torch.float16
    torch.testing.assert_close(out, ref.half())


@pytest.mark.parametrize("name", sorted(STOCHASTIC | {"heun"}))
def test_per_sample_generators_give_the_same_sample_whatever_the_batch(name):
    opts = {"s_churn": 10.0} if name == "heun" else {"norms": "sample"} if name == "pc" else {}
    x = x_T(6, dtype=torch.float64)
    gens = [torch.Generator().manual_seed(10 + i) for i in range(6)]
    full = get(name)(MIX.denoise, x, SIGMAS, generator=gens, **opts)
    part = get(name)(MIX.denoise, x[2:4], SIGMAS, generator=[torch.Generator().manual_seed(12 + i) for i in range(2)],
                     **opts)
    torch.testing.assert_close(full[2:4], part, rtol=0, atol=1e-12)
    again = get(name)(MIX.denoise, x, SIGMAS, generator=[torch.Generator().manual_seed(10 + i) for i in range(6)],
                      **opts)
    assert torch.equal(full, again)


def test_nfe_counts():
    calls = []

    def counting(x, sigma, cond=None):
        calls.append(1)
        return MIX.denoise(x, sigma)

    expected = {"euler": 6, "heun": 11, "dpm_solver_2": 11, "dpm_solver_3": 16, "dpmpp_2s": 11, "unipc": 6, "pc": 11}
    for name, nfe in expected.items():
        calls.clear()
        get(name)(counting, x_T(), SIGMAS, generator=torch.Generator().manual_seed(0))
        assert len(calls) == nfe, name
    stats = {}
    get("ode")(counting, x_T(), SIGMAS, stats=stats)
    assert stats["nfe"] > 0 and stats["steps"] > 0


def test_run_multistep_is_the_shared_loop():
    out = run_multistep(get_step("euler"), MIX.denoise, x_T(), SIGMAS, None, None)
    torch.testing.assert_close(out, get("euler")(MIX.denoise, x_T(), SIGMAS))
