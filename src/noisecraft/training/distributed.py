"""Data-parallel training on PyTorch's own engine (`torch.distributed`), launched by torchrun or accelerate.

Launchers set the environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT); `setup()` reads
it, joins the process group (NCCL on CUDA, gloo on CPU) and pins each process to its GPU. `Dist` is what
the trainer sees: rank, world size, and the few collectives it uses; a single process is `Dist()` with
world 1, where every collective is a no-op.

Sharding is a pure function of (seed, step, rank): step s's global batch is the same as in a
one-process run (a permutation seeded by (seed, epoch), see `batches.BatchOrder`), cut into
world x grad_accum equal micro-batches; process r takes micro-batches r*A, ..., r*A + A - 1. Noise
levels and noise are drawn for the whole global batch from the (seed, step) generator and sliced the
same way, so a run is the same (to float rounding of the gradient sums) whatever the world size and
accumulation, and resuming needs only the step.

Two wrappings: DDP (Li et al. 2020, "PyTorch Distributed: Experiences on Accelerating Data Parallel
Training") keeps a full replica per process and all-reduces gradients; FSDP2 (`fully_shard`; Zhao et
al. 2023, "PyTorch FSDP") shards parameters, gradients and optimizer state per block. Checkpoints are
consolidated in both cases: one safetensors file, written by rank 0 only, then a barrier.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
from torch import nn

from noisecraft.core.denoiser import Denoiser
from noisecraft.errors import ConfigError

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def launched_distributed() -> bool:
    """True when a launcher (torchrun, accelerate launch, SLURM via torchrun) started > 1 process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: str = "cpu") -> str:
    """Join the process group of a torchrun/accelerate launch (if any); returns the device to use.

    CPU: gloo. CUDA: NCCL, and device `cuda` becomes `cuda:LOCAL_RANK` (one GPU per process)."""
    import torch.distributed as dist

    if not launched_distributed() or dist.is_initialized():
        return device
    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT", "RANK") if v not in os.environ]
    if missing:
        raise ConfigError(f"WORLD_SIZE > 1 but {', '.join(missing)} unset; launch with torchrun or accelerate launch")
    kind = torch.device(device).type
    if kind == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    dist.init_process_group(backend="nccl" if kind == "cuda" else "gloo")
    return device


def teardown() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


@dataclass(frozen=True)
class Dist:
    """This process's place in the job (world 1 when torch.distributed is not initialised)."""

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> Dist:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        """The average of a tensor over processes (a copy; the input is left alone)."""
        if self.world == 1:
            return x
        x = x.detach().clone()
        torch.distributed.all_reduce(x)
        return x / self.world

    def any(self, flags: list[bool], device) -> list[bool]:
        """Each flag OR-ed over processes (so every rank takes the same branch)."""
        if self.world == 1:
            return [bool(f) for f in flags]
        t = torch.tensor([int(f) for f in flags], device=device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return [bool(v) for v in t.tolist()]

    def broadcast(self, obj):
        """Rank 0's Python object on every rank."""
        if self.world == 1:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


def micro_slice(batch: int, chunk: int, chunks: int) -> slice:
    """Rows of micro-batch `chunk` of `chunks` equal parts of a global batch of `batch` rows."""
    if batch % chunks:
        raise ConfigError(f"train.batch_size={batch} must be divisible by world_size x grad_accum = {chunks}")
    size = batch // chunks
    return slice(chunk * size, (chunk + 1) * size)


def micro_rows(cond: dict | None, rows: slice, batch: int) -> dict | None:
    """The micro-batch `rows` of a conditioning dict: its per-sample entries (tensors, lists or tuples of
    length `batch`) sliced, the others (shared by all samples) kept."""
    if cond is None:
        return None

    def per_sample(v) -> bool:
        if isinstance(v, torch.Tensor):
            return v.ndim > 0 and v.shape[0] == batch
        return isinstance(v, list | tuple) and len(v) == batch

    return {k: v[rows] if per_sample(v) else v for k, v in cond.items()}


def is_block(module: nn.Module) -> bool:
    """The units of sharding and activation checkpointing: the network's residual/attention blocks
    (classes named *Block) and the U-Net's EmbedSequential stages. Duck-typed so any network's blocks count."""
    name = type(module).__name__
    return name.endswith("Block") or name == "EmbedSequential"


def outer_blocks(net: nn.Module) -> list[nn.Module]:
    """The outermost blocks of `net` (a block inside a block is not listed)."""
    found = []

    def visit(m: nn.Module) -> None:
        for child in m.children():
            if is_block(child):
                found.append(child)
            else:
                visit(child)

    visit(net)
    return found


def checkpoint_blocks(net: nn.Module) -> int:
    """Gradient (activation) checkpointing (Chen et al. 2016, "Training Deep Nets with Sublinear Memory
    Cost"): each outermost block keeps only its inputs in the forward pass and recomputes its activations
    in backward. The parameters and state_dict keys are unchanged; the RNG state is replayed, so dropout
    masks are the same. Returns the number of blocks wrapped."""
    from torch.utils.checkpoint import checkpoint

    blocks = outer_blocks(net)
    for block in blocks:
        inner = block.forward

        def forward(*args, _inner=inner, **kwargs):
            if not torch.is_grad_enabled():
                return _inner(*args, **kwargs)
            return checkpoint(_inner, *args, use_reentrant=False, **kwargs)

        block.forward = forward
    return len(blocks)


def fully_shard_blocks(net: nn.Module, mesh=None) -> None:
    """FSDP2: shard each outermost block, then the rest of the network (the root). FSDP shards flat
    contiguous storage, so channels-last weights are stored contiguously first (the same values; the
    U-Net still runs its activations channels-last)."""
    from torch.distributed.fsdp import fully_shard

    with torch.no_grad():
        for p in net.parameters():
            if not p.is_contiguous():
                p.data = p.data.contiguous()
    for block in outer_blocks(net):
        fully_shard(block, mesh=mesh)
    fully_shard(net, mesh=mesh)


def ddp(net: nn.Module, device: torch.device) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return DistributedDataParallel(net, device_ids=ids)


def parallelize(denoiser, averages: list[nn.Module], train, dist: Dist, device: torch.device):
    """Speed options and data-parallel wrapping of denoiser.net (train.grad_checkpointing, fsdp, compile);
    the moving `averages` of the network are sharded with it under FSDP.

    Returns (model, train_denoiser): the module whose forward/backward syncs gradients (the network itself,
    or its DDP wrapper), and the denoiser the training forward runs through (`denoiser`, or one around the
    DDP wrapper)."""
    net = denoiser.net
    if train.grad_checkpointing:
        checkpoint_blocks(net)
    if train.fsdp:
        if dist.world == 1:
            raise ConfigError("train.fsdp=true needs a distributed launch, e.g. torchrun --nproc_per_node G "
                              "-m noisecraft train ... train.fsdp=true")
        for module in [net, *averages]:
            fully_shard_blocks(module)
    model = net if dist.world == 1 or train.fsdp else ddp(net, device)
    if train.compile:
        net.compile()  # in place: parameter names and state_dict keys stay the same
    if model is net:
        return model, denoiser
    return model, Denoiser(model, denoiser.schedule, denoiser.prediction)


def no_sync(model: nn.Module, net: nn.Module, sync: bool):
    """Skip the gradient all-reduce on all but the last micro-batch of a step (DDP no_sync / FSDP2
    set_requires_gradient_sync)."""
    if sync:
        return contextlib.nullcontext()
    if hasattr(model, "no_sync"):
        return model.no_sync()
    if hasattr(net, "set_requires_gradient_sync"):
        return _fsdp_no_sync(net)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _fsdp_no_sync(net):
    net.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        net.set_requires_gradient_sync(True)


# ------------------------------------------------------------------------------- consolidated state
def _full_options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def full_model_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """A sharded module's full state dict on rank 0 (CPU); {} on the other ranks. Collective."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(module, options=_full_options(cpu_offload=True))


def full_optimizer_state(net: nn.Module, optimizer) -> dict:
    """The optimizer's full state on rank 0, keyed by parameter index as a plain torch optimizer
    state_dict is (FSDP's helpers key it by parameter name). Collective."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    sd = get_optimizer_state_dict(net, optimizer, options=_full_options(cpu_offload=True))
    if "state" not in sd:
        return {}
    index = {name: i for i, (name, _) in enumerate(net.named_parameters())}
    state = {index[name]: value for name, value in sd["state"].items()}
    groups = [{**g, "params": [index[n] for n in g["params"]]} for g in sd["param_groups"]]
    return {"state": state, "param_groups": groups}


def load_full_state(net: nn.Module, model_sd: dict, optimizer=None, optim_sd: dict | None = None) -> None:
    """Load full (unsharded) state dicts into a sharded module (and its optimizer); every rank passes the
    same full dicts (each reads the checkpoint file)."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    set_model_state_dict(net, model_sd, options=_full_options())
    if optimizer is not None:
        names = [name for name, _ in net.named_parameters()]
        state = {names[int(i)]: value for i, value in optim_sd["state"].items()}
        groups = [{**g, "params": [names[int(i)] for i in g["params"]]} for g in optim_sd["param_groups"]]
        set_optimizer_state_dict(net, optimizer, {"state": state, "param_groups": groups}, options=_full_options())


def local_tensors(params) -> list[torch.Tensor]:
    """The local shards of (possibly DTensor) parameters, as plain tensors that alias them."""
    return [p.to_local() if hasattr(p, "to_local") else p for p in params]
