"""LoRA files merged into a tiny UNet2DConditionModel / CLIP text model: the merge formula, the
three key layouts agreeing, diffusers+peft as the peer, exact unmerge, and loud failures."""

import copy
import json
import warnings
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from noisecraft.errors import CheckpointError, NoisecraftError
from noisecraft.interop.lora import apply_lora, apply_lora_to_run, load_lora

diffusers = pytest.importorskip("diffusers")

# layers the test LoRAs target: attention Linears, a 3x3 conv, 1x1 convs (proj_in, conv_shortcut)
TARGET_ENDINGS = ("to_q", "to_k", "to_v", "to_out.0", "resnets.0.conv1", "proj_in", "conv_shortcut", "ff.net.2")


@pytest.fixture(scope="module")
def base_unet():
    torch.manual_seed(0)
    return diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=12, attention_head_dim=2, norm_num_groups=4,
    ).eval()


@pytest.fixture
def unet(base_unet):
    return copy.deepcopy(base_unet)


def targets(model):
    return {n: m for n, m in model.named_modules()
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and n.endswith(TARGET_ENDINGS)}


def random_layers(model, *, r=4, seed=1):
    """{module name: (down, up)} for every target: (r, in[, kh, kw]) and (out, r[, 1, 1])."""
    g = torch.Generator().manual_seed(seed)
    layers = {}
    for name, m in targets(model).items():
        w = m.weight
        down = 0.1 * torch.randn(r, *w.shape[1:], generator=g)
        up = 0.1 * torch.randn(w.shape[0], r, *([1] * (w.ndim - 2)), generator=g)
        layers[name] = (down, up)
    return layers


def write_peft(path, layers, *, component="unet", alpha=None):
    """diffusers' current format: <component>.<name>.lora_A/B.weight, alpha in lora_adapter_metadata."""
    sd = {}
    for name, (down, up) in layers.items():
        sd[f"{component}.{name}.lora_A.weight"] = down
        sd[f"{component}.{name}.lora_B.weight"] = up
    metadata = None
    if alpha is not None:
        r = next(iter(layers.values()))[0].shape[0]
        # peft's LoraConfig, as diffusers saves it
        config = {"r": r, "lora_alpha": alpha, "target_modules": sorted({".".join(n.split(".")[-2:]) for n in layers})}
        metadata = {"format": "pt",
                    "lora_adapter_metadata": json.dumps({f"{component}.{k}": v for k, v in config.items()})}
    save_file(sd, str(path), metadata=metadata)
    return path


def write_kohya(path, layers, *, prefix="lora_unet_", alpha=None):
    """kohya sd-scripts: lora_unet_<name with _>.lora_down/lora_up.weight and .alpha."""
    sd = {}
    for name, (down, up) in layers.items():
        stem = prefix + name.replace(".", "_")
        sd[f"{stem}.lora_down.weight"] = down
        sd[f"{stem}.lora_up.weight"] = up
        if alpha is not None:
            sd[f"{stem}.alpha"] = torch.tensor(float(alpha))
    save_file(sd, str(path))
    return path


def write_old_diffusers(path, layers, *, alpha):
    """diffusers' older layouts: attention processors (processor.to_q_lora.down.weight) for attention
    layers, LoRACompatible layers (.lora.down.weight) for the rest, alpha as <name>.alpha."""
    sd = {}
    for name, (down, up) in layers.items():
        head, _, leaf = name.rpartition(".")
        if leaf in ("to_q", "to_k", "to_v") or name.endswith("to_out.0"):
            attn = head if leaf != "0" else head.rpartition(".")[0]
            which = leaf if leaf != "0" else "to_out"
            stem = f"unet.{attn}.processor.{which}_lora"
            sd[f"{stem}.down.weight"], sd[f"{stem}.up.weight"] = down, up
            sd[f"unet.{attn}.processor.{which}_lora.alpha"] = torch.tensor(float(alpha))
        else:
            sd[f"unet.{name}.lora.down.weight"], sd[f"unet.{name}.lora.up.weight"] = down, up
            sd[f"unet.{name}.alpha"] = torch.tensor(float(alpha))
    save_file(sd, str(path))
    return path


def expected_delta(down, up, alpha):
    r = down.shape[0]
    return (alpha / r) * (up.flatten(1) @ down.flatten(1)).reshape(up.shape[0], *down.shape[1:])


def unet_inputs(seed=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 4, 8, 8, generator=g), torch.tensor([10, 500]), torch.randn(2, 3, 12, generator=g)


def run_unet(model):
    x, t, c = unet_inputs()
    with torch.no_grad():
        return model(x, t, c).sample


# ---------------------------------------------------------------------------------------------- (a)


def test_merged_weights_follow_the_formula_for_linear_and_conv(unet, tmp_path):
    layers = random_layers(unet, r=4)
    lora = load_lora(write_kohya(tmp_path / "k.safetensors", layers, alpha=3.0))
    before = {n: m.weight.detach().clone() for n, m in targets(unet).items()}
    report = apply_lora(unet, [(lora, 0.8)], prefix="unet", strict=True)
    assert sorted(report.applied) == sorted(layers) and not report.unmatched
    kinds = {tuple(m.weight.shape[2:]) for m in targets(unet).values()}
    assert {(), (3, 3), (1, 1)} <= kinds  # Linear, a 3x3 conv and 1x1 convs are all covered
    for name, m in targets(unet).items():
        down, up = layers[name]
        want = before[name] + 0.8 * expected_delta(down, up, 3.0)
        torch.testing.assert_close(m.weight.detach(), want, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------- (b)


def test_output_matches_diffusers_peft_load_lora_adapter(unet, tmp_path):
    pytest.importorskip("peft")
    layers = random_layers(unet, r=4)
    path = write_peft(tmp_path / "pytorch_lora_weights.safetensors", layers)
    theirs = copy.deepcopy(unet)
    theirs.load_lora_adapter(str(tmp_path), weight_name=path.name, prefix="unet", adapter_name="a")
    theirs.set_adapters(["a"], weights=[0.7])
    apply_lora(unet, [(path, 0.7)], prefix="unet", strict=True)
    diff = (run_unet(unet) - run_unet(theirs)).abs().max().item()
    assert diff <= 1e-5, diff


def test_kohya_file_matches_diffusers_own_kohya_conversion(unet, tmp_path):
    pytest.importorskip("peft")
    from diffusers.loaders import StableDiffusionLoraLoaderMixin

    layers = random_layers(unet, r=4)
    path = write_kohya(tmp_path / "k.safetensors", layers, alpha=2.0)
    state_dict, alphas = StableDiffusionLoraLoaderMixin.lora_state_dict(str(path))
    theirs = copy.deepcopy(unet)
    theirs.load_lora_adapter(state_dict, network_alphas=alphas, prefix="unet", adapter_name="k")
    theirs.set_adapters(["k"], weights=[1.3])
    apply_lora(unet, [(path, 1.3)], prefix="unet", strict=True)
    diff = (run_unet(unet) - run_unet(theirs)).abs().max().item()
    assert diff <= 1e-5, diff


# ---------------------------------------------------------------------------------------------- (c)


def test_kohya_peft_and_old_diffusers_files_give_the_same_weights(base_unet, tmp_path):
    layers = random_layers(base_unet, r=4)
    files = {
        "kohya": write_kohya(tmp_path / "k.safetensors", layers, alpha=3.0),
        "peft": write_peft(tmp_path / "p.safetensors", layers, alpha=3.0),
        "diffusers-old": write_old_diffusers(tmp_path / "o.safetensors", layers, alpha=3.0),
    }
    merged = {}
    for fmt, path in files.items():
        lora = load_lora(path)
        assert lora.format == fmt
        assert sorted(lora.layers) == sorted(f"unet.{n}" for n in layers)  # diffusers naming whatever the file
        model = copy.deepcopy(base_unet)
        apply_lora(model, [(lora, 0.9)], prefix="unet", strict=True)
        merged[fmt] = model.state_dict()
    for fmt in ("peft", "diffusers-old"):
        for key, value in merged["kohya"].items():
            assert torch.equal(value, merged[fmt][key]), (fmt, key)


def test_file_without_alpha_uses_alpha_equal_rank(base_unet, tmp_path):
    layers = random_layers(base_unet, r=4)
    lora = load_lora(write_peft(tmp_path / "p.safetensors", layers))
    assert {layer.alpha for layer in lora.layers.values()} == {4.0}


# ---------------------------------------------------------------------------------------------- (d)


def test_two_loras_at_once_equal_sequential_application(base_unet, tmp_path):
    first = load_lora(write_kohya(tmp_path / "a.safetensors", random_layers(base_unet, seed=1), alpha=2.0))
    second = load_lora(write_peft(tmp_path / "b.safetensors", random_layers(base_unet, r=2, seed=5)))
    together, sequential = copy.deepcopy(base_unet), copy.deepcopy(base_unet)
    report = apply_lora(together, [(first, 0.5), (second, 1.0)], prefix="unet", strict=True)
    assert set(report.applied.values()) == {2}
    apply_lora(sequential, [(first, 0.5)], prefix="unet", strict=True)
    apply_lora(sequential, [(second, 1.0)], prefix="unet", strict=True)
    for key, value in together.state_dict().items():
        torch.testing.assert_close(value, sequential.state_dict()[key], atol=1e-6, rtol=0)


def test_two_loras_match_diffusers_set_adapters(base_unet, tmp_path):
    pytest.importorskip("peft")
    a = write_peft(tmp_path / "a.safetensors", random_layers(base_unet, seed=1), alpha=2.0)  # alpha in metadata
    b = write_peft(tmp_path / "b.safetensors", random_layers(base_unet, r=2, seed=5))
    ours, theirs = copy.deepcopy(base_unet), copy.deepcopy(base_unet)
    apply_lora(ours, [(a, 0.5), (b, 1.0)], prefix="unet", strict=True)
    theirs.load_lora_adapter(str(tmp_path), weight_name=a.name, prefix="unet", adapter_name="a")
    theirs.load_lora_adapter(str(tmp_path), weight_name=b.name, prefix="unet", adapter_name="b")
    theirs.set_adapters(["a", "b"], weights=[0.5, 1.0])
    diff = (run_unet(ours) - run_unet(theirs)).abs().max().item()
    assert diff <= 1e-5, diff


# ---------------------------------------------------------------------------------------------- (e)


def test_unmerge_restores_the_exact_original_weights(base_unet, tmp_path):
    model = copy.deepcopy(base_unet)
    a = write_kohya(tmp_path / "a.safetensors", random_layers(base_unet, seed=1), alpha=3.0)
    b = write_peft(tmp_path / "b.safetensors", random_layers(base_unet, seed=2))
    first = apply_lora(model, [(a, 0.5)], prefix="unet")
    second = apply_lora(model, [(b, 1.0)], prefix="unet")
    assert any(not torch.equal(v, base_unet.state_dict()[k]) for k, v in model.state_dict().items())
    with pytest.raises(NoisecraftError, match="merged later first"):
        first.unmerge()  # the second merge sits on top of it
    second.unmerge()
    first.remove()
    for key, value in model.state_dict().items():
        assert torch.equal(value, base_unet.state_dict()[key]), key


# ---------------------------------------------------------------------------------------------- (f)


def test_lora_for_another_architecture_reports_its_keys_by_name(unet, tmp_path):
    layers = random_layers(unet)
    name = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    sd = {f"unet.{name}.lora_A.weight": layers[name][0], f"unet.{name}.lora_B.weight": layers[name][1],
          # an SDXL-only block, and a kohya key in the original LDM naming (SDXL kohya files)
          "unet.down_blocks.2.attentions.1.transformer_blocks.3.attn2.to_k.lora_A.weight": torch.zeros(4, 2048),
          "unet.down_blocks.2.attentions.1.transformer_blocks.3.attn2.to_k.lora_B.weight": torch.zeros(640, 4),
          "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight": torch.zeros(4, 640),
          "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_up.weight": torch.zeros(640, 4),
          "unet.conv_in.hada_w1_a": torch.zeros(4, 4)}  # LyCORIS: not a LoRA
    save_file(sd, str(tmp_path / "xl.safetensors"))
    foreign = ["unet.down_blocks.2.attentions.1.transformer_blocks.3.attn2.to_k",
               "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"]
    with pytest.warns(UserWarning) as caught:
        report = apply_lora(unet, [(tmp_path / "xl.safetensors", 1.0)], prefix="unet")
    message = str(caught[0].message)
    assert sorted(report.unmatched) == sorted(foreign) and all(k in message for k in foreign)
    assert report.unsupported == ["unet.conv_in.hada_w1_a"] and "hada_w1_a" in message
    assert list(report.applied) == [name]
    with pytest.raises(NoisecraftError, match="match no module") as e:
        apply_lora(copy.deepcopy(unet), [(tmp_path / "xl.safetensors", 1.0)], prefix="unet", strict=True)
    assert all(k in str(e.value) for k in foreign)


def test_forgotten_prefix_is_reported_with_a_hint(unet, tmp_path):
    path = write_peft(tmp_path / "p.safetensors", random_layers(unet))
    with pytest.raises(NoisecraftError, match=r"pass prefix="):
        apply_lora(unet, [(path, 1.0)], strict=True)


def test_shape_mismatch_names_module_and_shapes_and_changes_nothing(unet, base_unet, tmp_path):
    layers = random_layers(unet)
    layers["conv_in"] = (torch.zeros(4, 5, 3, 3), torch.zeros(8, 4, 1, 1))  # conv_in is (8, 4, 3, 3)
    path = write_peft(tmp_path / "p.safetensors", layers)
    with pytest.raises(NoisecraftError, match=r"'conv_in'.*\(8, 5, 3, 3\).*\(8, 4, 3, 3\)"):
        apply_lora(unet, [(path, 1.0)], prefix="unet")
    for key, value in unet.state_dict().items():
        assert torch.equal(value, base_unet.state_dict()[key])


class _Boom:
    def __reduce__(self):
        return (open, ("/tmp/noisecraft-lora-unpickled", "w"))


def test_pickle_file_is_refused_without_unpickling(tmp_path):
    import os

    marker = "/tmp/noisecraft-lora-unpickled"
    if os.path.exists(marker):
        os.remove(marker)
    for name in ("lora.pt", "lora.safetensors"):  # by suffix, and by content whatever the name
        torch.save({"x.lora_A.weight": torch.zeros(1), "boom": _Boom()}, tmp_path / name)
        with pytest.raises(CheckpointError, match="safetensors") as e:
            load_lora(tmp_path / name)
        assert "\n" not in str(e.value) and "pickle" in str(e.value)
    assert not os.path.exists(marker)


def test_truncated_and_non_lora_files_are_one_line_errors(base_unet, tmp_path):
    path = write_peft(tmp_path / "p.safetensors", random_layers(base_unet))
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable safetensors file") as e:
        load_lora(tmp_path / "cut.safetensors")
    assert "\n" not in str(e.value)
    save_file({"conv_in.weight": torch.zeros(2, 2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="not a LoRA") as e:
        load_lora(tmp_path / "model.safetensors")
    assert "\n" not in str(e.value)
    save_file({"unet.conv_in.lora_A.weight": torch.zeros(2, 4)}, str(tmp_path / "half.safetensors"))
    with pytest.raises(CheckpointError, match="no up tensor"):
        load_lora(tmp_path / "half.safetensors")


# ---------------------------------------------------------------------------------------------- text encoder, runs


@pytest.fixture(scope="module")
def base_text_encoder():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.CLIPTextConfig(hidden_size=12, intermediate_size=16, num_hidden_layers=2,
                                         num_attention_heads=2, vocab_size=50, max_position_embeddings=16,
                                         bos_token_id=0, eos_token_id=1, pad_token_id=1)
    return transformers.CLIPTextModel(config).eval()


def text_layers(text_encoder, seed=3):
    """Kohya/diffusers name ('text_model.encoder...', the pre-transformers-5 layout) -> (down, up)."""
    g = torch.Generator().manual_seed(seed)
    layers = {}
    for name, m in text_encoder.named_modules():
        if isinstance(m, torch.nn.Linear) and name.endswith(("q_proj", "v_proj", "fc1")):
            full = name if name.startswith("text_model.") else "text_model." + name
            layers[full] = (0.1 * torch.randn(2, m.in_features, generator=g),
                            0.1 * torch.randn(m.out_features, 2, generator=g))
    return layers


def test_text_encoder_lora_matches_diffusers_and_kohya_equals_peft(base_text_encoder, tmp_path):
    pytest.importorskip("peft")
    from diffusers.loaders import StableDiffusionLoraLoaderMixin

    layers = text_layers(base_text_encoder)  # 'text_model.' names: found on transformers 5's flat CLIPTextModel too
    kohya = write_kohya(tmp_path / "te_k.safetensors", layers, prefix="lora_te_", alpha=2.0)
    peft = write_peft(tmp_path / "te_p.safetensors", layers, component="text_encoder", alpha=2.0)
    from_kohya, ours, theirs = (copy.deepcopy(base_text_encoder) for _ in range(3))
    assert len(apply_lora(from_kohya, [(kohya, 0.6)], prefix="text_encoder", strict=True).applied) == 6
    assert len(apply_lora(ours, [(peft, 0.6)], prefix="text_encoder", strict=True).applied) == 6
    for key, value in ours.state_dict().items():
        assert torch.equal(value, from_kohya.state_dict()[key]), key
    # the peer reads the peft file (diffusers 0.42 drops kohya text-encoder attention LoRAs; see the module notes)
    state_dict, alphas, metadata = StableDiffusionLoraLoaderMixin.lora_state_dict(str(peft), return_lora_metadata=True)
    assert metadata["text_encoder.lora_alpha"] == 2.0
    StableDiffusionLoraLoaderMixin.load_lora_into_text_encoder(
        state_dict, alphas, theirs, prefix="text_encoder", lora_scale=0.6, adapter_name="te", metadata=metadata)
    ids = torch.tensor([[0, 5, 7, 9, 1]])
    with torch.no_grad():
        diff = (ours(ids).last_hidden_state - theirs(ids).last_hidden_state).abs().max().item()
    assert diff <= 1e-5, diff


def test_apply_lora_to_run_routes_components(base_unet, base_text_encoder, tmp_path):
    unet, te = copy.deepcopy(base_unet), copy.deepcopy(base_text_encoder)

    class Wrapper(torch.nn.Module):  # how a loader may hold the diffusers module inside a noisecraft network
        def __init__(self, inner):
            super().__init__()
            self.unet = inner

    run = SimpleNamespace(denoiser=SimpleNamespace(net=Wrapper(unet)), extra={"text_encoder": te})
    sd = {}
    for name, (down, up) in random_layers(base_unet).items():
        sd[f"unet.{name}.lora_A.weight"], sd[f"unet.{name}.lora_B.weight"] = down, up
    for name, (down, up) in text_layers(base_text_encoder).items():
        sd[f"text_encoder.{name}.lora_A.weight"], sd[f"text_encoder.{name}.lora_B.weight"] = down, up
    save_file(sd, str(tmp_path / "both.safetensors"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reports = apply_lora_to_run(run, [(tmp_path / "both.safetensors", 1.0)], strict=True)
    assert len(reports["unet"].applied) == len(targets(base_unet)) and len(reports["text_encoder"].applied) == 6
    # the same file without a text encoder in the run: its layers are reported, not dropped
    run = SimpleNamespace(denoiser=SimpleNamespace(net=Wrapper(copy.deepcopy(base_unet))), extra={})
    with pytest.raises(NoisecraftError, match="no module for 6 LoRA layers"):
        apply_lora_to_run(run, [(tmp_path / "both.safetensors", 1.0)], strict=True)
    assert all(torch.equal(v, base_unet.state_dict()[k]) for k, v in run.denoiser.net.unet.state_dict().items())


def test_lora_on_a_loaded_diffusers_run_matches_the_pipelines_load_lora_weights(tmp_path):
    pytest.importorskip("peft")
    pytest.importorskip("noisecraft.interop.diffusers_load")
    from diffusers_tiny import tiny_sd_pipeline_dir

    import noisecraft

    folder = tiny_sd_pipeline_dir(tmp_path)
    run = noisecraft.load(folder)
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(folder)
    unet, te = run.denoiser.net.module, next(iter(run.conditions)).encoder
    sd = {}
    for name, (down, up) in random_layers(unet).items():
        sd[f"unet.{name}.lora_A.weight"], sd[f"unet.{name}.lora_B.weight"] = down, up
    for name, (down, up) in text_layers(te).items():
        sd[f"text_encoder.{name}.lora_A.weight"], sd[f"text_encoder.{name}.lora_B.weight"] = down, up
    save_file(sd, str(tmp_path / "sd_lora.safetensors"))
    reports = apply_lora_to_run(run, [(tmp_path / "sd_lora.safetensors", 0.7)], strict=True)
    assert set(reports) == {"unet", "text_encoder"} and len(reports["text_encoder"].applied) == 6
    pipe.load_lora_weights(str(tmp_path), weight_name="sd_lora.safetensors", adapter_name="x")
    pipe.set_adapters(["x"], adapter_weights=[0.7])
    g = torch.Generator().manual_seed(0)
    x, c, ids = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 77, 32, generator=g), torch.tensor([[0, 5, 9, 1]])
    with torch.no_grad():
        assert (unet(x, 10, c).sample - pipe.unet(x, 10, c).sample).abs().max().item() <= 1e-5
        text_diff = (te(ids).last_hidden_state - pipe.text_encoder(ids).last_hidden_state).abs().max().item()
    assert text_diff <= 1e-5, text_diff


def test_cli_lora_spec_parsing():
    from noisecraft.interop.lora import parse_lora_spec

    assert parse_lora_spec("style.safetensors") == ("style.safetensors", 1.0)
    assert parse_lora_spec("dir/style.safetensors:0.8") == ("dir/style.safetensors", 0.8)
    assert parse_lora_spec("C:/loras/a.safetensors:-1") == ("C:/loras/a.safetensors", -1.0)
    assert parse_lora_spec("C:/loras/a.safetensors") == ("C:/loras/a.safetensors", 1.0)
    with pytest.raises(NoisecraftError, match="must be a number"):
        parse_lora_spec("a.safetensors:strong")


def test_cli_sample_with_lora_changes_the_image_and_refuses_foreign_keys(tmp_path, capsys):
    pytest.importorskip("noisecraft.interop.diffusers_load")
    from diffusers_tiny import tiny_sd_pipeline_dir
    from PIL import Image

    import noisecraft
    from noisecraft.cli.main import main

    folder = tiny_sd_pipeline_dir(tmp_path)
    unet = noisecraft.load(folder).denoiser.net.module
    sd = {}
    for name, (down, up) in random_layers(unet).items():
        sd[f"unet.{name}.lora_A.weight"], sd[f"unet.{name}.lora_B.weight"] = down * 5, up * 5
    save_file(sd, str(tmp_path / "style.safetensors"))
    base = ["sample", "--checkpoint", str(folder), "--prompt", "a cat", "--steps", "2", "--num", "1"]
    assert main([*base, "--out", str(tmp_path / "plain.png")]) == 0
    assert main([*base, "--lora", f"{tmp_path / 'style.safetensors'}:0.8", "--out", str(tmp_path / "lora.png")]) == 0
    assert Image.open(tmp_path / "plain.png").tobytes() != Image.open(tmp_path / "lora.png").tobytes()
    save_file({"unet.no_such_block.to_q.lora_A.weight": torch.zeros(2, 4),
               "unet.no_such_block.to_q.lora_B.weight": torch.zeros(4, 2)}, str(tmp_path / "foreign.safetensors"))
    capsys.readouterr()
    assert main([*base, "--lora", str(tmp_path / "foreign.safetensors"), "--out", str(tmp_path / "f.png")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("noisecraft:")]
    assert len(err) == 1 and "no_such_block" in err[0]  # one line, naming the key (transformers' bar aside)
