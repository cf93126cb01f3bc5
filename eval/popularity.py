"""Most-popular baseline: every user gets the catalogue ranked by training interactions."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def popularity_order(train_counts: np.ndarray) -> np.ndarray:
    """Item indices by descending training count, ties by ascending item index."""
    counts = np.asarray(train_counts, dtype=np.int64)
    return np.lexsort((np.arange(len(counts)), -counts))


def popularity_ranking(
    *,
    train_counts: np.ndarray,
    n_users: int,
    depth: int,
    exclude: Sequence[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Ranked lists [n_users, depth] and their scores (the training counts).

    With ``exclude`` each user's listed items are skipped; lists are padded with ``-1`` when the
    catalogue runs out.
    """
    counts = np.asarray(train_counts, dtype=np.int64)
    order = popularity_order(counts)
    ranked = np.full((n_users, depth), -1, dtype=np.int64)
    if exclude is None:
        head = order[:depth]
        ranked[:, : len(head)] = head
    else:
        for user, items in enumerate(exclude):
            # Only the first depth + |history| popular items can survive the filter.
            window = order[: depth + len(items)]
            kept = window[~np.isin(window, items)][:depth]
            ranked[user, : len(kept)] = kept
    scores = np.where(ranked >= 0, counts[np.maximum(ranked, 0)], -np.inf).astype(np.float64)
    return ranked, scores
