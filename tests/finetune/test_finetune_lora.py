"""LoRA through peft: a fresh adapter changes nothing, merged equals unmerged, scale 0 is the base, the file is
diffusers' layout (same outputs in diffusers on the exported base), and bad adapters / targets are refused."""

import copy
import json

import pytest
import torch
from finetune_helpers import net_input, random_lora_b
from safetensors import safe_open

from noisecraft.errors import NoisecraftError
from noisecraft.finetune.lora import (
    LoRAConfig,
    add_lora,
    attach_lora,
    base_hash,
    export_diffusers_lora,
    lora_state,
    merge_lora,
    network_of,
    resolve_targets,
    save_lora,
    unmerge_lora,
)
from noisecraft.pipelines import load

ALL = ("attention", "conv", "feedforward")


def _out(run, inputs):
    x, sigma, cond = inputs
    with torch.no_grad():
        return run.denoiser(x, sigma, cond)


def _adapter(run, path, config: LoRAConfig, seed=0):
    """A trained-looking LoRA of `config` on a copy of the run's network, saved to `path`."""
    component, net = network_of(run)
    net = copy.deepcopy(net)
    layers = add_lora(net, config)
    random_lora_b(net, seed)
    save_lora(path, lora_state(net), config, layers=layers, component=component,
              info={"method": "lora", "base_hash": base_hash(network_of(run)[1])})
    return path


@pytest.mark.parametrize("which", ["text_base", "dit_base"])
def test_fresh_lora_leaves_outputs_bit_identical(which, request):
    run = load(request.getfixturevalue(which))
    inputs = net_input(run)
    before = _out(run, inputs)
    layers = add_lora(network_of(run)[1], LoRAConfig(rank=3, targets=ALL))
    assert len(layers) > 5
    assert all(not p.requires_grad for n, p in run.denoiser.net.named_parameters() if "lora_" not in n)
    assert torch.equal(_out(run, inputs), before)


@pytest.mark.parametrize("which", ["text_base", "dit_base"])
def test_merged_equals_unmerged_and_unmerge_restores(which, request, tmp_path):
    base = request.getfixturevalue(which)
    run = load(base)
    inputs = net_input(run)
    before = _out(run, inputs)
    path = _adapter(run, tmp_path / "a.safetensors", LoRAConfig(rank=4, alpha=2.0, targets=ALL))
    unmerged = load(base)
    attach_lora(network_of(unmerged)[1], path, scale=0.7)
    reports = merge_lora(run, [(path, 0.7)])
    merged, attached = _out(run, inputs), _out(unmerged, inputs)
    assert (merged - before).abs().max() > 1e-3  # the adapter does something
    assert (merged - attached).abs().max() <= 1e-6
    unmerge_lora(reports)
    assert torch.equal(_out(run, inputs), before)


def test_scale_zero_is_the_base_and_scales_add(text_base, tmp_path):
    run = load(text_base)
    inputs = net_input(run)
    before = _out(run, inputs)
    a = _adapter(run, tmp_path / "a.safetensors", LoRAConfig(rank=2, targets=("attention",)), seed=1)
    b = _adapter(run, tmp_path / "b.safetensors", LoRAConfig(rank=2, targets=("conv",)), seed=2)
    reports = merge_lora(run, [(a, 0.0)])
    assert torch.equal(_out(run, inputs), before)
    unmerge_lora(reports)
    reports = merge_lora(run, [(a, 0.5), (b, 1.5)])  # several at once
    both = _out(run, inputs)
    unmerge_lora(reports)
    other = load(text_base)
    attach_lora(network_of(other)[1], a, scale=0.5, adapter="a")
    attach_lora(network_of(other)[1], b, scale=1.5, adapter="b")
    assert (both - _out(other, inputs)).abs().max() <= 1e-6


def test_adapter_file_layout_and_metadata(text_base, tmp_path):
    run = load(text_base)
    path = _adapter(run, tmp_path / "a.safetensors", LoRAConfig(rank=4, alpha=8.0, targets=("attention",)))
    with safe_open(str(path), "pt") as f:
        keys, meta = list(f.keys()), f.metadata()
    assert keys and all(k.startswith("unet.") and (k.endswith(".lora_A.weight") or k.endswith(".lora_B.weight"))
                        for k in keys)
    ours, peft_fields = json.loads(meta["noisecraft_adapter"]), json.loads(meta["lora_adapter_metadata"])
    assert ours["rank"] == peft_fields["unet.r"] == 4 and ours["alpha"] == peft_fields["unet.lora_alpha"] == 8.0
    assert ours["base_hash"] == base_hash(network_of(run)[1]) and ours["targets"] == ["attention"]
    assert sorted(peft_fields["unet.target_modules"]) == sorted({k[5:].rsplit(".lora_", 1)[0] for k in keys})


def test_saved_lora_applied_in_diffusers_gives_the_same_outputs(ddpm_base, tmp_path):
    diffusers = pytest.importorskip("diffusers")
    from diffusers.loaders.peft import PeftAdapterMixin

    from noisecraft.interop.diffusers_export import export_diffusers

    run = load(ddpm_base)
    folder = export_diffusers(run, tmp_path / "pipe")
    ours = _adapter(run, tmp_path / "a.safetensors", LoRAConfig(rank=3, alpha=1.5, targets=("attention", "conv")))
    theirs = export_diffusers_lora(ours, network_of(run)[1].config, tmp_path / "a-diffusers.safetensors")

    class UNet2DModelWithLoRA(diffusers.UNet2DModel, PeftAdapterMixin):  # UNet2DModel lacks the mixin diffusers'
        pass                                                              # conditional UNets and DiTs have

    unet = UNet2DModelWithLoRA.from_pretrained(folder / "unet").eval()
    unet.load_lora_adapter(str(theirs.parent), weight_name=theirs.name, prefix="unet")  # reads the metadata too
    merge_lora(run, [(ours, 1.0)])
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(3, *run.data_shape, generator=g), torch.tensor([0, 417, 999])
    with torch.no_grad():
        a, b = run.denoiser.net(x, t.float()), unet(x, t).sample
    assert (a - b).abs().max() <= 1e-5
    assert a.abs().max() > 0.1


def test_adapter_for_another_architecture_lists_its_unmatched_layers(text_base, dit_base, tmp_path):
    dit = load(dit_base)
    path = _adapter(dit, tmp_path / "dit.safetensors", LoRAConfig(rank=2, targets=("attention",)))
    run = load(text_base)
    inputs = net_input(run)
    before = _out(run, inputs)
    with pytest.raises(NoisecraftError, match=r"blocks\.0\.attn\.qkv") as e:
        with pytest.warns(UserWarning, match="trained on base"):
            merge_lora(run, [(path, 1.0)])
    assert "blocks.1.attn.proj" in str(e.value)
    assert torch.equal(_out(run, inputs), before)  # nothing was merged
    with pytest.raises(NoisecraftError, match="match no layer"):
        attach_lora(network_of(run)[1], path)


def test_unknown_target_lists_the_available_layers(text_base):
    net = network_of(load(text_base))[1]
    with pytest.raises(NoisecraftError, match="target 'to_q' matches no layer") as e:
        resolve_targets(net, ("attention", "to_q"))
    assert "down.2.1.qkv" in str(e.value) and "conv_in" in str(e.value) and "groups: attention" in str(e.value)
    assert resolve_targets(net, ("qkv",)) == [n for n in resolve_targets(net, ("attention",)) if n.endswith("qkv")]
    with pytest.raises(NoisecraftError, match="rank must be"):
        LoRAConfig(rank=0)
