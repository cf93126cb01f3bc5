"""Items the retriever never trained on — cold items, items added with ``mmqrec add-items`` —
and the candidate channel that lets them reach the lists.

The model never saw such an item as a target, so its search almost never lists one: on
ml-100k's cold-start protocol the retriever's cold-target R@10 was 0, while a content-only rule
reached .0357. The channel offers each user the untrained items that are among the ``m`` items
of the whole catalogue closest by content to the most recent item (a near duplicate, a sequel:
strong evidence only — offering the nearest untrained items however far cost the other users
without reaching the cold targets, experiment 64), and gives each an imputed score: the score
of its nearest *trained* item that is already in the list (an item no one has interacted with
yet is expected to do as well as the trained item it most resembles), or, when none of those
is listed, a score below the whole list (only the content prior can then lift it). The
transition and content priors then treat it like any other candidate.

Validation users cannot tune this channel: their targets all have training interactions. So
its width is a fixed setting (``priors.untrained_candidates``), and the cold-start benchmark
measures both what it gains on cold targets and what it costs everyone else.

Cost per user: one row of the table and a lookup of each proposal's trained neighbours in the
list; it does not grow with the catalogue. The tables are built when a run is loaded (or items
are added), at a cost of (catalogue × untrained items).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from generative_rec.config import UNTRAINED_NEIGHBOURS
from generative_rec.content import ContentVectors

# How many trained neighbours of an untrained item may lend it their score.
ANCHORS = 8


@dataclass(frozen=True)
class UntrainedItems:
    """The untrained items of a catalogue and the content tables the channel reads."""

    untrained: np.ndarray  # bool [N]
    anchors: np.ndarray  # int64 [N, ANCHORS]: an untrained item's nearest trained items, -1 = none
    nearest: np.ndarray  # int64 [N, UNTRAINED_NEIGHBOURS]: column r holds item i's r-th
    #                      nearest item of the whole catalogue when it is untrained, else -1

    @property
    def count(self) -> int:
        return int(self.untrained.sum())

    @classmethod
    def build(cls, *, content: ContentVectors, trained: np.ndarray,
              chunk: int = 2048) -> "UntrainedItems":
        """From the catalogue's content (:class:`ContentVectors`; the neighbour rows of items
        added after training are empty) and the mask of items with training interactions.
        Cost: (catalogue × untrained items), plus (added items × catalogue)."""
        vectors = content.vectors
        trained = np.asarray(trained, bool)
        n, width = len(vectors), UNTRAINED_NEIGHBOURS
        untrained = ~trained
        has_content = np.abs(vectors).sum(1) > 0
        anchors = np.full((n, ANCHORS), -1, np.int64)
        nearest = np.full((n, width), -1, np.int64)
        cold = np.flatnonzero(untrained & has_content)
        warm = np.flatnonzero(trained & has_content)
        if not len(cold):
            return cls(untrained=untrained, anchors=anchors, nearest=nearest)
        if len(warm):
            anchors[cold] = _top(vectors[cold], vectors[warm], warm, ANCHORS, exclude=None, chunk=chunk)
        # Each item's nearest items of the whole catalogue: the trained catalogue's neighbour
        # table merged with its nearest untrained items (added items are not in that table);
        # the rows of added items, which have no table row, by brute force.
        rows = np.flatnonzero(has_content)
        known = content.neighbours[:, :width].copy()
        blank = rows[known[rows, 0] < 0]
        if len(blank):
            known[blank] = _top(vectors[blank], vectors[rows], rows, width, exclude=blank,
                                chunk=chunk, positive=False)
        near_cold = np.full((n, width), -1, np.int64)
        near_cold[rows] = _top(vectors[rows], vectors[cold], cold, width, exclude=rows, chunk=chunk,
                               positive=False)
        twice = (near_cold[:, :, None] == known[:, None, :]).any(-1)
        ids = np.concatenate([known, np.where(twice, -1, near_cold)], 1)
        sims = np.einsum("nd,nkd->nk", vectors, vectors[np.maximum(ids, 0)])
        sims = np.where(ids >= 0, sims, -np.inf)
        order = np.argsort(-sims, axis=1, kind="stable")[:, :width]
        top = np.take_along_axis(ids, order, 1)
        nearest[rows] = np.where((top >= 0) & untrained[np.maximum(top, 0)], top, -1)[rows]
        return cls(untrained=untrained, anchors=anchors, nearest=nearest)

    def propose(self, *, items: np.ndarray, scores: np.ndarray, last: np.ndarray,
                m: int) -> tuple[np.ndarray, np.ndarray]:
        """Append to each row of ``items``/``scores`` (``[E, K]``, -1 = empty slot) the
        untrained items among the ``m`` items of the whole catalogue nearest to the row's
        ``last`` item that it lacks, each scored as its nearest listed trained item (else one
        below the row's lowest score), and re-sort the rows by score (stable: a proposal comes
        after the trained item it borrows from)."""
        n = len(self.untrained)
        extra_items = np.full((len(items), m), -1, dtype=items.dtype)
        extra_scores = np.full((len(items), m), -np.inf, dtype=scores.dtype)
        last = np.asarray(last, np.int64)
        known = (last >= 0) & (last < n)
        # Only users whose last item has an untrained item near it get a Python-level look.
        offers = known & (self.nearest[np.where(known, last, 0), :m] >= 0).any(1)
        for row in np.flatnonzero(offers):
            item = int(last[row])
            present = items[row] >= 0
            listed = {int(j): float(s) for j, s in zip(items[row][present], scores[row][present])}
            floor = min(listed.values()) - 1.0 if listed else 0.0
            proposals = [int(j) for j in self.nearest[item, :m] if j >= 0 and int(j) not in listed]
            for slot, j in enumerate(proposals):
                borrowed = [listed[a] for a in self.anchors[j].tolist() if a in listed]
                extra_items[row, slot] = j
                extra_scores[row, slot] = borrowed[0] if borrowed else floor - 1e-3 * slot
        items = np.concatenate([items, extra_items], 1)
        scores = np.concatenate([scores, extra_scores], 1)
        order = np.argsort(-np.where(items >= 0, scores, -np.inf), axis=1, kind="stable")
        return np.take_along_axis(items, order, 1), np.take_along_axis(scores, order, 1)


def trained_items(sequences: list[np.ndarray], n_items: int) -> np.ndarray:
    """``[n_items]`` bool: the items that occur in the training sequences."""
    seen = np.zeros(n_items, bool)
    for seq in sequences:
        seen[np.asarray(seq, np.int64)] = True
    return seen


def _top(queries: np.ndarray, keys: np.ndarray, key_ids: np.ndarray, k: int,
         exclude: np.ndarray | None, chunk: int, positive: bool = True) -> np.ndarray:
    """``[Q, k]`` ids (``key_ids``) of each query's most similar keys by dot product (only
    positive ones with ``positive``), most similar first, ties to the lower id; ``exclude[q]``
    (a query's own id) is never its own neighbour; -1 pads rows with fewer than ``k`` keys."""
    out = np.full((len(queries), k), -1, np.int64)
    keys_t = torch.from_numpy(np.ascontiguousarray(keys))
    ids_t = torch.from_numpy(key_ids.astype(np.int64))
    for lo in range(0, len(queries), chunk):
        sim = torch.from_numpy(np.ascontiguousarray(queries[lo:lo + chunk])) @ keys_t.T
        if positive:  # an item unlike the query (cosine <= 0) lends it no score
            sim = sim.masked_fill(sim <= 0, float("-inf"))
        if exclude is not None:
            own = torch.from_numpy(exclude[lo:lo + chunk].astype(np.int64))
            sim = sim.masked_fill(own[:, None] == ids_t[None, :], float("-inf"))
        # key_ids are sorted ascending, so a stable sort puts ties on the lower id
        vals, idx = torch.sort(sim, dim=1, descending=True, stable=True)
        vals, idx = vals[:, :k], idx[:, :k]
        got = ids_t[idx].masked_fill(~torch.isfinite(vals), -1)
        out[lo:lo + len(got), :got.shape[1]] = got.numpy()
    return out
