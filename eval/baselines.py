"""Baselines scored on the same split, strata and metrics as the generative retriever.

Each baseline writes ``run_dir/baselines/<name>/ranked.parquet`` (test users' top lists) and
``run_dir/baselines/<name>/metrics.json`` (metrics, intervals, exposure, timings, and the key of
the config and data it was computed from, so an unchanged baseline is not retrained).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from eval.config import EvalConfig
from eval.stats import retrieval_report
from eval.popularity import popularity_ranking
from eval.ranked import read_ranked, write_ranked
from recdata.errors import DataError
from recdata.io import read_json, write_json
from recdata.split import SequentialSplit
from recdata.faults import kill_point
from recdata.layout import layout

logger = logging.getLogger(__name__)

Lists = dict[bool, tuple[np.ndarray, np.ndarray]]
"""Ranked lists and scores of one baseline under both protocols: ``{exclude_history: (ranked
[U, depth], scores [U, depth])}``."""
RankFn = Callable[..., tuple[Lists, dict[str, Any]]]


def rank_popularity(
    *, split: SequentialSplit, cfg: EvalConfig, work_dir: Path, run_dir: Path, seed: int,
    device: str,
) -> tuple[Lists, dict[str, Any]]:
    """Most popular items by training count (ties by the shared seeded hash)."""
    lists = {
        flag: popularity_ranking(
            train_counts=split.train_counts, n_users=split.n_users, depth=cfg.depth,
            exclude=split.test_inputs if flag else None,
        )
        for flag in (False, True)
    }
    return lists, {"ranking": "training interaction count, ties by a seeded (user, item) hash"}


def rank_sasrec(
    *, split: SequentialSplit, cfg: EvalConfig, work_dir: Path, run_dir: Path, seed: int,
    device: str,
) -> tuple[Lists, dict[str, Any]]:
    """SASRec (CE loss, full softmax) trained through RecBole on our split."""
    try:
        import recbole  # noqa: F401
    except ImportError:
        raise DataError("the sasrec baseline needs RecBole (pip install recbole==1.2.1); "
                        "or drop it from eval.baselines") from None
    from eval.recbole_sasrec import train_and_rank
    from recdata.runtime import resolve_device

    wanted = device if cfg.sasrec.device == "inherit" else cfg.sasrec.device
    return train_and_rank(
        split=split, cfg=cfg.sasrec, work_dir=work_dir, ks=cfg.ks, depth=cfg.depth,
        seed=seed, device=resolve_device(wanted),
    )


def rank_heuristic(
    *, split: SequentialSplit, cfg: EvalConfig, work_dir: Path, run_dir: Path, seed: int,
    device: str,
) -> tuple[Lists, dict[str, Any]]:
    """The no-model rule (successor counts, content similarity to the recent history,
    popularity) with its weights fitted on validation users (:mod:`eval.heuristic`)."""
    from eval.heuristic import fit_heuristic

    return fit_heuristic(split=split, run_dir=run_dir, cfg=cfg.heuristic,
                         exclude_history=cfg.exclude_history, depth=cfg.depth, seed=seed)


def rank_content_knn(
    *, split: SequentialSplit, cfg: EvalConfig, work_dir: Path, run_dir: Path, seed: int,
    device: str,
) -> tuple[Lists, dict[str, Any]]:
    """Content-only nearest neighbours of the recent history over the whole catalogue, cold
    items included: the heuristic's content term alone, its history length and decay fitted on
    validation users (:class:`eval.config.ContentKnnConfig`)."""
    from eval.heuristic import fit_heuristic

    return fit_heuristic(split=split, run_dir=run_dir, cfg=cfg.content_knn.as_heuristic(),
                         exclude_history=cfg.exclude_history, depth=cfg.depth, seed=seed,
                         name="content_knn")


def rank_sasrec_priors(
    *, split: SequentialSplit, cfg: EvalConfig, work_dir: Path, run_dir: Path, seed: int,
    device: str,
) -> tuple[Lists, dict[str, Any]]:
    """SASRec's top candidates re-ordered by the retriever's priors, their weights fitted on
    SASRec's validation lists exactly as the train-retriever stage fits the retriever's."""
    from eval.ranked import drop_seen
    from eval.recbole_sasrec import CANDIDATES_FILE
    from generative_rec.config import PriorsConfig
    from generative_rec.content import ContentVectors
    from generative_rec.priors import fit_priors
    from generative_rec.transitions import TransitionCounts
    from generative_rec.untrained import UntrainedItems, trained_items
    from recdata.io import load_tensors

    path = layout(run_dir).baseline_dir("sasrec") / CANDIDATES_FILE
    if not path.exists():
        raise DataError("the sasrec_priors baseline re-orders SASRec's candidates: list sasrec "
                        "before it in eval.baselines", path=path)
    cands = {k: v.numpy() for k, v in load_tensors(path).items()}
    try:
        content = ContentVectors.from_run_dir(run_dir)
    except DataError as exc:
        logger.warning("sasrec_priors: no content prior (%s)", exc)
        content = None
    transitions = TransitionCounts.from_sequences(split.train_sequences, n_items=split.n_items)
    priors_cfg = PriorsConfig()
    depth = priors_cfg.history_depth
    recent = {which: np.stack([_recent_row(h, depth) for h in inputs])
              for which, inputs in (("valid", split.valid_inputs), ("test", split.test_inputs))}
    width = cands["valid_items"].shape[1]
    priors, report = fit_priors(
        items=cands["valid_items"], scores=cands["valid_scores"], recent=recent["valid"],
        targets=split.valid_targets, top_k=width, cfg=priors_cfg, transitions=transitions,
        content=content,
        untrained=None if content is None else UntrainedItems.build(
            content=content, trained=trained_items(split.train_sequences, split.n_items)))
    items, scores = cands["test_items"], cands["test_scores"]
    if priors.active:
        items, scores = priors.apply(items=items, scores=scores, recent=recent["test"],
                                     top_k=width)
    kept = (items[:, : cfg.depth], scores[:, : cfg.depth])
    dropped, short = drop_seen(items, split.test_inputs, depth=cfg.depth)
    dropped_scores = np.full(dropped.shape, -np.inf)
    for row in range(len(items)):
        score_of = dict(zip(items[row].tolist(), scores[row].tolist()))
        dropped_scores[row] = [score_of.get(int(i), -np.inf) for i in dropped[row]]
    info = {"candidates": int(width), "priors": report["weights"],
            "valid_ndcg@10_sasrec": report["valid_ndcg@10_model"],
            "valid_ndcg@10": report["valid_ndcg@10"], "short_lists": int(short),
            "trials": report["trials"]}
    return {False: kept, True: (dropped, dropped_scores)}, info


def _recent_row(history: np.ndarray, depth: int) -> np.ndarray:
    """The ``depth`` most recent items of one history, most recent first (-1 past its start)."""
    tail = np.asarray(history[-depth:], np.int64)[::-1]
    return np.concatenate([tail, np.full(depth - len(tail), -1, np.int64)])


BASELINES: dict[str, RankFn] = {"pop": rank_popularity, "heuristic": rank_heuristic,
                                "content_knn": rank_content_knn, "sasrec": rank_sasrec,
                                "sasrec_priors": rank_sasrec_priors}

CONFIG_SECTION = {"sasrec": "sasrec", "sasrec_priors": "sasrec", "heuristic": "heuristic",
                  "content_knn": "content_knn"}
"""The EvalConfig section each baseline reads: part of its cache key."""

# Part of a baseline's cache key: stored lists made under another tie rule are recomputed.
TIE_RULE = "seeded (user, item) hash, v1"

# Part of the key too: results stored before both protocols were scored are recomputed.
RESULT_FORMAT = 2


def data_fingerprint(run_dir: Path) -> str:
    """Hash of the split-defining artefacts (sequences and strata) and of the embeddings'
    metadata (the content the heuristic, content_knn and the priors read)."""
    digest = hashlib.sha256()
    for name in ("sequences.parquet", "strata.parquet"):
        path = layout(run_dir).data_dir / name
        if not path.exists():
            raise DataError("missing artefact (run the data stage first)", path=path)
        digest.update(path.read_bytes())
    meta = layout(run_dir).embeddings_dir / "meta.json"
    if meta.exists():
        digest.update(meta.read_bytes())
    return digest.hexdigest()[:16]


def baseline_key(*, name: str, cfg: EvalConfig, fingerprint: str, seed: int) -> str:
    relevant: dict[str, Any] = {
        "name": name, "ks": cfg.ks, "exclude_history": cfg.exclude_history, "ties": TIE_RULE,
        "format": RESULT_FORMAT, "bootstrap": [cfg.bootstrap_samples, cfg.confidence], "seed": seed, "data": fingerprint,
    }
    if name in CONFIG_SECTION:
        section = CONFIG_SECTION[name]
        relevant[section] = asdict(getattr(cfg, section))
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def run_baseline(
    *, name: str, split: SequentialSplit, cfg: EvalConfig, run_dir: Path, seed: int = 0,
    device: str = "cpu",
) -> dict[str, Any]:
    """Run (or reuse) one baseline; returns its metrics.json content."""
    if name not in BASELINES:
        raise DataError(f"unknown baseline {name!r}; choose from {sorted(BASELINES)}")
    out_dir = layout(run_dir).baseline_dir(name)
    key = baseline_key(name=name, cfg=cfg, fingerprint=data_fingerprint(run_dir), seed=seed)
    metrics_path, ranked_path = out_dir / "metrics.json", out_dir / "ranked.parquet"
    if cfg.reuse_baselines and metrics_path.exists() and ranked_path.exists():
        cached = read_json(metrics_path)
        if cached.get("key") == key:
            logger.info("baseline %s: up to date, reusing %s", name, metrics_path)
            return cached
    t0 = time.perf_counter()
    lists, info = BASELINES[name](split=split, cfg=cfg, work_dir=out_dir, run_dir=run_dir,
                                  seed=seed, device=device)
    seconds = time.perf_counter() - t0
    ranked, scores = lists[cfg.exclude_history]
    other, other_scores = lists[not cfg.exclude_history]
    write_ranked(ranked_path, users=np.arange(split.n_users), items=ranked, scores=scores)
    write_ranked(out_dir / OTHER_PROTOCOL_FILE, users=np.arange(split.n_users), items=other,
                 scores=other_scores)
    result = {
        "model": name,
        "key": key,
        "seconds": round(seconds, 2),
        "info": info,
        **_score(ranked=ranked, split=split, cfg=cfg, seed=seed),
        "other_protocol": other_protocol_report(
            ranked=other, split=split, cfg=cfg, seed=seed,
            short_lists=int((other[:, : cfg.depth] < 0).any(axis=1).sum()),
        ),
    }
    write_json(metrics_path, result)
    kill_point("evaluate.baseline")
    logger.info("baseline %s: NDCG@10 %.4f in %.1fs", name,
                result["overall"].get("ndcg@10") or 0.0, seconds)
    return result


def _score(*, ranked: np.ndarray, split: SequentialSplit, cfg: EvalConfig, seed: int) -> dict:
    return retrieval_report(
        ranked=ranked, targets=split.test_targets, strata=split.strata, ks=cfg.ks,
        valid_items=split.n_items, n_samples=cfg.bootstrap_samples, confidence=cfg.confidence,
        seed=seed,
    )


OTHER_PROTOCOL_FILE = "ranked_other_protocol.parquet"
"""A baseline's lists under the protocol that is not the headline (beside ranked.parquet)."""


def other_protocol_report(
    *, ranked: np.ndarray, split: SequentialSplit, cfg: EvalConfig, seed: int,
    short_lists: int | None,
) -> dict[str, Any]:
    """Overall metrics and intervals of lists made under the protocol that is not the headline
    (history items removed when ``cfg.exclude_history`` is off, kept when it is on)."""
    report = _score(ranked=ranked, split=split, cfg=cfg, seed=seed)
    out: dict[str, Any] = {"exclude_history": not cfg.exclude_history,
                           "overall": report["overall"], "ci": {"overall": report["ci"]["overall"]}}
    if short_lists is not None:
        out["short_lists"] = short_lists
    return out


def load_ranked(run_dir: Path, name: str, *, n_users: int, depth: int) -> np.ndarray:
    ranked, _ = read_ranked(
        layout(run_dir).baseline_dir(name) / "ranked.parquet", n_users=n_users, depth=depth
    )
    return ranked
