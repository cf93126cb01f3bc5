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
    *, split: SequentialSplit, cfg: EvalConfig, work_dir: Path, seed: int, device: str
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
    *, split: SequentialSplit, cfg: EvalConfig, work_dir: Path, seed: int, device: str
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


BASELINES: dict[str, RankFn] = {"pop": rank_popularity, "sasrec": rank_sasrec}

# Part of a baseline's cache key: stored lists made under another tie rule are recomputed.
TIE_RULE = "seeded (user, item) hash, v1"

# Part of the key too: results stored before both protocols were scored are recomputed.
RESULT_FORMAT = 2


def data_fingerprint(run_dir: Path) -> str:
    """Hash of the split-defining artefacts (sequences and strata)."""
    digest = hashlib.sha256()
    for name in ("sequences.parquet", "strata.parquet"):
        path = layout(run_dir).data_dir / name
        if not path.exists():
            raise DataError("missing artefact (run the data stage first)", path=path)
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def baseline_key(*, name: str, cfg: EvalConfig, fingerprint: str, seed: int) -> str:
    relevant: dict[str, Any] = {
        "name": name, "ks": cfg.ks, "exclude_history": cfg.exclude_history, "ties": TIE_RULE,
        "format": RESULT_FORMAT, "bootstrap": [cfg.bootstrap_samples, cfg.confidence], "seed": seed, "data": fingerprint,
    }
    if name == "sasrec":
        relevant["sasrec"] = asdict(cfg.sasrec)
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
    lists, info = BASELINES[name](split=split, cfg=cfg, work_dir=out_dir, seed=seed, device=device)
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
