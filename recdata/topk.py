"""Top-k selection over a full catalogue, with ties that earn no credit.

Every full-ranking system (most-popular, SASRec, BBQRec) picks its lists here. Equal scores are
ordered by a seeded hash of (user, item) rather than by item index: item indices follow first
appearance, which correlates with popularity, so an index tie-break hands a constant-score
model the popular items and real hits. Under the hash a constant model ranks like a random
list, and the order still depends only on (seed, user, item), not on the hardware or batching.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from recdata.errors import DataError

TIE_SEED = 0
"""Seed of the tie-break hash shared by every system, so all are ranked under one rule."""

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection on uint64 that scatters neighbouring inputs."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def tie_keys(users: np.ndarray, items: np.ndarray, *, seed: int = TIE_SEED) -> np.ndarray:
    """Pseudo-random uint64 key of every (user, item) pair (broadcast like the inputs)."""
    with np.errstate(over="ignore"):
        u = _mix(np.asarray(users, dtype=np.uint64) + np.uint64(seed) * _GOLDEN)
        return _mix(u ^ (np.asarray(items, dtype=np.uint64) * _GOLDEN))


def top_k(
    scores: np.ndarray,
    *,
    k: int,
    users: np.ndarray | None = None,
    exclude: Sequence[np.ndarray] | None = None,
    seed: int = TIE_SEED,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` item indices of each row of ``scores`` [B, N], best first, and their scores.

    ``users[b]`` is row ``b``'s user index (default: the row number); equal scores are ordered
    by :func:`tie_keys`. ``exclude[b]`` lists items removed from row ``b``. Rows with fewer than
    ``k`` rankable items are padded with ``-1`` / ``-inf``.
    """
    scores = np.array(scores, dtype=np.float64, copy=True)
    if scores.ndim != 2:
        raise DataError(f"scores must be a 2-D array [users, items], got shape {scores.shape}")
    n_rows, n_items = scores.shape
    if exclude is not None:
        for row, items in enumerate(exclude):
            scores[row, np.asarray(items, dtype=np.int64)] = -np.inf
    users = np.arange(n_rows) if users is None else np.asarray(users, dtype=np.int64)
    k_eff = min(k, n_items)
    order = np.empty((n_rows, k_eff), dtype=np.int64)
    if k_eff == 0:
        top_scores = np.empty((n_rows, 0))
    else:
        # Only the items scoring at least the k-th best score can enter a list: sort those.
        part = np.argpartition(-scores, k_eff - 1, axis=1)[:, :k_eff]
        kth = np.take_along_axis(scores, part, axis=1).min(axis=1)
        for row in range(n_rows):
            cand = np.flatnonzero(scores[row] >= kth[row])
            keys = tie_keys(users[row], cand, seed=seed)
            order[row] = cand[np.lexsort((keys, -scores[row, cand]))[:k_eff]]
        top_scores = np.take_along_axis(scores, order, axis=1)
    order = np.where(np.isneginf(top_scores), -1, order)
    if k_eff < k:
        pad = k - k_eff
        order = np.pad(order, ((0, 0), (0, pad)), constant_values=-1)
        top_scores = np.pad(top_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
    return order.astype(np.int64), top_scores


def top_k_reference(
    scores: np.ndarray, *, k: int, users: np.ndarray | None = None,
    exclude: Sequence[np.ndarray] | None = None, seed: int = TIE_SEED,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`top_k` as one full sort per row: the slow, obviously correct oracle."""
    scores = np.array(scores, dtype=np.float64, copy=True)
    n_rows, n_items = scores.shape
    if exclude is not None:
        for row, items in enumerate(exclude):
            scores[row, np.asarray(items, dtype=np.int64)] = -np.inf
    users = np.arange(n_rows) if users is None else np.asarray(users, dtype=np.int64)
    items, values = [], []
    for row in range(n_rows):
        ranked = sorted(range(n_items), key=lambda i: (-scores[row, i],
                                                       int(tie_keys(users[row], i, seed=seed))))
        ranked = [i for i in ranked[:k] if scores[row, i] != -np.inf]
        items.append(ranked + [-1] * (k - len(ranked)))
        values.append([scores[row, i] for i in ranked] + [-np.inf] * (k - len(ranked)))
    return np.asarray(items, dtype=np.int64).reshape(n_rows, k), np.asarray(values).reshape(n_rows, k)
