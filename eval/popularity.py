"""Most-popular baseline: every user gets the catalogue ranked by training interactions."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from recdata.topk import top_k


def popularity_ranking(
    *,
    train_counts: np.ndarray,
    n_users: int,
    depth: int,
    exclude: Sequence[np.ndarray] | None = None,
    chunk: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Ranked lists [n_users, depth] and their scores (the training counts).

    Items with equal counts are ordered per user by :func:`recdata.topk.top_k`'s seeded hash,
    as every system's ties are. With ``exclude`` each user's listed items are skipped; lists are
    padded with ``-1`` when the catalogue runs out.
    """
    counts = np.asarray(train_counts, dtype=np.float64)
    ranked = np.full((n_users, depth), -1, dtype=np.int64)
    scores = np.full((n_users, depth), -np.inf)
    for lo in range(0, n_users, chunk):
        hi = min(lo + chunk, n_users)
        block = np.broadcast_to(counts, (hi - lo, len(counts)))
        ranked[lo:hi], scores[lo:hi] = top_k(
            block, k=depth, users=np.arange(lo, hi),
            exclude=None if exclude is None else exclude[lo:hi])
    return ranked, scores
