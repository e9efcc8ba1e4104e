"""Data-parallel training with torch.distributed: one process per device, started by ``torchrun``.

Every process draws the same global batch from the same generator (the run's seed, saved in its checkpoints)
and trains on its share of it, so the data a run sees, step by step, does not depend on the number of
processes: a run resumes with any number of them. Gradients are averaged by DistributedDataParallel, each
process's loss weighted by its share of the global batch, so N processes take the step one process takes on the
whole batch (up to the order of floating-point sums). Batch norm normalizes with the global batch's statistics
(``GlobalBatchNorm2d``: torch's SyncBatchNorm runs on GPUs only), again as one process would. Only process 0
writes the run's files. Backends: NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from .. import SpikediffError


@dataclass
class Group:
    """This process's place in a run: ``world`` processes, this one ``rank``, on ``device``."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, n: int) -> slice:
        """This process's rows of a global batch of ``n``: contiguous, the first n % world processes one more."""
        base, extra = divmod(n, self.world)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """The sum over processes (the tensor itself in a one-process run)."""
        if not self.active:
            return values
        out = values.detach().clone().to(self.device)
        dist.all_reduce(out)
        return out.to(values.device)

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def launched() -> int:
    """The number of processes ``torchrun`` started this one among (1 when run directly)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise SpikediffError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number") from None


@contextmanager
def group(device: torch.device):
    """The process group of a ``torchrun`` launch (a trivial one when run directly), torn down on exit. On
    CUDA each process takes the device of its LOCAL_RANK."""
    world = launched()
    if world <= 1:
        yield Group(0, 1, device)
        return
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise SpikediffError(f"process {rank}: LOCAL_RANK {local} but this machine has {torch.cuda.device_count()} "
                                 f"CUDA device(s); use --nproc_per_node <= {torch.cuda.device_count()}")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield Group(rank, world, device)
        dist.barrier()  # no process leaves while process 0 may still be writing the last checkpoint
    finally:
        dist.destroy_process_group()


class _AllReduce(torch.autograd.Function):
    """Sum over processes, differentiable: each process's input reaches every process's loss, so its gradient
    is the sum of theirs."""

    @staticmethod
    def forward(ctx, x):
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """Batch norm over the global batch of all processes (differentiable all-reduce of the sums); in one
    process, or in eval mode, plain batch norm. Its state is BatchNorm2d's, so checkpoints do not change."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        all_reduce = _AllReduce.apply
        c = x.shape[1]
        dims = (0, 2, 3)
        count = torch.full((1,), x.numel() / c, dtype=x.dtype, device=x.device)
        first = all_reduce(torch.cat([x.sum(dims), count]))
        n = first[c]
        mean = first[:c] / n
        centred = x - mean.reshape(1, c, 1, 1)
        var = all_reduce((centred * centred).sum(dims)) / n  # two passes: no cancellation
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_(var.detach() * n / max(float(n) - 1, 1.0), m)
        out = centred / torch.sqrt(var + self.eps).reshape(1, c, 1, 1)
        if self.affine:
            out = out * self.weight.reshape(1, c, 1, 1) + self.bias.reshape(1, c, 1, 1)
        return out


def globalize_batch_norm(model: nn.Module) -> nn.Module:
    """Every BatchNorm2d of ``model`` made a ``GlobalBatchNorm2d`` in place (same parameters and buffers)."""
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = GlobalBatchNorm2d
    return model


def wrap(model: nn.Module, g: Group) -> nn.Module:
    """The module the training step calls: DistributedDataParallel over ``model`` in a multi-process run.
    Buffers are not broadcast: snnTorch's neurons keep per-batch state there, and batch norm's statistics are
    already the same everywhere (global)."""
    if not g.active:
        return model
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    ids = [g.device.index] if g.device.type == "cuda" else None
    # newer torch names the option forward_sync_buffers (module states still synced once, at the start: equal)
    option = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
              else "broadcast_buffers")
    return DistributedDataParallel(globalize_batch_norm(model), device_ids=ids, **{option: False})


def autocast(device: torch.device, amp: str | None):
    """Mixed precision for the forward pass: bf16 or fp16 autocast on CUDA (refused elsewhere)."""
    from contextlib import nullcontext

    if amp is None:
        return nullcontext()
    if device.type != "cuda":
        raise SpikediffError(f"--amp {amp}: mixed precision is for CUDA devices; this run is on {device}")
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
