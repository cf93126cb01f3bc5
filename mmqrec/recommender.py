"""Serve a trained run: load it once, then recommend for many users or for ad-hoc histories.

Flow for each request: history (a known user's chronological history, or the items given) →
the retriever's top ``decoding.candidates_n`` items by constrained beam search on the history's last
``history.max_length`` items (batched over users; older items only decide which items count as seen) →
the CTR ranker's probability of a positive rating for each candidate, fused with the retriever's
score by the weight the ranker stage tuned on validation users (``fusion_alpha``) → seen items
dropped unless asked otherwise → top-k. When fewer than k candidates survive, the most popular
unseen items are appended (scored by the ranker) and the message says so; a user without any
history gets the most popular items and ``fallback=True``.

An ad-hoc history with no known user (a new visitor, a session) has no user features for the
ranker: its list keeps the retriever's order and ``p_like`` is None. Give ``user_id`` to rank it
as that user.

Without a trained retriever model, candidates come from ``retriever/candidates.parquet`` (the
list decoded for each user's test input) and the message says so.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import polars as pl

from mmqrec.locks import ReadWriteLock
from ranking.checkpoint import load_model, read_ranker_config
from ranking.features import FEEDBACK_NEG, FEEDBACK_POS
from ranking.two_stage import fuse_scores, order_candidates, score_candidates
from recdata.errors import DataError
from recdata.io import read_parquet
from recdata.runtime import quiet_progress, resolve_device
from recdata.layout import layout

log = logging.getLogger(__name__)

# Ids longer than this are cut in messages: a request may carry an id of any length.
SHOWN_ID_CHARS = 64


def shown(value: object) -> str:
    """``repr`` of an id for a message, cut to :data:`SHOWN_ID_CHARS` characters."""
    text = str(value)
    if len(text) > SHOWN_ID_CHARS:
        text = text[:SHOWN_ID_CHARS] + f"… ({len(text):,} characters)"
    return repr(text)


@dataclass
class Recommendation:
    """One list of recommendations."""

    user_id: str | None
    """The user it is for (None for an anonymous history)."""
    items: list[dict[str, Any]]
    """Best first: ``{item_id, title, score, p_like, semantic_id, has_image}``; ``score`` is what the list is
    sorted by, ``p_like`` the ranker's probability of a positive rating (None when the ranker
    did not score the item)."""
    fallback: bool
    """True when the list is the popularity fallback of a user without history."""
    message: str
    """How the list was made, in one line."""
    variant: str | None = None
    """The ranker variant that scored it."""
    candidate_source: str = ""
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Retriever:
    model: Any
    vocab: Any
    trie: Any
    cfg: Any
    priors: Any = None
    base_priors: Any = None  # over the trained catalogue: added items rebuild ``priors`` from it


@dataclass
class _Ranker:
    model: Any
    spec: dict[str, Any]
    cfg: Any
    variant: str
    alpha: float


class Recommender:
    """A trained run held in memory. Build it with :meth:`Recommender.load`.

    Thread-safe: model calls from several threads run side by side (each with torch's
    intra-op threads), and picking up added items waits for them and runs alone, so a server
    may share one instance between its workers.
    """

    def __init__(self, *, run_dir: Path, device: str, retriever: _Retriever | None,
                 ranker: _Ranker | None, candidates_n: int) -> None:
        self.run_dir = run_dir
        self.device = device
        self._retriever = retriever
        self._ranker = ranker
        self.candidates_n = candidates_n
        self._lock = ReadWriteLock()
        # The constrained search patches the decoder's cross-attention for the length of a call,
        # so calls that run at once each need their own copy of the retriever. Copies are made
        # on demand from one that never runs (a running one carries the patch), at most one per
        # usable core: more calls at once would only share the cores, so they wait their turn.
        from recdata.threads import usable_cores

        self._max_models = usable_cores()
        self._copy_lock = threading.Lock()
        self._idle_models: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._models: list[Any] = []
        self._pristine = None
        if retriever is not None:
            self._pristine = copy.deepcopy(retriever.model)
            self._models.append(retriever.model)
            self._idle_models.put(retriever.model)
        self._load_tables()

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, run_dir: str | Path, *, device: str = "auto", variant: str | None = None,
             candidates_n: int | None = None) -> "Recommender":
        """Load a finished run's tables, retriever and ranker once.

        ``variant`` picks the ranker (default: the one the ranker stage chose to serve);
        ``candidates_n`` overrides how many retriever candidates the ranker re-scores.
        """
        run_dir = Path(run_dir)
        if not layout(run_dir).items.exists():
            raise DataError("not a trained run (no data/items.parquet)", path=run_dir)
        device = resolve_device(device)
        retriever = None
        if layout(run_dir).retriever_model.exists():
            # Imported here: transformers makes this the slowest import of a cold start.
            from generative_rec.inference import load_priors, load_retriever, retriever_config

            model, vocab, trie = load_retriever(run_dir, device)
            rcfg = retriever_config(run_dir)
            priors = load_priors(run_dir)
            retriever = _Retriever(model, vocab, trie, rcfg, priors, priors)
        ranker = None
        chosen_n = retriever.cfg.decoding.candidates_n if retriever is not None else 50
        if layout(run_dir).ranker_config.exists():
            model, spec, cfg, chosen = load_model(run_dir=run_dir, variant=variant, device=device)
            alpha = float(read_ranker_config(run_dir)["variants"][chosen].get("fusion_alpha", 1.0))
            ranker = _Ranker(model, spec, cfg, chosen, alpha)
            chosen_n = cfg.candidates_n
        elif variant is not None:
            raise DataError(f"ranker variant {variant!r} requested but the run has no ranker",
                            path=layout(run_dir).ranker_dir)
        if candidates_n is not None and candidates_n > 0:
            chosen_n = int(candidates_n)
        return cls(run_dir=run_dir, device=device, retriever=retriever, ranker=ranker,
                   candidates_n=chosen_n)

    def _load_tables(self) -> None:
        data = layout(self.run_dir).data_dir
        items = read_parquet(data / "items.parquet").sort("item_idx")
        self.item_ids: list[str] = [str(i) for i in items["item_id"].to_list()]
        self._item_index = {item: i for i, item in enumerate(self.item_ids)}
        self.titles: list[str] = ([t or "" for t in items["title"].to_list()]
                                  if "title" in items.columns else [""] * items.height)
        self.image_paths: list[str | None] = (items["image_path"].to_list()
                                              if "image_path" in items.columns else [None] * items.height)
        users = read_parquet(data / "users.parquet").sort("user_idx")
        self.user_ids: list[str] = [str(u) for u in users["user_id"].to_list()]
        self._user_index = {user: i for i, user in enumerate(self.user_ids)}
        ratings = read_parquet(data / "ratings.parquet").with_row_index("_row")
        ratings = ratings.sort(["user_idx", "timestamp", "_row"], maintain_order=True)
        explicit = ratings["rating"].null_count() < ratings.height
        users_col = ratings["user_idx"].to_numpy()
        items_col = ratings["item_idx"].to_numpy().astype(np.int64)
        feedback = (np.where(ratings["label"].to_numpy() > 0, FEEDBACK_POS, FEEDBACK_NEG)
                    if explicit else np.full(len(items_col), FEEDBACK_POS)).astype(np.int64)
        bounds = np.searchsorted(users_col, np.arange(len(self.user_ids) + 1))
        self._histories = [items_col[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        self._feedback = [feedback[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        strata = read_parquet(data / "strata.parquet").sort("item_idx")
        counts = strata["train_count"].to_numpy().astype(np.int64)
        self._popular = np.lexsort((np.arange(len(counts)), -counts))
        self._counts = counts
        self.codes = self._semantic_ids()
        self._n_base_items = len(self.item_ids)
        self._base = (list(self.item_ids), list(self.titles), list(self.image_paths), self.codes,
                      counts)
        self._ranker_items = self._n_base_items  # items the ranker can represent
        self._additions_version = 0
        self._apply_additions()

    # ------------------------------------------------------------------ added items
    def _apply_additions(self) -> None:
        """Extend the catalogue, the retriever's trie and item table, and the SID ranker's item
        fields with the items ``mmqrec add-items`` gave IDs (see :mod:`mmqrec.catalogue`)."""
        from mmqrec.catalogue import load_additions

        if self.codes is None:
            return
        base_ids, base_titles, base_images, base_codes, base_counts = self._base
        added = load_additions(self.run_dir, base_codes.shape[1])
        self._additions_version = added.version
        titles = [t or "" for t in added.items["title"].to_list()] if added.items.height else []
        self.item_ids = base_ids + [str(i) for i in added.items["item_id"].to_list()]
        self._item_index = {item: i for i, item in enumerate(self.item_ids)}
        self.titles = base_titles + titles
        self.image_paths = base_images + (added.items["image_path"].to_list() if added.items.height else [])
        self.codes = np.concatenate([base_codes, added.codes]) if len(added.codes) else base_codes
        self._counts = np.concatenate([base_counts, np.zeros(len(added.codes), dtype=np.int64)])
        if self._retriever is not None:
            from generative_rec.inference import with_catalogue
            from generative_rec.model import set_item_tokens
            from generative_rec.trie import SidTrie

            r = self._retriever
            r.trie = SidTrie.from_codes(self.codes, device=self.device)
            if len(added.codes) or r.priors is not r.base_priors:  # load_priors built the rest
                r.priors = with_catalogue(r.base_priors, trained=base_counts > 0,
                                          added=added.content)
            tokens = r.vocab.encode_sids(self.codes)
            for model in [self._pristine, *self._models]:  # none is running: the write lock
                set_item_tokens(model, tokens)
        if self._ranker is not None:
            self._ranker_items = self._extend_ranker_items()

    def _extend_ranker_items(self) -> int:
        """Give the ranker rows for added items; returns how many items it can score."""
        rep = self._ranker.model.item_repr
        n_base = self._n_base_items
        rep.field_ids = rep.field_ids[:n_base]  # drop rows of an earlier refresh
        return len(self.codes) if rep.append_sid_items(self.codes[n_base:]) else n_base

    def refresh(self) -> bool:
        """Pick up items added since loading (cheap when there are none); True when it did."""
        from mmqrec.catalogue import current_version

        if current_version(self.run_dir) == self._additions_version:
            return False
        with self._lock.write():
            if current_version(self.run_dir) == self._additions_version:
                return False  # another thread picked them up while this one waited
            self._apply_additions()
        return True

    @property
    def catalogue_version(self) -> int:
        """The ``add-items`` version in force (0: the trained catalogue alone)."""
        return self._additions_version

    def _semantic_ids(self) -> np.ndarray | None:
        """The IDs to show: a soft-indexing ranker variant's own table, else the run's table."""
        if self._ranker is not None:
            own = layout(self.run_dir).ranker_semantic_ids(self._ranker.variant)
            if own.exists():
                frame = read_parquet(own).sort("item_idx")
                cols = sorted((c for c in frame.columns if c[:1] == "t" and c[1:].isdigit()),
                              key=lambda c: int(c[1:]))
                return np.stack([frame[c].to_numpy() for c in cols], axis=1)
        if layout(self.run_dir).semantic_ids.exists():
            from tokenizer.sid import SemanticIds

            return SemanticIds.from_run_dir(self.run_dir).codes
        return None

    # ------------------------------------------------------------------ lookups
    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def ranker_variant(self) -> str | None:
        return None if self._ranker is None else self._ranker.variant

    def user_idx(self, user_id: str) -> int:
        try:
            return self._user_index[str(user_id)]
        except KeyError:
            raise DataError(f"unknown user {shown(user_id)}") from None

    def item_idx(self, item_id: str) -> int:
        try:
            return self._item_index[str(item_id)]
        except KeyError:
            raise DataError(f"unknown item {shown(item_id)}") from None

    def item(self, item_id: str) -> dict[str, Any]:
        """``{item_id, title, semantic_id, has_image, train_count}`` of a catalogue item."""
        self.refresh()
        with self._lock.read():
            return self._describe_item(self.item_idx(item_id))

    def _describe_item(self, i: int) -> dict[str, Any]:
        return {
            "item_id": self.item_ids[i], "title": self.titles[i],
            "semantic_id": [] if self.codes is None else [int(c) for c in self.codes[i]],
            "has_image": self.image_paths[i] is not None,
            "train_count": int(self._counts[i]),
        }

    def image_path(self, item_id: str) -> Path | None:
        """The catalogue's own image file of an item (None when it has none)."""
        self.refresh()
        with self._lock.read():
            path = self.image_paths[self.item_idx(item_id)]
        return Path(path) if path else None

    def history(self, user_id: str, *, last: int | None = None) -> list[dict[str, Any]]:
        """A known user's items, oldest first (the ``last`` most recent when given)."""
        self.refresh()
        with self._lock.read():
            items = self._histories[self.user_idx(user_id)]
            if last is not None:
                items = items[-last:] if last > 0 else items[:0]
            return [self._describe_item(int(i)) for i in items]

    # ------------------------------------------------------------------ recommending
    def recommend(self, user_ids: Sequence[str], *, k: int = 10,
                  exclude_seen: bool = True) -> list[Recommendation]:
        """Top-``k`` lists for known users, batched through both models."""
        if isinstance(user_ids, str):
            raise DataError("user_ids must be a list of ids, not one string")
        self.refresh()
        with self._lock.read():
            idx = [self.user_idx(u) for u in user_ids]
            return self._recommend(
                user_ids=[str(u) for u in user_ids], ranker_users=idx,
                histories=[self._histories[i] for i in idx],
                feedback=[self._feedback[i] for i in idx], k=k, exclude_seen=exclude_seen,
            )

    def recommend_history(self, item_ids: Sequence[str], *, k: int = 10, exclude_seen: bool = True,
                          user_id: str | None = None) -> Recommendation:
        """Top-``k`` for an ad-hoc chronological history of item ids (oldest first).

        With ``user_id`` (a known user) the ranker scores the list as that user's; without it
        the list keeps the retriever's order.
        """
        if isinstance(item_ids, str):
            raise DataError("item_ids must be a list of ids, not one string")
        self.refresh()
        with self._lock.read():
            history = np.array([self.item_idx(i) for i in item_ids], dtype=np.int64)
            ranker_user = None if user_id is None else self.user_idx(user_id)
            return self._recommend(
                user_ids=[None if user_id is None else str(user_id)], ranker_users=[ranker_user],
                histories=[history],
                feedback=[np.full(len(history), FEEDBACK_POS, dtype=np.int64)],
                k=k, exclude_seen=exclude_seen,
            )[0]

    def _recommend(self, *, user_ids: list[str | None], ranker_users: list[int | None],
                   histories: list[np.ndarray], feedback: list[np.ndarray], k: int,
                   exclude_seen: bool) -> list[Recommendation]:
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise DataError(f"k must be a positive integer, got {k!r}")
        if k > self.n_items:
            raise DataError(f"k must be at most the catalogue size {self.n_items}, got {k}")
        out: list[Recommendation | None] = [None] * len(user_ids)
        active = [j for j, h in enumerate(histories) if len(h)]
        for j in set(range(len(user_ids))) - set(active):
            out[j] = self._popularity_fallback(user_ids[j], k)
        if not active:
            return out  # type: ignore[return-value]
        # The caller holds the read lock: an added-items refresh cannot swap the trie mid-call.
        t0 = time.perf_counter()
        cands, retr_scores, source = self._candidates(
            [histories[j] for j in active], [user_ids[j] or "" for j in active],
            [ranker_users[j] for j in active])
        t1 = time.perf_counter()
        ranked = [j for j in active if ranker_users[j] is not None and self._ranker is not None]
        probs: dict[int, np.ndarray] = {}
        tails: dict[int, np.ndarray] = {}
        if ranked:
            pos = {j: n for n, j in enumerate(active)}
            limit = self._ranker_items
            for j in ranked:
                # Items the ranker has no row for (added after an ItemID ranker was trained)
                # follow the scored candidates, in the retriever's order.
                n = pos[j]
                ok = cands[n] < limit
                tails[j] = cands[n][~ok]
                cands[n] = cands[n][ok]
                if retr_scores[n] is not None:
                    retr_scores[n] = retr_scores[n][ok]
            scored = score_candidates(
                model=self._ranker.model, users=np.array([ranker_users[j] for j in ranked]),
                histories=[histories[j][histories[j] < limit] for j in ranked],
                feedback=[feedback[j][histories[j] < limit] for j in ranked],
                candidates=[cands[pos[j]] for j in ranked],
                history_len=int(self._ranker.spec["history_len"]), device=self.device)
            probs = dict(zip(ranked, scored))
        t2 = time.perf_counter()
        for n, j in enumerate(active):
            out[j] = self._finish(
                user_id=user_ids[j], ranker_user=ranker_users[j], history=histories[j],
                feedback=feedback[j], candidates=cands[n], retriever_scores=retr_scores[n],
                probs=probs.get(j), tail=tails.get(j), source=source, k=k,
                exclude_seen=exclude_seen,
                seconds={"candidates": (t1 - t0) / len(active), "rank": (t2 - t1) / len(active)})
        return out  # type: ignore[return-value]

    @contextlib.contextmanager
    def _retriever_model(self) -> Iterator[Any]:
        """A copy of the retriever no other call is running, for the length of one call."""
        try:
            model = self._idle_models.get_nowait()
        except queue.Empty:
            with self._copy_lock:
                model = None
                if len(self._models) < self._max_models:
                    model = copy.deepcopy(self._pristine)
                    self._models.append(model)
            if model is None:
                model = self._idle_models.get()
        try:
            yield model
        finally:
            self._idle_models.put(model)

    def _candidates(self, histories: list[np.ndarray], keys: list[str],
                    users: list[int | None]) -> tuple[list[np.ndarray], list[np.ndarray | None], str]:
        n = self.candidates_n
        if self._retriever is not None:
            from generative_rec.inference import recommend_for_histories

            r = self._retriever
            # quiet: one bar per request would flood a server's terminal
            with self._retriever_model() as model, quiet_progress():
                items, scores = recommend_for_histories(
                    model=model, vocab=r.vocab, trie=r.trie,
                    histories=[h.tolist() for h in histories], user_ids=keys, top_k=n,
                    num_beams=max(r.cfg.decoding.num_beams, n), max_history=r.cfg.history.max_length,
                    batch_size=r.cfg.schedule.eval_batch_size, normalize=r.cfg.normalize,
                    item_score_weight=r.cfg.rerank_weight, priors=r.priors)
            cands, retr = [], []
            for row_items, row_scores in zip(items, scores):
                keep = row_items >= 0
                cands.append(np.asarray(row_items[keep], dtype=np.int64))
                retr.append(np.asarray(row_scores[keep], dtype=np.float64))
            return cands, retr, (f"the retriever (beam search on the history's last "
                                 f"{r.cfg.history.max_length} items)")
        path = layout(self.run_dir).candidates
        if not path.exists():
            return [np.zeros(0, np.int64)] * len(histories), [None] * len(histories), "nowhere (no retriever output)"
        frame = read_parquet(path).filter(pl.col("split") == "test")
        saved = {int(u): (np.asarray(i, np.int64)[:n], np.asarray(s, np.float64)[:n])
                 for u, i, s in zip(frame["user_idx"], frame["items"], frame["scores"])}
        cands, retr = [], []
        for user in users:
            items, scores = saved.get(user, (np.zeros(0, np.int64), None)) if user is not None \
                else (np.zeros(0, np.int64), None)
            cands.append(items)
            retr.append(scores)
        return cands, retr, "retriever/candidates.parquet (computed for the history without its last item)"

    def _finish(self, *, user_id: str | None, ranker_user: int | None, history: np.ndarray,
                feedback: np.ndarray, candidates: np.ndarray, retriever_scores: np.ndarray | None,
                probs: np.ndarray | None, source: str, k: int, exclude_seen: bool,
                seconds: dict[str, float], tail: np.ndarray | None = None) -> Recommendation:
        seen = history if exclude_seen else None
        ranker = self._ranker if ranker_user is not None else None
        if probs is None:
            order_by = retriever_scores if retriever_scores is not None else -np.arange(len(candidates), dtype=np.float64)
            how = ("kept the retriever's order (no known user for the ranker)" if self._ranker is not None
                   else "the retriever's order (the run has no ranker)")
        else:
            fused = retriever_scores is not None and ranker.alpha < 1.0 and len(candidates) > 0
            order_by = fuse_scores(retriever_scores, probs, ranker.alpha) if fused else probs
            if fused and ranker.alpha == 0.0:
                how = (f"kept the retriever's order (validation chose ranker weight 0; "
                       f"ranker {ranker.variant}'s p_like shown)")
            elif fused:
                how = f"ranker {ranker.variant} fused with the retriever score (ranker weight {ranker.alpha:g})"
            else:
                how = f"ranker {ranker.variant} re-ranked"
        first = {int(item): j for j, item in reversed(list(enumerate(candidates.tolist())))}
        items, scores = order_candidates(candidates, order_by, seen=seen, k=k)
        item_probs = (None if probs is None else
                      np.asarray([probs[first[int(i)]] for i in items], dtype=np.float64))
        notes = [f"{len(items)} of {len(candidates)} candidates from {source}"]
        if tail is not None and len(tail) and len(items) < k:
            tail = tail[~np.isin(tail, history)] if exclude_seen else tail
            tail = tail[~np.isin(tail, items)][: k - len(items)]
            floor = (scores.min() - 1.0) if len(scores) else 0.0
            items = np.concatenate([items, tail])
            scores = np.concatenate([scores, floor - np.arange(len(tail), dtype=np.float64)])
            if item_probs is not None:
                item_probs = np.concatenate([item_probs, np.full(len(tail), np.nan)])
            notes.append(f"{len(tail)} added items the ranker cannot score follow in the retriever's order")
        if len(items) < k:
            blocked = np.concatenate([items, history if exclude_seen else np.zeros(0, np.int64)])
            extra = self._popular[~np.isin(self._popular, blocked)][: k - len(items)]
            if len(extra):
                if ranker is not None:
                    known = history < self._ranker_items
                    extra_probs = score_candidates(
                        model=ranker.model, users=np.array([ranker_user]), histories=[history[known]],
                        feedback=[feedback[known]], candidates=[extra],
                        history_len=int(ranker.spec["history_len"]), device=self.device)[0]
                    extra, extra_probs = order_candidates(extra, extra_probs, seen=None)
                    floor = (scores.min() - 1.0) if len(scores) else 0.0
                    extra_scores = extra_probs + floor if probs is not None and len(scores) else extra_probs
                    item_probs = np.concatenate([item_probs if item_probs is not None else
                                                 np.full(len(items), np.nan), extra_probs])
                else:
                    floor = (scores.min() - 1.0) if len(scores) else 0.0
                    extra_scores = floor - np.arange(len(extra), dtype=np.float64)
                    if item_probs is not None:
                        item_probs = np.concatenate([item_probs, np.full(len(extra), np.nan)])
                items = np.concatenate([items, extra])
                scores = np.concatenate([scores, extra_scores])
                notes.append(f"{len(extra)} popular items appended")
        if exclude_seen and len(items) < k:
            unseen = self.n_items - len(np.unique(history))
            notes.append(f"only {unseen} of the {self.n_items} catalogue items are not in the "
                         "history, so the list is shorter than k (keep seen items to fill it)")
        notes.append("seen items excluded" if exclude_seen else "seen items kept")
        described = []
        for j, i in enumerate(items.tolist()):
            row = self._describe_item(int(i))
            p = None if item_probs is None or np.isnan(item_probs[j]) else float(item_probs[j])
            described.append({"item_id": row["item_id"], "title": row["title"],
                              "score": float(scores[j]), "p_like": p,
                              "semantic_id": row["semantic_id"], "has_image": row["has_image"]})
        return Recommendation(
            user_id=user_id, items=described, fallback=False, message=f"{how}: " + "; ".join(notes),
            variant=None if ranker is None else ranker.variant, candidate_source=source,
            seconds={key: round(v, 4) for key, v in seconds.items()},
        )

    def _popularity_fallback(self, user_id: str | None, k: int) -> Recommendation:
        top = self._popular[:k]
        share = self._counts[top] / max(int(self._counts.sum()), 1)
        items = []
        for i, s in zip(top.tolist(), share):
            row = self._describe_item(int(i))
            items.append({"item_id": row["item_id"], "title": row["title"], "score": float(s),
                          "p_like": None, "semantic_id": row["semantic_id"],
                          "has_image": row["has_image"]})
        who = "an empty history" if user_id is None else f"user {user_id!r} has no history"
        return Recommendation(
            user_id=user_id, items=items, fallback=True, candidate_source="popularity",
            message=f"{who}: showing the {len(top)} most popular items (popularity fallback; "
                    "score = share of training interactions)")


def format_table(result: Recommendation, *, title_width: int = 48) -> str:
    """A plain-text table: rank, score, P(like), item id, title, semantic ID; message on top."""
    who = "anonymous history" if result.user_id is None else f"user {result.user_id}"
    lines = [f"{who}: {result.message}"]
    header = f"{'#':>3}  {'score':>7}  {'p_like':>6}  {'item_id':<10}  {'title':<{title_width}}  semantic_id"
    lines += [header, "-" * len(header)]
    for rank, item in enumerate(result.items, start=1):
        title = item["title"]
        if len(title) > title_width:
            title = title[: title_width - 1] + "…"
        sid = "-".join(str(c) for c in item["semantic_id"]) or "-"
        p_like = "-" if item.get("p_like") is None else f"{item['p_like']:.3f}"
        lines.append(
            f"{rank:>3}  {item['score']:>7.4f}  {p_like:>6}  {item['item_id']:<10}  "
            f"{title:<{title_width}}  {sid}")
    return "\n".join(lines)
