"""Top-k recommendations for one user of a finished run (``mmqrec recommend``).

Flow: user_id → user_idx (unknown → DataError) → the user's full chronological history →
candidates (the retriever's top ``candidates_n``) → ranker probabilities, fused with the
retriever's scores using the weight the stage tuned on validation users (``fusion_alpha`` in
``ranker/config.json``; 1 = ranker only) → seen items dropped (unless ``exclude_seen=False``) →
top-k. When fewer than k candidates survive, the most popular
unseen items are appended, scored by the ranker, and the message says so. A user without any
history gets the k most popular items (training counts) and ``fallback=True``.

Candidates come from the trained retriever (``generative_rec.stage.load_retriever`` +
``recommend_for_histories``, constrained beam search on the user's full history) when
``retriever/model.safetensors`` exists; otherwise from ``retriever/candidates.parquet``, i.e. the
list the retriever produced for the test input (the history without its last item), and the
message says so.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recdata.errors import DataError
from recdata.io import read_parquet
from ranking.checkpoint import load_model, read_ranker_config
from ranking.features import FEEDBACK_NEG, FEEDBACK_POS
from ranking.two_stage import fuse_scores, order_candidates, score_candidates, torch_threads

log = logging.getLogger(__name__)


@dataclass
class RecommendationResult:
    user_id: str
    items: list[dict[str, Any]]
    """{item_id, title, score (what the list is sorted by), p_like (the ranker's probability of a
    positive rating; None for the popularity fallback), semantic_id: list[int]}"""
    fallback: bool
    message: str
    variant: str | None = None
    candidate_source: str = ""
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _user_index(run_dir: Path, user_id: str) -> int:
    import polars as pl

    path = run_dir / "data" / "users.parquet"
    users = read_parquet(path)
    hit = users.filter(users["user_id"].cast(pl.String) == str(user_id))
    if hit.height == 0:
        raise DataError(f"unknown user {user_id!r} (not in {path})")
    return int(hit["user_idx"][0])


def _history(run_dir: Path, user_idx: int) -> tuple[np.ndarray, np.ndarray]:
    """The user's items in chronological order and their liked / not-liked feedback codes."""
    import polars as pl

    ratings = read_parquet(run_dir / "data" / "ratings.parquet")
    mine = (
        ratings.with_row_index("_row")
        .filter(pl.col("user_idx") == user_idx)
        .sort(["timestamp", "_row"], maintain_order=True)
    )
    items = mine["item_idx"].to_numpy().astype(np.int64)
    if mine["rating"].null_count() == mine.height:
        feedback = np.full(len(items), FEEDBACK_POS, dtype=np.int64)
    else:
        feedback = np.where(mine["label"].to_numpy() > 0, FEEDBACK_POS, FEEDBACK_NEG).astype(np.int64)
    return items, feedback


def _popular_items(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Items by descending training count (ties: item_idx), and the counts."""
    strata = read_parquet(run_dir / "data" / "strata.parquet")
    idx = strata["item_idx"].to_numpy().astype(np.int64)
    counts = strata["train_count"].to_numpy().astype(np.int64)
    order = np.lexsort((idx, -counts))
    return idx[order], counts[order]


def _candidates(
    run_dir: Path, user_idx: int, user_id: str, history: np.ndarray, n: int, device: str
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Top-n retriever items (and their scores) for the full history, or the saved test-time
    list as a fallback."""
    if (run_dir / "retriever" / "model.safetensors").exists():
        # Imported here: transformers makes this import the slowest part of a cold start.
        from generative_rec.stage import load_retriever, recommend_for_histories, retriever_config

        rcfg = retriever_config(run_dir)
        model, vocab, trie = load_retriever(run_dir, device)
        items, scores = recommend_for_histories(
            model=model, vocab=vocab, trie=trie, histories=[history.tolist()], user_ids=[str(user_id)],
            top_k=n, num_beams=max(rcfg.num_beams, n), max_history=rcfg.max_history,
            normalize=rcfg.normalize,
        )
        items, scores = np.asarray(items[0], dtype=np.int64), np.asarray(scores[0], dtype=np.float64)
        keep = items >= 0
        return items[keep], scores[keep], "the retriever (beam search on the full history)"
    path = run_dir / "retriever" / "candidates.parquet"
    if not path.exists():
        return np.zeros(0, dtype=np.int64), None, "nowhere (no retriever output)"
    frame = read_parquet(path)
    mine = frame.filter((frame["user_idx"] == user_idx) & (frame["split"] == "test"))
    if mine.height == 0:
        return np.zeros(0, dtype=np.int64), None, "nowhere (user absent from retriever/candidates.parquet)"
    items = np.asarray(mine["items"][0], dtype=np.int64)[:n]
    scores = np.asarray(mine["scores"][0], dtype=np.float64)[:n] if "scores" in mine.columns else None
    return items, scores, "retriever/candidates.parquet (computed for the history without its last item)"


def _item_table(run_dir: Path) -> tuple[list[str], list[str]]:
    items = read_parquet(run_dir / "data" / "items.parquet").sort("item_idx")
    titles = [t if t is not None else "" for t in items["title"].to_list()] if "title" in items.columns else [""] * items.height
    return [str(i) for i in items["item_id"].to_list()], titles


def _semantic_ids(run_dir: Path, variant: str | None) -> np.ndarray | None:
    """The IDs to show: a soft-indexing variant's own table, else the run's tokenizer table."""
    own = run_dir / "ranker" / f"semantic_ids_{variant}.parquet"
    if variant is not None and own.exists():
        frame = read_parquet(own).sort("item_idx")
        cols = sorted((c for c in frame.columns if c[:1] == "t" and c[1:].isdigit()), key=lambda c: int(c[1:]))
        return np.stack([frame[c].to_numpy() for c in cols], axis=1)
    if (run_dir / "tokenizer" / "semantic_ids.parquet").exists():
        from tokenizer.sid import SemanticIds

        return SemanticIds.from_run_dir(run_dir).codes
    return None


def recommend(
    *, run_dir: Path, user_id: str, k: int = 10, exclude_seen: bool = True, variant: str | None = None, device: str = "cpu"
) -> RecommendationResult:
    """Top-k items for ``user_id`` with titles, ranker scores and semantic IDs."""
    if k < 1:
        raise DataError(f"k must be >= 1, got {k}")
    run_dir = Path(run_dir)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    user_idx = _user_index(run_dir, user_id)
    history, feedback = _history(run_dir, user_idx)
    item_ids, titles = _item_table(run_dir)
    codes: np.ndarray | None = None  # read once the variant is known (soft variants have their own)
    timings["load_data"] = time.perf_counter() - t0

    def describe(idx: np.ndarray, scores: np.ndarray, probs: np.ndarray | None) -> list[dict[str, Any]]:
        return [
            {
                "item_id": item_ids[i],
                "title": titles[i],
                "score": float(scores[j]),
                "p_like": None if probs is None else float(probs[j]),
                "semantic_id": [int(c) for c in codes[i]] if codes is not None else [],
            }
            for j, i in enumerate(idx.tolist())
        ]

    popular, counts = _popular_items(run_dir)
    if len(history) == 0:
        codes = _semantic_ids(run_dir, None)
        top, top_counts = popular[:k], counts[:k]
        share = top_counts / max(int(counts.sum()), 1)
        timings["total"] = time.perf_counter() - t0
        return RecommendationResult(
            user_id=str(user_id),
            items=describe(top, share, None),
            fallback=True,
            message=f"user {user_id!r} has no history: showing the {len(top)} most popular items "
            "(popularity fallback; score = share of training interactions)",
            candidate_source="popularity",
            seconds=timings,
        )

    t1 = time.perf_counter()
    model, spec, cfg, variant = load_model(run_dir=run_dir, variant=variant, device=device)
    alpha = float(read_ranker_config(run_dir)["variants"][variant].get("fusion_alpha", 1.0))
    codes = _semantic_ids(run_dir, variant)
    timings["load_model"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    with torch_threads(1):  # one user's beam search: tiny ops, 0.08 s vs 4.3 s with 2 busy threads
        candidates, retriever_scores, source = _candidates(run_dir, user_idx, user_id, history, cfg.candidates_n, device)
    timings["candidates"] = time.perf_counter() - t2
    seen = history if exclude_seen else None
    t3 = time.perf_counter()
    hist_len = int(spec["history_len"])

    def ranker(items: np.ndarray) -> np.ndarray:
        with torch_threads(1):
            return score_candidates(
                model=model, users=np.array([user_idx]), histories=[history], feedback=[feedback],
                candidates=[items], history_len=hist_len, device=device,
            )[0]

    probs = ranker(candidates)
    fused = retriever_scores is not None and alpha < 1.0 and len(candidates) > 0
    order_by = fuse_scores(retriever_scores, probs, alpha) if fused else probs
    position = {int(item): j for j, item in reversed(list(enumerate(candidates.tolist())))}
    items, scores = order_candidates(candidates, order_by, seen=seen, k=k)
    item_probs = probs[[position[int(i)] for i in items]] if len(items) else np.zeros(0)
    if fused and alpha == 0.0:
        how = "kept the retriever's order (validation chose ranker weight 0; p_like shown)"
    elif fused:
        how = f"fused with the retriever score (ranker weight {alpha:g})"
    else:
        how = "re-ranked"
    notes = [f"{len(items)} of {len(candidates)} candidates from {source}"]
    if len(items) < k:
        blocked = np.concatenate([items, history if exclude_seen else np.zeros(0, np.int64)])
        extra = popular[~np.isin(popular, blocked)][: k - len(items)]
        if len(extra):
            extra, extra_probs = order_candidates(extra, ranker(extra), seen=None)
            items = np.concatenate([items, extra])
            # appended items rank below every candidate; their score is the ranker probability
            floor = (scores.min() - 1.0) if (fused and len(scores)) else 0.0
            scores = np.concatenate([scores, extra_probs + floor if fused else extra_probs])
            item_probs = np.concatenate([item_probs, extra_probs])
            notes.append(f"{len(extra)} popular items appended")
    timings["score"] = time.perf_counter() - t3
    timings["total"] = time.perf_counter() - t0
    notes.append("seen items excluded" if exclude_seen else "seen items kept")
    return RecommendationResult(
        user_id=str(user_id),
        items=describe(items, scores, item_probs),
        fallback=False,
        message=f"ranker {variant} {how}: " + "; ".join(notes),
        variant=variant,
        candidate_source=source,
        seconds=timings,
    )


def format_table(result: RecommendationResult, *, title_width: int = 48) -> str:
    """A plain-text table: rank, score, P(like), item id, title, semantic ID; message on top."""
    lines = [f"user {result.user_id}: {result.message}"]
    header = f"{'#':>3}  {'score':>7}  {'p_like':>6}  {'item_id':<10}  {'title':<{title_width}}  semantic_id"
    lines += [header, "-" * len(header)]
    for rank, item in enumerate(result.items, start=1):
        title = item["title"]
        if len(title) > title_width:
            title = title[: title_width - 1] + "…"
        sid = "-".join(str(c) for c in item["semantic_id"]) or "-"
        p_like = "-" if item.get("p_like") is None else f"{item['p_like']:.3f}"
        lines.append(
            f"{rank:>3}  {item['score']:>7.4f}  {p_like:>6}  {item['item_id']:<10}  {title:<{title_width}}  {sid}"
        )
    return "\n".join(lines)
