"""Sharding items across processes started by `torchrun`.

Rank r encodes the items i with i % world_size == r and writes its own shards; rank 0 waits for
everyone, then merges. Only barriers cross process boundaries, so the gloo backend suffices on
CPU and GPU alike.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta


@dataclass
class Workers:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False
    """True when this module created the process group (and so must destroy it)."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.owns_group = False


def join_workers(*, timeout_s: float = 6 * 3600) -> Workers:
    """Join the torchrun process group if there is one; a single process otherwise.

    The timeout is long because rank 0 waits at the barrier until the slowest rank has encoded
    its share of the catalogue.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Workers(
            rank=dist.get_rank(),
            world_size=dist.get_world_size(),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        )
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Workers()
    dist.init_process_group(backend="gloo", timeout=timedelta(seconds=timeout_s))
    return Workers(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        owns_group=True,
    )
