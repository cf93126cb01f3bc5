"""Multi-process data parallelism (PyTorch DDP) for the retriever.

Launch with ``torchrun --nproc_per_node N ...``: torchrun sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` then joins the
process group (NCCL on GPUs, gloo on CPU). Without those variables everything here is a no-op
single-process context, so the same training code runs either way.

Division of labour: every rank trains on its shard of each epoch's permutation
(:func:`generative_rec.data.epoch_order`), gradients are averaged by DDP, validation users are
decoded in shards and gathered so that every rank takes the same model-selection decision, and
only rank 0 writes files.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init_distributed(device: str) -> DistContext:
    """Join the process group when launched by torchrun (idempotent); else a 1-process context."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(),
                           int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    if not launched_by_torchrun():
        return DistContext()
    backend = "nccl" if device.startswith("cuda") else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    ctx = DistContext(dist.get_rank(), dist.get_world_size(), local_rank)
    log.info("joined process group: rank %d of %d (%s)", ctx.rank, ctx.world_size, backend)
    return ctx


def rank_device(device: str, ctx: DistContext) -> str:
    """One GPU per process under torchrun (``cuda:LOCAL_RANK``)."""
    if ctx.enabled and device == "cuda":
        return f"cuda:{ctx.local_rank}"
    return device


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def shard_indices(n: int, ctx: DistContext) -> np.ndarray:
    """Row indices this rank handles in a sharded pass over ``n`` rows (strided)."""
    return np.arange(ctx.rank, n, ctx.world_size) if ctx.enabled else np.arange(n)


def gather_rows(local: np.ndarray, n: int, ctx: DistContext) -> np.ndarray:
    """Inverse of :func:`shard_indices`: every rank gets all ``n`` rows in their original order."""
    if not ctx.enabled:
        return local
    parts: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(parts, local)
    out = np.empty((n, *local.shape[1:]), dtype=local.dtype)
    for r, part in enumerate(parts):
        out[np.arange(r, n, ctx.world_size)] = part
    return out


def broadcast_flag(value: bool, ctx: DistContext) -> bool:
    """Rank 0's ``value`` on every rank (so that all ranks take the same branch)."""
    if not ctx.enabled:
        return value
    t = torch.tensor([float(value)])
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.broadcast(t, src=0)
    return bool(t.item())


def all_reduce_mean(value: float, ctx: DistContext) -> float:
    if not ctx.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return float(t.item()) / ctx.world_size
