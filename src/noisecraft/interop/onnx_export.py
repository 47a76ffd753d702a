"""ONNX export of a run: the denoiser alone, or a whole fixed-step sampling loop as one graph.

    run = noisecraft.load("runs/mnist-class")
    export_denoiser(run, "denoiser.onnx")           # D(x, sigma, cond) -> x0
    export_loop(run, "loop.onnx", sampler="dpmpp_2m", steps=12)   # noise (+ cond, guidance) -> samples

Graph inputs and outputs (batch B is dynamic everywhere; dtypes as in `INPUT_DTYPES`):

| graph    | inputs                                                         | output          |
|----------|----------------------------------------------------------------|-----------------|
| denoiser | x (B, *shape), sigma (B,), the run's condition inputs          | x0 (B, *shape)  |
| loop     | noise (B, *shape) ~ N(0, I), the condition inputs, guidance () | samples         |

Condition inputs are the `cond` keys the network reads (`noisecraft.models.conditioning`): class_labels (B,) int64
(label num_classes = null), and for a text run text_tokens (B, T, D), text_mask (B, T) bool, text_pooled (B, P).
The loop graph multiplies the unit noise by sigma_max, runs the sampler's stateless step function
(`noisecraft.samplers.get_step`, the same code `generate` runs) over the baked sigma schedule, unrolled, and
applies classifier-free guidance D_u + w (D_c - D_u) (Ho & Salimans 2022, eq. 6 in x0 form) with w the `guidance`
input and the unconditional side baked in (the null class label, the encoding of the empty prompt). w = 1 is the
conditional model. A latent run's loop returns latents (the decoder is not in the graph).

The export uses torch's TorchScript exporter (`dynamo=False`, no onnxscript needed) at opset 17 with three
symbolic fixes registered for the duration of the export (`_export_fixes`):

- aten::scaled_dot_product_attention: its math form softmax(Q K^T / sqrt(d) + mask) V, so attention exports
  whatever the backend (the failure of diffusers issue #5873); a boolean mask becomes an additive -inf bias;
- aten::group_norm: torch's symbolic checks the channel count against a static shape that shape inference gets
  wrong after a dynamic-batch `view` (it reads the spatial size as channels); this one needs no static shape;
- aten::movedim: torch's symbolic writes negative axes into the Transpose permutation (invalid ONNX);
- aten::searchsorted (discrete schedules' log-sigma interpolation): the count of table entries below x.

The file's metadata (`noisecraft` key, JSON) records what the graph is: kind, inputs, sample shape, the
sampler, steps and sigmas of a loop, and the null class label; `onnx_run` reads it.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from noisecraft.errors import NoisecraftError

OPSET = 17
LOOP_SAMPLERS = ("ddim", "euler", "dpmpp_2m")  # deterministic one-evaluation-per-step samplers
SUPPORTED_CONDITIONS = ("class", "text")
INPUT_DTYPES = {"x": "float32", "sigma": "float32", "noise": "float32", "guidance": "float32",
                "class_labels": "int64", "text_tokens": "float32", "text_mask": "bool", "text_pooled": "float32"}
METADATA_KEY = "noisecraft"


# ------------------------------------------------------------------------------------------ what is exported
def cond_keys(run) -> tuple[str, ...]:
    """The condition inputs of a run's graphs, or a NoisecraftError naming what cannot be exported."""
    from noisecraft.guidance.cfg import cond_spec_of

    names = [c.name for c in run.conditions]
    bad = [n for n in names if n not in SUPPORTED_CONDITIONS]
    if bad:
        raise NoisecraftError(f"ONNX export takes runs conditioned on {' and '.join(SUPPORTED_CONDITIONS)} only; "
                              f"this run has condition(s) {', '.join(bad)}")
    if hasattr(run.denoiser.net, "text_encoder"):
        raise NoisecraftError("ONNX export: this run trains its text encoder inside the network (text_ids); "
                              "only runs on a frozen encoder's tokens can be exported")
    spec = cond_spec_of(run.denoiser)
    keys = spec.accepts() if spec is not None else ()
    other = [k for k in keys if k not in INPUT_DTYPES]
    if other:
        raise NoisecraftError(f"ONNX export: the network reads cond input(s) {', '.join(other)}, which the "
                              f"exporter cannot take (supported: class_labels, text_tokens/text_mask, text_pooled)")
    return tuple(keys)


def example_inputs(run, keys, batch: int = 2, tokens: int = 3) -> dict:
    """Example tensors of every input (the tracer's sample; values are arbitrary but valid)."""
    from noisecraft.guidance.cfg import cond_spec_of

    spec = cond_spec_of(run.denoiser)
    out = {}
    for key in keys:
        if key == "class_labels":
            out[key] = torch.arange(batch) % spec.num_classes
        elif key == "text_tokens":
            out[key] = torch.randn(batch, tokens, spec.context_dim)
        elif key == "text_mask":
            out[key] = torch.ones(batch, tokens, dtype=torch.bool)
        elif key == "text_pooled":
            out[key] = torch.randn(batch, spec.pooled_dim)
    return out


def dynamic_axes(names) -> dict:
    axes = {n: {0: "batch"} for n in names if n != "guidance"}
    for n in ("text_tokens", "text_mask"):
        if n in axes:
            axes[n][1] = "tokens"
    return axes


# ------------------------------------------------------------------------------------------ the graphs
class DenoiserGraph(nn.Module):
    """forward(x, sigma, *cond inputs in `keys` order) -> D(x, sigma, cond)."""

    def __init__(self, denoiser, keys: tuple[str, ...]) -> None:
        super().__init__()
        self.denoiser, self.keys = denoiser, keys

    def forward(self, x, sigma, *cond):
        return self.denoiser(x, sigma, dict(zip(self.keys, cond)) or None)


class LoopGraph(nn.Module):
    """forward(noise, *cond inputs, guidance) -> samples: the unrolled sampler over baked sigmas."""

    def __init__(self, denoiser, keys, sigmas: list[float], step, uncond: dict | None) -> None:
        super().__init__()
        self.denoiser, self.keys, self.sigmas, self.step = denoiser, keys, sigmas, step
        self.uncond = uncond or {}

    def guided(self, x, sigma, cond: dict, w):
        """Classifier-free guidance D_u + w (D_c - D_u): one batched call [x; x] unless token lengths differ."""
        if not cond:
            return self.denoiser(x, sigma, None)
        B = x.shape[0]
        uncond = {k: v.expand(B, *v.shape[1:]) for k, v in self.uncond.items()}
        if "text_tokens" in cond:  # the prompt's and the empty prompt's token counts differ: two calls
            d_c, d_u = self.denoiser(x, sigma, cond), self.denoiser(x, sigma, uncond)
        else:
            both = {k: torch.cat([cond[k], uncond[k]]) for k in cond}
            d_c, d_u = self.denoiser(torch.cat([x, x]), sigma, both).chunk(2)
        return d_u + w * (d_c - d_u)

    def forward(self, noise, *inputs):
        cond = dict(zip(self.keys, inputs))
        w = inputs[len(self.keys)] if self.keys else None
        s = self.sigmas
        x, state = noise * s[0], None
        for i in range(len(s) - 1):
            sigma = torch.tensor(s[i], dtype=torch.float64)  # () as generate passes it; the denoiser expands it
            denoised = self.guided(x, sigma, cond, w).to(x.dtype)
            x, state = self.step(x, s[i], s[i + 1], denoised, state)
        return x


def _uncond(run, keys) -> dict:
    """The baked unconditional side, batch 1, for the keys the graph takes."""
    from noisecraft.pipelines import Request

    out = {}
    for c in run.conditions:
        out.update(c.unconditional(Request()))
    missing = [k for k in keys if k not in out]
    if missing:
        raise NoisecraftError(f"ONNX export: the run's conditions give no unconditional value for {missing}")
    return {k: out[k].cpu() for k in keys}


# ------------------------------------------------------------------------------------------ export
def export_denoiser(run, path, *, opset: int = OPSET) -> Path:
    """Write D(x, sigma, cond) -> x0 of `run` as ONNX (module docstring); returns the path."""
    keys = cond_keys(run)
    x = torch.randn(2, *run.data_shape)
    inputs = {"x": x, "sigma": torch.tensor([0.5, 5.0]), **example_inputs(run, keys)}
    meta = _metadata(run, "denoiser", list(inputs))
    return _export(DenoiserGraph(_cpu(run), keys), inputs, "x0", path, meta, opset)


def export_loop(run, path, *, sampler: str = "ddim", steps: int | None = None, step_schedule: str | None = None,
                opset: int = OPSET) -> Path:
    """Write the whole sampling loop of `sampler` (one of LOOP_SAMPLERS) over a baked sigma schedule as ONNX
    (module docstring): the sigmas are those `generate` uses for the same sampler, steps and step schedule."""
    from noisecraft import samplers
    from noisecraft.pipelines import Request
    from noisecraft.pipelines.generate import plan

    name, _ = samplers.resolve_alias(sampler) if isinstance(sampler, str) else (sampler, None)
    if name not in LOOP_SAMPLERS:
        raise NoisecraftError(f"ONNX loop export supports samplers {', '.join(LOOP_SAMPLERS)}; got {sampler!r} "
                              f"(export the denoiser alone with --what denoiser to drive any other sampler)")
    keys = cond_keys(run)
    p = plan(run, Request(sampler=name, steps=steps, step_schedule=step_schedule))
    sigmas = [float(s) for s in p.sigmas]
    graph = LoopGraph(_cpu(run), keys, sigmas, samplers.get_step(name), _uncond(run, keys) if keys else None)
    inputs = {"noise": torch.randn(2, *run.data_shape), **example_inputs(run, keys)}
    if keys:
        inputs["guidance"] = torch.tensor(1.5)
    meta = _metadata(run, "loop", list(inputs), sampler=name, steps=len(sigmas) - 1, step_schedule=p.step_schedule,
                     sigmas=sigmas)
    return _export(graph, inputs, "samples", path, meta, opset)


def _cpu(run):
    return run.denoiser.to("cpu").eval().requires_grad_(False)


def _metadata(run, kind: str, inputs: list[str], **extra) -> dict:
    from noisecraft.guidance.cfg import cond_spec_of

    spec = cond_spec_of(run.denoiser)
    return {"kind": kind, "inputs": inputs, "data_shape": list(run.data_shape), "model": run.config.name,
            "model_step": run.step, "num_classes": spec.num_classes if spec else 0,
            "latent": run.autoencoder is not None, **extra}


def _export(module, inputs: dict, output: str, path, meta: dict, opset: int) -> Path:
    import onnx

    if opset < 17:
        raise NoisecraftError(f"ONNX export needs opset >= 17, got {opset}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(inputs)
    with _export_fixes(opset), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings (python floats baked as constants) and deprecations
        torch.onnx.export(module, tuple(inputs.values()), str(path), dynamo=False, opset_version=opset,
                          input_names=names, output_names=[output], dynamic_axes=dynamic_axes(names + [output]))
    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    onnx.save(model, str(path))
    return path


# ------------------------------------------------------------------------------------------ symbolic fixes
@contextlib.contextmanager
def _export_fixes(opset: int):
    """Register the symbolics of the module docstring for one export, then remove them."""
    from torch.onnx import register_custom_op_symbolic, unregister_custom_op_symbolic

    fixes = {"::scaled_dot_product_attention": _sdpa, "::group_norm": _group_norm, "::movedim": _movedim,
             "::searchsorted": _searchsorted}
    for name, fn in fixes.items():
        register_custom_op_symbolic(name, fn, opset)
    try:
        yield
    finally:
        for name in fixes:
            unregister_custom_op_symbolic(name, opset)


def _helper():
    from torch.onnx._internal.torchscript_exporter import symbolic_helper

    return symbolic_helper


def _const(g, value):
    return g.op("Constant", value_t=torch.as_tensor(value))


def _sdpa(g, q, k, v, attn_mask=None, dropout_p=None, is_causal=None, scale=None, enable_gqa=None):
    """softmax(Q K^T scale + mask) V with scale 1/sqrt(d) (d = Q's last axis) and a bool mask as 0 / -inf."""
    h = _helper()
    if h._maybe_get_const(is_causal, "b") or h._maybe_get_const(enable_gqa, "b"):
        raise NoisecraftError("ONNX export: causal or grouped-query attention is not supported")
    scale = h._maybe_get_const(scale, "f")
    if scale is None or h._is_none(scale) or not isinstance(scale, float):
        d = g.op("Cast", g.op("Gather", g.op("Shape", q), _const(g, -1), axis_i=0), to_i=1)  # float
        scale = g.op("Div", _const(g, 1.0), g.op("Sqrt", d))
    else:
        scale = _const(g, scale)
    rank = h._get_tensor_rank(k)
    perm = list(range(rank - 2)) + [rank - 1, rank - 2]
    logits = g.op("Mul", g.op("MatMul", q, g.op("Transpose", k, perm_i=perm)), scale)
    if attn_mask is not None and not h._is_none(attn_mask):
        if h._type_utils.JitScalarType.from_value(attn_mask) == h._type_utils.JitScalarType.BOOL:
            attn_mask = g.op("Where", attn_mask, _const(g, 0.0), _const(g, float("-inf")))
        logits = g.op("Add", logits, attn_mask)
    return g.op("MatMul", g.op("Softmax", logits, axis_i=-1), v)


def _group_norm(g, x, num_groups, weight, bias, eps, cudnn_enabled):
    """GroupNorm as InstanceNormalization over (B, G, -1), then the per-channel affine (no static shapes)."""
    h = _helper()
    G, eps = h._get_const(num_groups, "i", "num_groups"), h._get_const(eps, "f", "eps")
    shape = g.op("Shape", x)
    y = g.op("Reshape", x, _const(g, [0, G, -1]))
    y = g.op("InstanceNormalization", y, _const(g, torch.ones(G)), _const(g, torch.zeros(G)), epsilon_f=eps)
    y = g.op("Reshape", y, shape)
    axes = _const(g, list(range(1, h._get_tensor_rank(x) - 1)))
    if not h._is_none(weight):
        y = g.op("Mul", y, g.op("Unsqueeze", weight, axes))
    if not h._is_none(bias):
        y = g.op("Add", y, g.op("Unsqueeze", bias, axes))
    return y


def _movedim(g, x, source, destination):
    """movedim as one Transpose with the axes taken modulo the rank."""
    h = _helper()
    rank = h._get_tensor_rank(x)
    src = [int(s) % rank for s in h._maybe_get_const(source, "t").view(-1).tolist()]
    dst = [int(d) % rank for d in h._maybe_get_const(destination, "t").view(-1).tolist()]
    perm = [-1] * rank
    for s, d in zip(src, dst):
        perm[d] = s
    rest = iter(i for i in range(rank) if i not in src)
    return g.op("Transpose", x, perm_i=[p if p >= 0 else next(rest) for p in perm])


def _searchsorted(g, sorted_sequence, x, out_int32=None, right=None, side=None, sorter=None):
    """searchsorted of a 1-D increasing table (left side): the number of entries < x (<= x for right)."""
    h = _helper()
    if h._maybe_get_const(right, "b") is True or h._maybe_get_const(side, "s") == "right":
        raise NoisecraftError("ONNX export: searchsorted(right=True) is not supported")
    below = g.op("Less", sorted_sequence, g.op("Unsqueeze", x, _const(g, [-1])))  # (..., N)
    return g.op("ReduceSum", g.op("Cast", below, to_i=7), _const(g, [-1]), keepdims_i=0)  # int64
