"""What re-orders the retriever's final candidates after the search (decoding only).

Two priors, both keyed on the user's most recent item and both bounded per user: the transition
prior (how often a candidate followed that item in training, :mod:`generative_rec.transitions`)
and the content prior (how close a candidate's frozen embedding is to that item's,
:mod:`generative_rec.content`). Each may first offer extra candidates the search missed (the
item's top successors, its nearest items), scored just below the lists' last candidate. They
are applied in that order, each re-sorting the lists, which are then cut to size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from generative_rec.config import RetrieverConfig
from generative_rec.content import ContentVectors
from generative_rec.transitions import (
    TransitionCounts,
    add_successors,
    append_candidates,
    rerank_with_transitions,
)


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
    """The priors of one trained retriever (``RetrieverConfig.transition_*`` / ``content_*``)."""

    transitions: TransitionCounts | None = None
    transition_weight: float = 0.0
    transition_candidates: int = 0
    content: ContentVectors | None = None
    content_weight: float = 0.0
    content_candidates: int = 0
    content_history: int = 1
    content_decay: float = 0.5

    @classmethod
    def from_config(cls, cfg: RetrieverConfig, *, transitions: TransitionCounts | None,
                    content: ContentVectors | None) -> "CandidatePriors":
        return cls(
            transitions=transitions, transition_weight=cfg.transition_prior_weight,
            transition_candidates=cfg.transition_candidates, content=content,
            content_weight=cfg.content_prior_weight, content_candidates=cfg.content_candidates,
            content_history=cfg.content_history, content_decay=cfg.content_decay)

    @property
    def _transition_on(self) -> bool:
        return self.transitions is not None and self.transition_weight > 0

    @property
    def _content_on(self) -> bool:
        return self.content is not None and self.content_weight > 0

    @property
    def active(self) -> bool:
        return self._transition_on or self._content_on

    @property
    def history_needed(self) -> int:
        """How many of each user's most recent items :meth:`apply` reads."""
        return self.content_history if self._content_on else 1

    def apply(self, *, items: np.ndarray, scores: np.ndarray, recent: np.ndarray,
              top_k: int) -> tuple[np.ndarray, np.ndarray]:
        """Re-order ``[E, K]`` lists of the users whose most recent items are ``recent``
        (``[E, H]``, most recent first, -1 = none; ``[E]`` = the last items alone) and cut them
        to ``top_k``."""
        recent = np.asarray(recent).reshape(len(items), -1)
        last = recent[:, 0]
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
            items, scores = items[:, :top_k], scores[:, :top_k]
        return items, scores
