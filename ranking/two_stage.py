"""Two-stage recommendation: retriever candidates → ranker scores → top-k.

The ranker scores each candidate given the user's history (the same history the retriever
saw); already-seen items are dropped when ``exclude_seen`` is on, and the remaining candidates
are sorted by the ranker's click probability (stable on ties, so the retriever's order breaks
them). ``rerank_reference`` is a per-user loop used as the test oracle of the batched version.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch import nn

from ranking.features import FEEDBACK_NEG, FEEDBACK_POS, history_arrays


@dataclass
class FeedbackLookup:
    """Label of a (user, item) interaction, from ``ratings.parquet``; unknown pairs → liked."""

    keys: np.ndarray  # sorted int64 user * n_items + item
    codes: np.ndarray  # feedback code per key
    n_items: int

    @classmethod
    def from_store(cls, users: np.ndarray, items: np.ndarray, labels: np.ndarray, n_items: int) -> "FeedbackLookup":
        keys = users.astype(np.int64) * n_items + items.astype(np.int64)
        # Keep the last occurrence of a repeated pair: the most recent opinion.
        order = np.argsort(keys, kind="stable")[::-1]
        uniq, first = np.unique(keys[order], return_index=True)
        codes = np.where(labels[order][first] > 0.5, FEEDBACK_POS, FEEDBACK_NEG).astype(np.int64)
        return cls(keys=uniq, codes=codes, n_items=n_items)

    def __call__(self, user: int, items: np.ndarray) -> np.ndarray:
        keys = int(user) * self.n_items + np.asarray(items, dtype=np.int64)
        if not len(self.keys):
            return np.full(len(keys), FEEDBACK_POS, dtype=np.int64)
        pos = np.clip(np.searchsorted(self.keys, keys), 0, len(self.keys) - 1)
        found = self.keys[pos] == keys
        return np.where(found, self.codes[pos], FEEDBACK_POS).astype(np.int64)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` torch CPU threads (0 = unchanged), restoring the setting after.

    Scoring a few hundred rows is dominated by thread hand-offs: on a shared 2-core machine one
    thread scored 50 candidates in 2 ms against 400 ms with two.
    """
    previous = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@torch.no_grad()
def score_candidates(
    *,
    model: nn.Module,
    users: np.ndarray,
    histories: list[np.ndarray],
    feedback: list[np.ndarray],
    candidates: list[np.ndarray],
    history_len: int,
    device: str = "cpu",
    batch_size: int = 8192,
) -> list[np.ndarray]:
    """Click probability of every candidate of every user (lists aligned with ``candidates``)."""
    model.eval()
    n = len(users)
    hist = np.zeros((n, history_len), dtype=np.int64)
    fb = np.zeros((n, history_len), dtype=np.int64)
    mask = np.zeros((n, history_len), dtype=bool)
    for i in range(n):
        hist[i], fb[i], mask[i] = history_arrays(histories[i], feedback[i], history_len)
    lengths = np.array([len(c) for c in candidates], dtype=np.int64)
    owner = np.repeat(np.arange(n), lengths)
    flat = np.concatenate([np.asarray(c, dtype=np.int64) for c in candidates]) if n else np.zeros(0, np.int64)
    probs = np.empty(len(flat), dtype=np.float64)
    for start in range(0, len(flat), batch_size):
        rows = owner[start : start + batch_size]
        logits = model(
            users=torch.as_tensor(np.asarray(users, dtype=np.int64)[rows], device=device),
            items=torch.as_tensor(flat[start : start + batch_size], device=device),
            hist_items=torch.as_tensor(hist[rows], device=device),
            hist_feedback=torch.as_tensor(fb[rows], device=device),
            hist_mask=torch.as_tensor(mask[rows], device=device),
        )
        probs[start : start + len(rows)] = torch.sigmoid(logits.double()).cpu().numpy()
    return np.split(probs, np.cumsum(lengths)[:-1]) if n else []


def order_candidates(
    candidates: np.ndarray, scores: np.ndarray, *, seen: np.ndarray | None, k: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct candidates by descending score (ties: candidate order), minus seen items."""
    candidates = np.asarray(candidates, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    _, first = np.unique(candidates, return_index=True)
    keep = np.zeros(len(candidates), dtype=bool)
    keep[first] = True  # a repeated candidate keeps its first (best-retrieved) slot
    keep &= candidates >= 0
    if seen is not None and len(seen):
        keep &= ~np.isin(candidates, seen)
    idx = np.flatnonzero(keep)
    idx = idx[np.argsort(-scores[idx], kind="stable")]
    if k is not None:
        idx = idx[:k]
    return candidates[idx], scores[idx]


def fuse_scores(retriever_scores: np.ndarray, probs: np.ndarray, alpha: float) -> np.ndarray:
    """``alpha · z(ranker logit) + (1 − alpha) · z(retriever score)`` within one candidate list.

    Both scores are standardised over the list (a constant score becomes 0) because they live on
    unrelated scales (sequence log-probability vs click logit). ``alpha = 1`` orders exactly by
    the ranker, ``alpha = 0`` keeps the retriever's order.
    """
    def z(values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        finite = np.isfinite(values)
        if not finite.any():
            return np.zeros_like(values)
        values = np.where(finite, values, values[finite].min())
        std = values.std()
        return (values - values.mean()) / std if std > 0 else np.zeros_like(values)

    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1 - 1e-12)
    logits = np.log(p) - np.log1p(-p)
    if alpha >= 1.0:
        return z(logits)
    return alpha * z(logits) + (1.0 - alpha) * z(retriever_scores)


def rank_lists(
    *, candidates: list[np.ndarray], scores: list[np.ndarray], histories: list[np.ndarray], exclude_seen: bool
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Order every user's candidates by ``scores`` (distinct, seen items dropped if asked)."""
    items_out, scores_out = [], []
    for cand, sc, hist in zip(candidates, scores, histories):
        items, ordered = order_candidates(cand, sc, seen=np.asarray(hist) if exclude_seen else None)
        items_out.append(items)
        scores_out.append(ordered)
    return items_out, scores_out


def rerank(
    *,
    model: nn.Module,
    users: np.ndarray,
    histories: list[np.ndarray],
    feedback: list[np.ndarray],
    candidates: list[np.ndarray],
    history_len: int,
    exclude_seen: bool,
    retriever_scores: list[np.ndarray] | None = None,
    alpha: float = 1.0,
    device: str = "cpu",
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Re-ranked candidate lists and their ordering scores, one pair per user.

    With ``alpha = 1`` (or no retriever scores) the ordering score is the ranker's probability;
    otherwise it is :func:`fuse_scores`.
    """
    probs = score_candidates(
        model=model, users=users, histories=histories, feedback=feedback,
        candidates=candidates, history_len=history_len, device=device,
    )
    if retriever_scores is not None and alpha < 1.0:
        probs = [fuse_scores(r, p, alpha) for r, p in zip(retriever_scores, probs)]
    return rank_lists(candidates=candidates, scores=probs, histories=histories, exclude_seen=exclude_seen)


@torch.no_grad()
def rerank_reference(
    *,
    model: nn.Module,
    users: np.ndarray,
    histories: list[np.ndarray],
    feedback: list[np.ndarray],
    candidates: list[np.ndarray],
    history_len: int,
    exclude_seen: bool,
) -> list[list[tuple[int, float]]]:
    """Obviously correct oracle: one forward per (user, candidate), Python sort; each user's
    ``(item, logit)`` pairs, best first."""
    model.eval()
    out = []
    for user, hist, fb, cand in zip(users, histories, feedback, candidates):
        h, f, m = history_arrays(hist, fb, history_len)
        scored: dict[int, float] = {}
        for item in cand:
            item = int(item)
            if item < 0 or item in scored or (exclude_seen and item in set(int(x) for x in hist)):
                continue
            logit = model(
                users=torch.tensor([int(user)]), items=torch.tensor([item]),
                hist_items=torch.as_tensor(h)[None], hist_feedback=torch.as_tensor(f)[None],
                hist_mask=torch.as_tensor(m)[None],
            )
            scored[item] = float(logit)
        out.append(sorted(scored.items(), key=lambda pair: -pair[1]))
    return out


def pad_lists(lists: list[np.ndarray], width: int) -> np.ndarray:
    """[U, width] int64 array, -1 where a list is shorter (ranking_metrics' empty slot)."""
    out = np.full((len(lists), width), -1, dtype=np.int64)
    for i, items in enumerate(lists):
        items = np.asarray(items, dtype=np.int64)[:width]
        out[i, : len(items)] = items
    return out
