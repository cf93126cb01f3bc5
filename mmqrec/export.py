"""Batch export: top-k recommendations for every user (or a listed subset) to one parquet file.

One row per (user, rank): ``user_id, rank (1-based), item_id, score, p_like, semantic_id``.
Users are processed in chunks through :class:`mmqrec.Recommender` (both models batched), with
progress in the log; ``workers`` chunks are recommended side by side, each on torch's intra-op
threads (one by default: see :mod:`recdata.threads`). Under ``torchrun`` each process takes every world_size-th chunk, writes its
own shard next to the output, and rank 0 merges the shards in user order once all are done; the
final file is written atomically either way.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import polars as pl

from generative_rec.ddp import barrier, init_distributed, rank_device
from mmqrec.recommender import Recommender
from recdata.errors import DataError
from recdata.io import read_parquet, write_parquet
from recdata.runtime import progress

log = logging.getLogger(__name__)

SCHEMA = {"user_id": pl.String, "rank": pl.Int32, "item_id": pl.String, "score": pl.Float64,
          "p_like": pl.Float64, "semantic_id": pl.List(pl.Int64)}


def read_user_list(path: Path) -> list[str]:
    """User ids from a text file, one per line (blank lines and ``#`` comments skipped)."""
    if not path.exists():
        raise DataError("users file not found", path=path)
    users = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            users.append(line)
    if not users:
        raise DataError("no user ids in the file", path=path)
    return users


def _rows(results: list[Any]) -> pl.DataFrame:
    cols: dict[str, list] = {name: [] for name in SCHEMA}
    for result in results:
        for rank, item in enumerate(result.items, start=1):
            cols["user_id"].append(result.user_id)
            cols["rank"].append(rank)
            cols["item_id"].append(item["item_id"])
            cols["score"].append(item["score"])
            cols["p_like"].append(item["p_like"])
            cols["semantic_id"].append(item["semantic_id"])
    return pl.DataFrame(cols, schema=SCHEMA)


def export_recommendations(
    *, run_dir: Path, out: Path, k: int = 10, users_file: Path | None = None,
    exclude_seen: bool = True, chunk_size: int = 256, device: str = "auto",
    workers: int | None = None,
) -> dict[str, Any]:
    """Write ``out`` (parquet) and return a summary ``{users, rows, seconds, out}``.

    ``workers``: chunks recommended side by side (default: one per usable core).
    """
    from recdata.threads import usable_cores

    if chunk_size < 1:
        raise DataError(f"chunk size must be positive, got {chunk_size}")
    if workers is not None and workers < 1:
        raise DataError(f"workers must be positive, got {workers}")
    workers = workers or usable_cores()
    if out.suffix != ".parquet":
        raise DataError("the export is a parquet file: give --out FILE.parquet", path=out)
    t0 = time.perf_counter()
    from recdata.runtime import resolve_device

    device = resolve_device(device)
    ctx = init_distributed(device)
    rec = Recommender.load(run_dir, device=rank_device(device, ctx))
    users = read_user_list(users_file) if users_file is not None else list(rec.user_ids)
    for user in users:
        rec.user_idx(user)  # an unknown id fails before any work, with its name
    # Chunks no larger than an even share per worker, so that every worker has work.
    chunk_size = max(1, min(chunk_size, -(-len(users) // workers)))
    chunks = [users[i: i + chunk_size] for i in range(0, len(users), chunk_size)]
    mine = list(range(ctx.rank, len(chunks), ctx.world_size))
    frames = []
    log.info("recommending for %d users in %d chunks, %d side by side", len(users), len(mine),
             workers)
    with progress(total=len(users) if not ctx.enabled else sum(len(chunks[c]) for c in mine),
                  desc="recommend export", unit="user") as bar, \
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mmqrec-export") as pool:
        running = [(c, pool.submit(rec.recommend, chunks[c], k=k, exclude_seen=exclude_seen))
                   for c in mine]
        for c, future in running:  # in user order, whichever finishes first
            frames.append(_rows(future.result()))
            bar.update(len(chunks[c]))
    local = pl.concat(frames) if frames else pl.DataFrame(schema=SCHEMA)
    out.parent.mkdir(parents=True, exist_ok=True)
    if ctx.enabled:
        shard = out.with_name(f"{out.stem}.rank{ctx.rank}-of-{ctx.world_size}.parquet")
        write_parquet(shard, local)
        barrier(ctx)
        if ctx.is_main:
            shards = [out.with_name(f"{out.stem}.rank{r}-of-{ctx.world_size}.parquet")
                      for r in range(ctx.world_size)]
            order = {user: i for i, user in enumerate(users)}
            merged = pl.concat([read_parquet(p) for p in shards])
            merged = merged.with_columns(
                pl.col("user_id").replace_strict(order, return_dtype=pl.Int64).alias("_order")
            ).sort(["_order", "rank"]).drop("_order")
            write_parquet(out, merged)
            for p in shards:
                p.unlink()
            local = merged
        barrier(ctx)
    else:
        write_parquet(out, local)
    summary = {"users": len(users), "rows": int(local.height) if ctx.is_main else None,
               "k": k, "exclude_seen": exclude_seen, "processes": ctx.world_size,
               "seconds": round(time.perf_counter() - t0, 2), "out": str(out)}
    log.info("wrote %s rows for %d users to %s in %.1f s", summary["rows"], len(users), out,
             summary["seconds"])
    return summary
