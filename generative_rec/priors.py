"""What re-orders the retriever's final candidates after the search (decoding only), and the
fit of its weights on validation users (:func:`fit_priors`).

Two priors, both keyed on the user's most recent item and both bounded per user: the transition
prior (how often a candidate followed that item in training, :mod:`generative_rec.transitions`)
and the content prior (how close a candidate's frozen embedding is to that item's,
:mod:`generative_rec.content`). Each may first offer extra candidates the search missed (the
item's top successors, its nearest items), scored just below the lists' last candidate. They
are applied in that order, each re-sorting the lists, which are then cut to size. Before them,
items the model never trained on may enter the lists by content (:mod:`generative_rec.untrained`),
and after them a fitted number of the first ten places may be given to the untrained items most
like the recent history.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np

from generative_rec.config import PriorsConfig
from generative_rec.content import ContentVectors
from generative_rec.transitions import (
    TransitionCounts,
    add_successors,
    append_candidates,
    rerank_with_transitions,
)
from generative_rec.untrained import (SLOT_HISTORY, UntrainedItems, nearest_untrained,
                                      reserve_slots)


def rerank_with_content(*, items: np.ndarray, scores: np.ndarray, recent: np.ndarray,
                        content: ContentVectors, weight: float,
                        decay: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Re-order each row of ``items``/``scores`` (``[E, K]``, -1 = empty slot) by
    ``score + weight * sum_h decay**h * max(0, cos(recent[:, h], item))`` over the ``[E, H]``
    most recent items (most recent first, -1 = none); empty slots stay last, equal scores keep
    their order."""
    recent = np.asarray(recent).reshape(len(items), -1)
    bonus = np.zeros(items.shape, dtype=np.float64)
    for h in range(recent.shape[1]):
        bonus += (weight * decay ** h) * np.maximum(
            content.similarity(last=recent[:, h], items=items), 0.0)
    combined = np.where(items >= 0, scores.astype(np.float64) + bonus, -np.inf)
    order = np.argsort(-combined, axis=1, kind="stable")
    return (np.take_along_axis(items, order, axis=1),
            np.take_along_axis(combined, order, axis=1).astype(scores.dtype))


@dataclass(frozen=True)
class CandidatePriors:
    """The priors of one trained retriever: the artefacts they read and the weights fitted on
    validation users (:func:`fit_priors`; all 0 = the model's own order)."""

    transitions: TransitionCounts | None = None
    transition_weight: float = 0.0
    transition_candidates: int = 0
    content: ContentVectors | None = None
    content_weight: float = 0.0
    content_candidates: int = 0
    content_history: int = 1
    content_decay: float = 0.5
    untrained: UntrainedItems | None = None
    untrained_candidates: int = 0
    untrained_slots: int = 0

    WEIGHTS = ("transition_weight", "transition_candidates", "content_weight",
               "content_candidates", "content_history", "content_decay", "untrained_candidates",
               "untrained_slots")

    def weights(self) -> dict[str, float | int]:
        """The settings, as ``retriever/priors.json`` stores them: the fitted weights, the
        untrained items' channel width (``PriorsConfig.untrained_candidates``) and their fitted
        places in the first ten."""
        return {name: getattr(self, name) for name in self.WEIGHTS}

    @classmethod
    def from_weights(cls, weights: dict[str, Any], *, transitions: TransitionCounts | None,
                     content: ContentVectors | None,
                     untrained: UntrainedItems | None = None) -> "CandidatePriors":
        known = {k: weights[k] for k in cls.WEIGHTS if k in weights}
        return cls(transitions=transitions, content=content, untrained=untrained, **known)

    @property
    def _transition_on(self) -> bool:
        return self.transitions is not None and self.transition_weight > 0

    @property
    def _content_on(self) -> bool:
        return self.content is not None and self.content_weight > 0

    @property
    def _untrained_on(self) -> bool:
        return (self.untrained is not None and self.untrained_candidates > 0
                and self.untrained.count > 0)

    @property
    def _slots_on(self) -> bool:
        return (self.untrained is not None and self.content is not None
                and self.untrained_slots > 0 and self.untrained.count > 0)

    @property
    def active(self) -> bool:
        return self._transition_on or self._content_on or self._untrained_on or self._slots_on

    @property
    def history_needed(self) -> int:
        """How many of each user's most recent items :meth:`apply` reads."""
        depth = self.content_history if self._content_on else 1
        return max(depth, SLOT_HISTORY) if self._slots_on else depth

    def slot_proposals(self, recent: np.ndarray) -> np.ndarray:
        """``[E, P]`` the untrained items that may take each row's reserved places, best
        first (enough to fill them after those already listed above them)."""
        return nearest_untrained(vectors=self.content.vectors, untrained=self.untrained.untrained,
                                 recent=recent, k=self.untrained_slots + 10)

    def apply(self, *, items: np.ndarray, scores: np.ndarray, recent: np.ndarray,
              top_k: int) -> tuple[np.ndarray, np.ndarray]:
        """Re-order ``[E, K]`` lists of the users whose most recent items are ``recent``
        (``[E, H]``, most recent first, -1 = none; ``[E]`` = the last items alone) and cut them
        to ``top_k``."""
        recent = np.asarray(recent).reshape(len(items), -1)
        last = recent[:, 0]
        if self._untrained_on:
            items, scores = self.untrained.propose(items=items, scores=scores, last=last,
                                                   m=self.untrained_candidates)
        if self._transition_on:
            if self.transition_candidates > 0:
                items, scores = add_successors(items=items, scores=scores, last=last,
                                               transitions=self.transitions,
                                               m=self.transition_candidates)
            items, scores = rerank_with_transitions(items=items, scores=scores, last=last,
                                                    transitions=self.transitions,
                                                    weight=self.transition_weight)
            items, scores = items[:, :top_k], scores[:, :top_k]
        if self._content_on:
            if self.content_candidates > 0:
                content = self.content
                items, scores = append_candidates(
                    items=items, scores=scores, proposals=lambda row: content.nearest(int(last[row])),
                    m=self.content_candidates)
            items, scores = rerank_with_content(
                items=items, scores=scores, recent=recent[:, : self.content_history],
                content=self.content, weight=self.content_weight, decay=self.content_decay)
        if self._slots_on:
            items, scores = reserve_slots(items=items[:, :top_k], scores=scores[:, :top_k],
                                          proposals=self.slot_proposals(recent),
                                          slots=self.untrained_slots)
        return items[:, :top_k], scores[:, :top_k]


# --------------------------------------------------------------------------- fitting


def ndcg_at_10(items: np.ndarray, targets: np.ndarray) -> float:
    """Mean NDCG@10 of ``[E, K]`` lists against one target each (a miss counts 0)."""
    top = np.asarray(items)[:, :10]
    match = top == np.asarray(targets)[:, None]
    found = match.any(axis=1)
    rank = match.argmax(axis=1) + 1
    return float(np.where(found, 1.0 / np.log2(rank + 1.0), 0.0).mean()) if len(top) else 0.0


def coordinate_ascent(*, grids: dict[str, list], start: dict[str, Any],
                      score: Callable[[dict[str, Any]], float], rounds: int,
                      ) -> tuple[dict[str, Any], float, list[dict[str, Any]]]:
    """Maximise ``score(setting)`` one setting at a time over its grid, ``rounds`` passes.
    A value replaces the current one only when it scores strictly higher, so ties keep the
    earlier (the start's, then the grid's first) value. Returns the best setting, its score and
    every evaluation made, in order."""
    best, trials, seen = dict(start), [], {}

    def evaluate(setting: dict[str, Any]) -> float:
        key = tuple(sorted(setting.items()))
        if key not in seen:
            seen[key] = score(setting)
            trials.append({**setting, "ndcg@10": round(seen[key], 6)})
        return seen[key]

    best_score = evaluate(best)
    for _ in range(rounds):
        for name, grid in grids.items():
            for value in grid:
                trial = {**best, name: value}
                got = evaluate(trial)
                if got > best_score:
                    best, best_score = trial, got
    return best, best_score, trials


def fit_priors(*, items: np.ndarray, scores: np.ndarray, recent: np.ndarray,
               targets: np.ndarray, top_k: int, cfg: PriorsConfig,
               transitions: TransitionCounts | None, content: ContentVectors | None,
               untrained: UntrainedItems | None = None,
               ) -> tuple[CandidatePriors, dict[str, Any]]:
    """The priors' weights that give validation users' ``[E, K]`` lists (the model's own, made
    from histories whose most recent items are ``recent`` ``[E, H]``) the highest NDCG@10
    against ``targets``, by :func:`coordinate_ascent` over ``cfg``'s grids from each grid's
    first value (the default grids start at weight 0: no prior). ``untrained``: the items
    without training interactions, offered by a channel of fixed width
    (``cfg.untrained_candidates``) that the fitted priors carry but the weights' fit leaves
    out; the places reserved for them in the first ten (``cfg.untrained_slots``) are fitted
    last, given the weights, and only when some validation target is such an item.
    Returns the fitted priors and a report (chosen weights, validation NDCG@10 without them and
    with them as served, the untrained items' channel included, every trial)."""
    none = CandidatePriors(transitions=transitions, content=content)
    if not cfg.fit or (transitions is None and content is None):
        base = ndcg_at_10(items, targets)
        return none, {"fitted": False, "weights": none.weights(), "valid_ndcg@10_model": base,
                      "valid_ndcg@10": base, "trials": []}
    grids: dict[str, list] = {}
    if transitions is not None:
        grids["transition_weight"] = [float(w) for w in cfg.transition_weights]
        grids["transition_candidates"] = [int(m) for m in cfg.transition_candidates]
    if content is not None:
        grids["content_weight"] = [float(w) for w in cfg.content_weights]
        grids["content_candidates"] = [int(m) for m in cfg.content_candidates]
        grids["content_history"] = [int(h) for h in cfg.content_history]
        grids["content_decay"] = [float(d) for d in cfg.content_decay]
    depth = cfg.history_depth if content is not None else 1
    recent = np.asarray(recent).reshape(len(items), -1)[:, :depth]

    def score(setting: dict[str, Any]) -> float:
        priors = replace(none, **setting)
        ranked, _ = priors.apply(items=items, scores=scores, recent=recent, top_k=top_k)
        return ndcg_at_10(ranked, targets)

    start = {name: grid[0] for name, grid in grids.items()}
    best, best_score, trials = coordinate_ascent(grids=grids, start=start, score=score,
                                                 rounds=cfg.rounds)
    # The untrained items' channel has no weight to fit and is left out of the fit: validation
    # targets all have training interactions, and fitted beside it the other weights bent to
    # keep its offers out of the validation lists (experiment 64).
    fitted = replace(none, **best, untrained=untrained,
                     untrained_candidates=int(cfg.untrained_candidates))
    fitted, best_score, slot_report = _fit_slots(
        fitted, items=items, scores=scores, recent=recent, targets=targets, top_k=top_k,
        grid=[int(s) for s in cfg.untrained_slots], ascent_score=best_score)
    report = {"fitted": True, "weights": fitted.weights(),
              "valid_ndcg@10_model": trials[0]["ndcg@10"], "valid_ndcg@10": round(best_score, 6),
              "valid_users": int(len(items)), "trials": trials, "untrained_slots": slot_report}
    logging.getLogger(__name__).info(
        "priors fitted on %d validation users: NDCG@10 %.4f -> %.4f with %s", len(items),
        trials[0]["ndcg@10"], best_score, fitted.weights())
    return fitted, report


def _fit_slots(priors: CandidatePriors, *, items: np.ndarray, scores: np.ndarray,
               recent: np.ndarray, targets: np.ndarray, top_k: int, grid: list[int],
               ascent_score: float) -> tuple[CandidatePriors, float, dict[str, Any]]:
    """``priors`` with the number of places in the first ten reserved for untrained items that
    scores the highest validation NDCG@10 (ties keep the grid's earlier value), and that
    score as served. Fitted only when some validation target is untrained: otherwise
    validation users cannot tell what the places are worth, and the grid's first value stands.
    ``ascent_score``: the weights' score without any untrained items' channel."""
    untrained = priors.untrained
    n_targets = (int(untrained.untrained[np.asarray(targets, np.int64)].sum())
                 if untrained is not None and untrained.count > 0 else 0)
    if n_targets == 0 or priors.content is None or len(grid) < 2:
        served = replace(priors, untrained_slots=grid[0])
        report = {"fitted": False, "valid_targets_untrained": n_targets, "trials": []}
        if not (served._untrained_on or served._slots_on):
            return served, ascent_score, report  # the weights' fit scored these very lists
        got, _ = served.apply(items=items, scores=scores, recent=recent, top_k=top_k)
        return served, ndcg_at_10(got, targets), report
    base = replace(priors, untrained_slots=0)
    ranked, ranked_scores = base.apply(items=items, scores=scores, recent=recent, top_k=top_k)
    proposals = replace(base, untrained_slots=max(grid)).slot_proposals(
        np.asarray(recent).reshape(len(items), -1))
    trials, best, best_score = [], grid[0], -1.0
    for slots in grid:
        got, _ = reserve_slots(items=ranked, scores=ranked_scores, proposals=proposals, slots=slots)
        value = ndcg_at_10(got, targets)
        trials.append({"untrained_slots": slots, "ndcg@10": round(value, 6)})
        if value > best_score:
            best, best_score = slots, value
    logging.getLogger(__name__).info(
        "untrained items' places fitted on %d validation users (%d untrained targets): %s",
        len(items), n_targets, trials)
    return (replace(priors, untrained_slots=best), best_score,
            {"fitted": True, "valid_targets_untrained": n_targets, "trials": trials})
