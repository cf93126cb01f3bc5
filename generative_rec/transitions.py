"""How often one item directly followed another in the training sequences: the transition prior
that re-orders the retriever's candidates (``RetrieverConfig.priors``).

The retriever's item head learns successions, but on Beauty it still ranks the most recent
item's known successors too low (retriever experiments 36 and 48): adding
``weight * log(1 + count(last item -> candidate))`` to each candidate's score puts them first
among the candidates the search found. Only the candidates are looked up (a binary search
each), so the cost does not grow with the catalogue.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from recdata.errors import DataError
from recdata.io import load_tensor_metadata, load_tensors, save_tensors


@dataclass(frozen=True)
class TransitionCounts:
    """Counts of ordered pairs (item ``i`` directly followed by item ``j``), keyed
    ``i * n_items + j`` and sorted by key."""

    keys: np.ndarray  # int64 [P], sorted, unique
    counts: np.ndarray  # int64 [P], >= 1
    n_items: int

    @classmethod
    def from_sequences(cls, sequences: Iterable[np.ndarray], *, n_items: int) -> "TransitionCounts":
        pairs = [np.asarray(s[:-1], np.int64) * n_items + np.asarray(s[1:], np.int64)
                 for s in sequences if len(s) > 1]
        keys = np.concatenate(pairs) if pairs else np.zeros(0, np.int64)
        keys, counts = np.unique(keys, return_counts=True)
        return cls(keys=keys, counts=counts.astype(np.int64), n_items=int(n_items))

    def lookup(self, *, last: np.ndarray, items: np.ndarray) -> np.ndarray:
        """``[B, K]`` counts of ``last[b] -> items[b, k]``; 0 where either is -1 or an item the
        counts do not know (added after training)."""
        last = np.asarray(last, np.int64)[:, None]
        items = np.asarray(items, np.int64)
        n = self.n_items
        known = (last >= 0) & (last < n) & (items >= 0) & (items < n)
        if len(self.keys) == 0:
            return np.zeros(items.shape, np.int64)
        query = np.where(known, last * n + items, -1)
        pos = np.searchsorted(self.keys, query).clip(max=len(self.keys) - 1)
        return np.where(known & (self.keys[pos] == query), self.counts[pos], 0)

    @cached_property
    def _by_source(self) -> tuple[np.ndarray, np.ndarray]:
        """Successors grouped by source item, most frequent first (ties: lower index first),
        and the ``[n_items + 1]`` group bounds."""
        src, dst = self.keys // self.n_items, self.keys % self.n_items
        order = np.lexsort((dst, -self.counts, src))
        return dst[order], np.searchsorted(src[order], np.arange(self.n_items + 1))

    def successors(self, item: int) -> np.ndarray:
        """Every item that directly followed ``item`` in training, most frequent first."""
        if not 0 <= item < self.n_items:
            return np.zeros(0, np.int64)
        dst, bounds = self._by_source
        return dst[bounds[item] : bounds[item + 1]]

    def save(self, path: Path) -> None:
        save_tensors(path, {"keys": self.keys, "counts": self.counts},
                     metadata={"n_items": str(self.n_items)})

    @classmethod
    def load(cls, path: Path) -> "TransitionCounts":
        tensors = load_tensors(path)
        n_items = int(load_tensor_metadata(path).get("n_items", -1))
        if n_items < 0 or set(tensors) != {"keys", "counts"}:
            raise DataError("not a transition-count file", path=path)
        return cls(keys=tensors["keys"].numpy(), counts=tensors["counts"].numpy(), n_items=n_items)


def last_items(history: np.ndarray) -> np.ndarray:
    """``[E]``: the most recent item of each right-padded history row (-1 = empty row)."""
    return recent_items(history, 1)[:, 0]


def recent_items(history: np.ndarray, n: int) -> np.ndarray:
    """``[E, n]``: the ``n`` most recent items of each right-padded history row, most recent
    first (-1 past the row's length)."""
    history = np.asarray(history)
    length = (history >= 0).sum(1)
    back = length[:, None] - 1 - np.arange(n)[None, :]
    picked = history[np.arange(len(history))[:, None], np.maximum(back, 0)]
    return np.where(back >= 0, picked, -1)


def append_candidates(*, items: np.ndarray, scores: np.ndarray,
                      proposals: Callable[[int], np.ndarray],
                      m: int) -> tuple[np.ndarray, np.ndarray]:
    """Append to each row of ``items``/``scores`` (``[E, K]``, -1 = empty slot) up to ``m`` of
    ``proposals(row)`` (best first) that the row lacks, as ``[E, K + m]``. They have no model
    score: each gets one below the row's lowest, in proposal order, so among candidates a prior
    scores alike the search's come first, and a prior must lift them past the search's own."""
    extra_items = np.full((len(items), m), -1, dtype=items.dtype)
    extra_scores = np.full((len(items), m), -np.inf, dtype=scores.dtype)
    for row in range(len(items)):
        present = items[row] >= 0
        found = items[row][present]
        floor = float(scores[row][present].min()) - 1.0 if len(found) else 0.0
        have = set(found.tolist())
        new = [j for j in np.asarray(proposals(row))[: m + len(found)].tolist()
               if j not in have][:m]
        extra_items[row, : len(new)] = new
        extra_scores[row, : len(new)] = floor - 1e-3 * np.arange(len(new))
    return np.concatenate([items, extra_items], 1), np.concatenate([scores, extra_scores], 1)


def add_successors(*, items: np.ndarray, scores: np.ndarray, last: np.ndarray,
                   transitions: TransitionCounts, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Append to each row of ``items``/``scores`` (``[E, K]``) up to ``m`` of its most recent
    item's most frequent training successors that the row lacks (:func:`append_candidates`);
    :func:`rerank_with_transitions` then orders them by their counts."""
    return append_candidates(items=items, scores=scores, m=m,
                             proposals=lambda row: transitions.successors(int(last[row])))


def rerank_with_transitions(*, items: np.ndarray, scores: np.ndarray, last: np.ndarray,
                            transitions: TransitionCounts,
                            weight: float) -> tuple[np.ndarray, np.ndarray]:
    """Re-order each row of ``items``/``scores`` (``[E, K]``, -1 = empty slot) by
    ``score + weight * log(1 + count(last -> item))``; empty slots stay last, equal scores keep
    their order."""
    counts = transitions.lookup(last=last, items=items)
    combined = np.where(items >= 0, scores.astype(np.float64) + weight * np.log1p(counts), -np.inf)
    order = np.argsort(-combined, axis=1, kind="stable")
    return (np.take_along_axis(items, order, axis=1),
            np.take_along_axis(combined, order, axis=1).astype(scores.dtype))
