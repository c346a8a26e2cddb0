"""Data-parallel training across processes (``torchrun``), on one machine or many.

Launch any shopseq training unchanged under torchrun::

    torchrun --nproc_per_node 2 -m shopseq.cli.main train --model sasrec
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29400 \\
        -m shopseq.cli.main train --model sasrec

torchrun sets ``RANK`` / ``WORLD_SIZE`` / ``MASTER_ADDR`` ...; ``init_from_env`` joins the group
(gloo on CPU, nccl when CUDA is present) with a timeout, so a dead peer makes the others fail
with an error instead of hanging. How the work is split (see ``Trainer``):

* every rank builds the same epoch plan (same seed) and takes rows ``rank::world_size`` of each
  global batch, so the ranks together see exactly the batches a single process would;
* after ``backward`` the gradients are summed across ranks in ONE flattened all-reduce and divided
  by the world size; each rank's loss is normalised by its share of the batch, so the averaged
  gradient equals the single-process gradient of the same global batch (up to float summation
  order). This is what ``DistributedDataParallel`` does, written out: the models train through
  ``training_terms`` rather than ``forward``, and a rank may get no rows of a small last batch
  and must still join the all-reduce, which DDP's forward hooks do not allow;
* rank 0 validates, decides early stopping and broadcasts the decision; only rank 0 writes
  checkpoints and run directories.
"""

from __future__ import annotations

import atexit
import datetime as dt
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["LOCAL", "DistContext", "init_from_env"]


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, rows: Any) -> Any:
        """This rank's share of one global batch's rows."""
        return rows[self.rank::self.world_size] if self.active else rows

    def broadcast_parameters(self, module: nn.Module) -> None:
        """Start every rank from rank 0's weights (seeded init already agrees; this makes it certain)."""
        if self.active:
            for tensor in module.state_dict().values():
                dist.broadcast(tensor, src=0)

    def average_gradients(self, module: nn.Module) -> None:
        """Sum the gradients of all ranks in one flattened all-reduce, then divide by the world size.
        Parameters without a gradient on this rank (e.g. an empty shard) contribute zeros."""
        if not self.active:
            return
        params = [p for p in module.parameters() if p.requires_grad]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(self.world_size)
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset:offset + n].view_as(p).clone()
            offset += n

    def sum(self, *values: float) -> list[float]:
        """Element-wise sum of a few numbers over all ranks (loss and target counts for the log)."""
        if not self.active:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (validation metrics, the early-stopping decision)."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


LOCAL = DistContext()


def init_from_env(timeout_s: float | None = None) -> DistContext:
    """Join the process group torchrun describes in the environment; a single process otherwise.

    ``timeout_s`` (default ``SHOPSEQ_DIST_TIMEOUT`` or 120 s) bounds every collective: a rank whose
    peer died raises instead of waiting for ever, and torchrun then stops the job."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return LOCAL
    if not dist.is_initialized():
        seconds = timeout_s if timeout_s is not None else float(os.environ.get("SHOPSEQ_DIST_TIMEOUT", "120"))
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend, timeout=dt.timedelta(seconds=seconds))
        # Tear the group down while the interpreter is still whole: left to finalisation, gloo's
        # worker threads can abort the process ("terminate called without an active exception")
        atexit.register(_destroy_group)
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size())


def _destroy_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
