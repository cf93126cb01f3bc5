"""Ranked lists and their parquet artefacts (top-k selection itself: :mod:`recdata.topk`).

Every system's test ranking is stored as ``user_idx, split, items (list[int]), scores
(list[float])`` — the same columns as the retriever's ``candidates.parquet`` — so one reader
serves them all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence
from typing import Sequence

import numpy as np
import polars as pl

from recdata.errors import DataError
from recdata.io import read_parquet, write_parquet


def write_ranked(
    path: str | Path, *, users: np.ndarray, items: np.ndarray, scores: np.ndarray,
    split: str = "test",
) -> Path:
    """Store ranked lists (one row per user; ``-1`` padding is dropped)."""
    items_l, scores_l = [], []
    for row_items, row_scores in zip(np.asarray(items), np.asarray(scores, dtype=np.float64)):
        keep = row_items >= 0
        items_l.append(row_items[keep].astype(np.int64).tolist())
        scores_l.append(row_scores[keep].astype(np.float64).tolist())
    frame = pl.DataFrame(
        {
            "user_idx": np.asarray(users, dtype=np.int64),
            "split": [split] * len(items_l),
            "items": items_l,
            "scores": scores_l,
        },
        schema={
            "user_idx": pl.Int64, "split": pl.Utf8, "items": pl.List(pl.Int64),
            "scores": pl.List(pl.Float64),
        },
    )
    return write_parquet(path, frame)


def read_ranked(
    path: str | Path, *, n_users: int, depth: int, split: str = "test"
) -> tuple[np.ndarray, int]:
    """Ranked lists of ``split`` as a dense [n_users, depth] array (row = user_idx).

    Users absent from the file get an all ``-1`` row (counted as empty, hence as misses and
    invalid slots, never silently dropped). Returns ``(ranked, n_missing_users)``.
    """
    frame = read_parquet(path)
    for column in ("user_idx", "items"):
        if column not in frame.columns:
            raise DataError(f"ranked lists lack the column {column!r}", path=path)
    if "split" in frame.columns:
        frame = frame.filter(pl.col("split") == split)
    ranked = np.full((n_users, depth), -1, dtype=np.int64)
    seen = np.zeros(n_users, dtype=bool)
    for row, (user, items) in enumerate(zip(frame["user_idx"].to_list(), frame["items"].to_list())):
        if user is None or not 0 <= user < n_users:
            raise DataError(f"user_idx {user} outside [0, {n_users})", path=path, row=row)
        if seen[user]:
            raise DataError(f"user_idx {user} appears twice in split {split!r}", path=path, row=row)
        seen[user] = True
        items = [(-1 if i is None else int(i)) for i in (items or [])][:depth]
        ranked[user, : len(items)] = items
    return ranked, int((~seen).sum())


def drop_seen(ranked: np.ndarray, histories: Sequence[np.ndarray], *, depth: int) -> tuple[np.ndarray, int]:
    """Each row without its user's history items, cut to ``depth`` (``-1`` padded).

    For systems whose stored lists were not filtered when they were made (the generative
    retriever's beam output). Returns the lists and the number of rows left shorter than
    ``depth`` (their empty slots count as misses and invalid slots).
    """
    out = np.full((len(ranked), depth), -1, dtype=np.int64)
    short = 0
    for row, (items, seen) in enumerate(zip(ranked, histories)):
        items = items[items >= 0]
        kept = items[~np.isin(items, seen)][:depth]
        out[row, : len(kept)] = kept
        short += int(len(kept) < depth)
    return out, short
