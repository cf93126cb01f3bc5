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

Its width is a fixed setting (``priors.untrained_candidates``): it reaches near duplicates
at no measurable cost to other users, but on ml-100k's cold-start protocol no cold target
(experiment 64). A second, fitted channel (:func:`nearest_untrained`, :func:`reserve_slots`)
gives the last places of the first ten to the untrained items most like the recent history;
how many is fitted on validation users whose targets include untrained items (the cold-start
protocol holds items out as validation targets too), since only they can weigh the places'
gain on new items against their cost to everyone else (experiment 72).

Cost per user: one row of the table and a lookup of each proposal's trained neighbours in the
list; it does not grow with the catalogue. The tables are built when a run is loaded (or items
are added), at a cost of (catalogue × untrained items).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from generative_rec.config import SLOT_HISTORY, UNTRAINED_NEIGHBOURS
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


# ------------------------------------------------------------------ places for untrained items

# The slots' candidates are ranked by the content-only rule's form (``content_knn``, the
# heuristic's content term) over the SLOT_HISTORY most recent items with this decay: experiment
# 72 found the nearest to the last five items reach more cold targets than those nearest to
# the last one.
SLOT_DECAY = 0.7


def nearest_untrained(*, vectors: np.ndarray, untrained: np.ndarray, recent: np.ndarray,
                      k: int, chunk: int = 1024) -> np.ndarray:
    """``[E, k]`` per row of ``recent`` (``[E, H]`` most recent items first, -1 = none): the
    untrained items with the highest ``sum_{h < SLOT_HISTORY} SLOT_DECAY**h * max(0, cos(recent_h,
    j))``, highest first, ties to the lower id; a row's own recent items, and items with no
    similarity at all, are never proposed; -1 pads. Cost: (rows × untrained items), not the
    catalogue."""
    recent = np.asarray(recent, np.int64).reshape(len(recent), -1)[:, :SLOT_HISTORY]
    n = len(vectors)
    pool = np.flatnonzero(np.asarray(untrained, bool))
    out = np.full((len(recent), k), -1, np.int64)
    if not len(pool) or not k:
        return out
    keys = torch.from_numpy(np.ascontiguousarray(vectors[pool]))
    pool_t = torch.from_numpy(pool)
    decay = torch.tensor([SLOT_DECAY ** h for h in range(recent.shape[1])])
    for lo in range(0, len(recent), chunk):
        rows = torch.from_numpy(recent[lo:lo + chunk])
        known = (rows >= 0) & (rows < n)
        queries = torch.from_numpy(vectors)[rows.clamp(0, n - 1)] * known[..., None]
        sims = (queries @ keys.T).clamp_min(0)  # [B, H, U]
        score = (sims * decay[None, :, None]).sum(1)
        own = (rows[:, :, None] == pool_t[None, None, :]).any(1)
        score = score.masked_fill(own | (score <= 0), float("-inf"))
        # pool is ascending, so a stable sort puts ties on the lower id
        vals, idx = torch.sort(score, dim=1, descending=True, stable=True)
        vals, idx = vals[:, :k], idx[:, :k]
        got = pool_t[idx].masked_fill(~torch.isfinite(vals), -1)
        out[lo:lo + len(got), :got.shape[1]] = got.numpy()
    return out


def reserve_slots(*, items: np.ndarray, scores: np.ndarray, proposals: np.ndarray, slots: int,
                  cut: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Give the last ``slots`` of each row's first ``cut`` places to its ``proposals`` (``[E,
    P]``, best first, -1 = none) that are not already above them; the items they displace move
    down, in order, and the rows keep their width. A proposal takes the score of the item above
    it, so the scores stay sorted. Rows without proposals are unchanged."""
    items, scores = items.copy(), scores.copy()
    width = items.shape[1]
    first = max(0, min(cut, width) - slots)
    for row in np.flatnonzero((proposals >= 0).any(1)) if slots > 0 else ():
        head = items[row, :first].tolist()
        picks = [int(j) for j in proposals[row] if j >= 0 and int(j) not in head][:slots]
        if not picks:
            continue
        rest = [(int(j), float(s)) for j, s in zip(items[row, first:], scores[row, first:])
                if int(j) not in picks]
        above = float(scores[row, first - 1]) if first > 0 else float(scores[row, 0])
        merged = [(j, above) for j in picks] + rest
        merged = (merged + [(-1, -np.inf)] * width)[: width - first]
        items[row, first:] = [j for j, _ in merged]
        scores[row, first:] = [s for _, s in merged]
    return items, scores
