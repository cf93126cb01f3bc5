"""The ``heuristic`` baseline: a rule with no learned model, ranking the whole catalogue.

    score(j) = w_t * log(1 + count(last item -> j))
             + w_c * sum_{h < H} decay**h * max(0, cos(h-th most recent item, j))
             + w_p * log(1 + training count of j)

``count`` is how often ``j`` directly followed the user's most recent item in the training
sequences, ``cos`` the mean cosine of the frozen embeddings over every modality the run has (an
item is not its own neighbour), the last term a popularity prior. These are the signals the
retriever's priors add to its candidates (:mod:`generative_rec.priors`); here they rank every
item, with no model at all. On sparse catalogues such a rule is the bar a learned model must
pass first (successor counts and item-to-item similarity are what kNN recommenders exploit).

Its weights are the baseline's own: fitted on the validation users (history ``s[:-2]``, target
``s[-2]``, counts from the training sequences) by coordinate ascent on NDCG@10, under the
evaluation's history protocol, then applied to the test users. Equal scores are ordered by the
seeded (user, item) hash every system shares, so ties earn no credit.

The ``content_knn`` baseline is this rule with ``w_t = w_p = 0`` and ``w_c = 1``, only the
history length ``H`` and ``decay`` fitted (:meth:`eval.config.ContentKnnConfig.as_heuristic`):
content-only nearest neighbours of the recent history, which rank items never seen in training
(cold items, popularity 0, no successor counts) like any other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp

from generative_rec.content import ContentVectors
from generative_rec.priors import coordinate_ascent
from eval.config import HeuristicConfig
from recdata.errors import DataError
from recdata.split import SequentialSplit
from recdata.topk import tie_keys, top_k

logger = logging.getLogger(__name__)


def transition_matrix(sequences: Sequence[np.ndarray], n_items: int) -> sp.csr_matrix:
    """``[N, N]`` sparse ``log(1 + count(i -> j))`` over consecutive pairs of ``sequences``."""
    src = [np.asarray(s[:-1], np.int64) for s in sequences if len(s) > 1]
    dst = [np.asarray(s[1:], np.int64) for s in sequences if len(s) > 1]
    rows = np.concatenate(src) if src else np.zeros(0, np.int64)
    cols = np.concatenate(dst) if dst else np.zeros(0, np.int64)
    counts = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_items, n_items))
    counts.sum_duplicates()
    counts.data = np.log1p(counts.data)
    return counts


def _recent(histories: Sequence[np.ndarray], depth: int) -> np.ndarray:
    """``[U, depth]`` most recent items, most recent first, -1 past a history's start."""
    out = np.full((len(histories), depth), -1, np.int64)
    for row, hist in enumerate(histories):
        tail = np.asarray(hist[-depth:], np.int64)[::-1]
        out[row, : len(tail)] = tail
    return out


@dataclass
class _Block:
    """Per-term scores of a block of users over the whole catalogue."""

    users: np.ndarray  # [B] user indices (tie keys)
    transition: np.ndarray | None  # [B, N] float32; None when every transition weight is 0
    content: np.ndarray  # [H, B, N] float16: max(0, cos) to the h-th most recent item
    excluded: list[np.ndarray] | None

    def scores(self, setting: dict[str, Any], popularity: np.ndarray) -> np.ndarray:
        if self.transition is None:
            if setting["transition_weight"] != 0:
                raise ValueError("this block was built without its transition term")
            s = np.zeros((len(self.users), len(popularity)), np.float32)
        else:
            s = setting["transition_weight"] * self.transition
        if setting["content_weight"] > 0:
            for h in range(min(setting["content_history"], len(self.content))):
                s += (setting["content_weight"] * setting["content_decay"] ** h) * \
                    self.content[h].astype(np.float32)
        if setting["popularity_weight"] > 0:
            s += setting["popularity_weight"] * popularity[None, :]
        if self.excluded is not None:
            for row, items in enumerate(self.excluded):
                s[row, items] = -np.inf
        return s


class Heuristic:
    """The rule's terms for a split, and its ranking for any setting of its weights."""

    def __init__(self, *, split: SequentialSplit, content: ContentVectors | None) -> None:
        self.n_items = split.n_items
        self.transitions = transition_matrix(split.train_sequences, split.n_items)
        self.content = content
        self.popularity = np.log1p(np.asarray(split.train_counts, np.float64)).astype(np.float32)

    def block(self, *, histories: Sequence[np.ndarray], users: np.ndarray, depth: int,
              exclude: bool, transition: bool = True) -> _Block:
        """The terms of ``users`` whose histories are ``histories``, content to the ``depth``
        most recent items; ``transition=False`` leaves the successor counts out (every
        transition weight 0: content_knn)."""
        recent = _recent(histories, depth)
        last = recent[:, 0]
        trans = np.zeros((len(users), self.n_items), np.float32) if transition else None
        has = last >= 0
        if trans is not None and has.any():
            trans[has] = self.transitions[last[has]].toarray()
        content = np.zeros((depth if self.content is not None else 0, len(users), self.n_items),
                           np.float16)
        if self.content is not None:
            vectors = self.content.vectors
            for h in range(depth):
                items = recent[:, h]
                sim = np.maximum(vectors[np.maximum(items, 0)] @ vectors.T, 0.0)
                sim[items < 0] = 0.0
                rows = np.flatnonzero(items >= 0)
                sim[rows, items[rows]] = 0.0  # an item is not its own neighbour
                content[h] = sim
        excluded = [np.asarray(h, np.int64) for h in histories] if exclude else None
        return _Block(users=np.asarray(users, np.int64), transition=trans, content=content,
                      excluded=excluded)

    def rank_of_targets(self, block: _Block, setting: dict[str, Any],
                        targets: np.ndarray) -> np.ndarray:
        """0-based rank of each user's target under ``setting`` (ties by the shared hash;
        ``n_items`` when the target is excluded)."""
        s = block.scores(setting, self.popularity)
        rows = np.arange(len(targets))
        st = s[rows, targets]
        rank = (s > st[:, None]).sum(1)
        tied_rows, tied_items = np.nonzero(s == st[:, None])
        keys = tie_keys(block.users[tied_rows], tied_items)
        target_keys = tie_keys(block.users, targets)
        rank += np.bincount(tied_rows, weights=keys < target_keys[tied_rows],
                            minlength=len(targets)).astype(np.int64)
        return np.where(np.isneginf(st), self.n_items, rank)


RULE = ("w_t*log1p(count(last->j)) + w_c*sum_h decay^h*max(0,cos(recent_h,j)) "
        "+ w_p*log1p(train count of j)")
"""The heuristic's score of item ``j``, as its ``info["rule"]`` states it."""
CONTENT_RULE = "sum_{h<H} decay^h*max(0,cos(recent_h,j))"
"""content_knn's score of item ``j``: the rule with ``w_t = w_p = 0``, ``w_c = 1``."""


def fit_heuristic(*, split: SequentialSplit, run_dir: Path, cfg: HeuristicConfig,
                  exclude_history: bool, depth: int, seed: int = 0, chunk: int = 500,
                  name: str = "heuristic",
                  ) -> tuple[dict[bool, tuple[np.ndarray, np.ndarray]], dict]:
    """Fit the rule's weights on validation users, then rank the whole catalogue for every test
    user under both history protocols: ``({exclude_history: (ranked [U, depth], scores)},
    info)``. ``name`` is the baseline's, for messages; when ``cfg`` switches the transition
    and popularity terms off (content_knn) the run's embeddings are required."""
    content_only = not any(cfg.transition_weights) and not any(cfg.popularity_weights)
    try:
        content = ContentVectors.from_run_dir(run_dir)
    except DataError as exc:
        if content_only:
            raise DataError(f"the {name} baseline ranks by content similarity alone and needs "
                            "the encode stage's embeddings; none found (run the encode stage "
                            f"or drop {name} from eval.baselines)",
                            path=exc.path) from None
        logger.warning("%s: no content term (%s)", name, exc)
        content = None
    rule = Heuristic(split=split, content=content)
    grids: dict[str, list] = {"transition_weight": [float(w) for w in cfg.transition_weights]}
    if content is not None:
        grids.update(content_weight=[float(w) for w in cfg.content_weights],
                     content_history=[int(h) for h in cfg.content_history],
                     content_decay=[float(d) for d in cfg.content_decay])
    grids["popularity_weight"] = [float(w) for w in cfg.popularity_weights]
    fixed = {"content_weight": 0.0, "content_history": 1, "content_decay": 1.0}

    users = np.arange(split.n_users)
    if cfg.fit_users and len(users) > cfg.fit_users:
        users = np.sort(np.random.default_rng(seed).choice(users, cfg.fit_users, replace=False))
    histories = [split.valid_inputs[u] for u in users]
    targets = split.valid_targets[users]
    h_max = max(cfg.content_history) if content is not None else 1
    transition = any(cfg.transition_weights)
    blocks = [(rule.block(histories=histories[lo:lo + chunk], users=users[lo:lo + chunk],
                          depth=h_max, exclude=exclude_history, transition=transition),
               targets[lo:lo + chunk])
              for lo in range(0, len(users), chunk)]

    def score(setting: dict[str, Any]) -> float:
        setting = {**fixed, **setting}
        total = 0.0
        for block, tgt in blocks:
            rank = rule.rank_of_targets(block, setting, tgt)
            total += float(np.where(rank < 10, 1.0 / np.log2(rank + 2.0), 0.0).sum())
        return total / max(len(users), 1)

    start = {name: grid[0] for name, grid in grids.items()}
    best, best_score, trials = coordinate_ascent(grids=grids, start=start, score=score,
                                                 rounds=cfg.rounds)
    setting = {**fixed, **best}
    logger.info("%s: fitted on %d validation users, NDCG@10 %.4f with %s", name, len(users),
                best_score, setting)

    lists: dict[bool, tuple[list, list]] = {False: ([], []), True: ([], [])}
    for lo in range(0, split.n_users, chunk):
        ids = np.arange(lo, min(lo + chunk, split.n_users))
        hist = [split.test_inputs[u] for u in ids]
        block = rule.block(histories=hist, users=ids, depth=h_max, exclude=False,
                           transition=transition)
        s = block.scores(setting, rule.popularity)
        for flag, (ranked, scores) in lists.items():
            got = top_k(s, k=depth, users=ids, exclude=hist if flag else None)
            ranked.append(got[0])
            scores.append(got[1])
    out = {flag: (np.concatenate(r), np.concatenate(sc)) for flag, (r, sc) in lists.items()}
    info = {"rule": (CONTENT_RULE if content_only else RULE) + ", whole catalogue",
            "weights": setting, "valid_ndcg@10": round(best_score, 6),
            "fit_users": int(len(users)), "modalities_in_content": content is not None,
            "trials": trials}
    return out, info
