"""The ``evaluate`` stage: score every system on one split, merge metrics, write the report.

Reads ``data/`` (split and strata), ``tokenizer/metrics.json``, ``retriever/candidates.parquet``
(+ ``metrics.json``), ``ranker/metrics.json`` and ``ranker/two_stage_ranked.parquet`` when they
exist, and any ``RUN_DIR/<name>/ranked.parquet`` + ``metrics.json`` left by another
retrieval stage (e.g. BBQRec); runs the baselines into ``baselines/<name>/``; writes the merged ``metrics.json`` (contract
schema plus ``protocol``, ``comparisons``, ``baselines`` and ``not_run``) and ``report/``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from eval.baselines import load_ranked, run_baseline
from eval.config import EvalConfig
from recdata.metrics import STRATA, per_user_hits, target_strata
from eval.stats import paired_comparison
from eval.report import write_report
from eval.sections import (
    MODEL_ONLY,
    dataset_section,
    is_run,
    other_systems,
    ranking_section,
    retriever_system,
    tokenizer_section,
    two_stage_system,
    variant_systems,
)
from recdata.io import read_json, write_json
from recdata.runtime import resolve_device, seed_everything
from recdata.split import SequentialSplit
from recdata.layout import layout

logger = logging.getLogger(__name__)

SYSTEM_KEYS = ("overall", "strata", "ci", "exposure", "source", "missing_users", "short_lists",
               "decoding", "protocol", "other_protocol")
COMPARED_METRICS = ("ndcg@10", "recall@10")


def protocol(*, cfg: EvalConfig, run_dir: Path, seed: int, decoding: dict[str, Any]) -> dict:
    """Everything a reader needs to reproduce the numbers."""
    data_info = {}
    path = layout(run_dir).dataset_info
    if path.exists():
        data_info = read_json(path).get("protocol", {}) or {}
    return {
        "split": "leave-one-out per user on the chronological sequence s: train s[:-2]; "
                 "validation input s[:-2] -> target s[-2]; test input s[:-1] -> target s[-1]",
        "ranking": "full ranking over the whole catalogue, no sampled negatives",
        "exclude_history": cfg.exclude_history,
        "history_items": (
            "every system's list has the user's history items removed (the generative "
            "retrievers' beam output is filtered, short lists count as misses)"
            if cfg.exclude_history else "history items are NOT removed from any system's list"
        ) + "; each system's figures under the other protocol are in its other_protocol entry "
            "where its stored list can show them (the report's 'Both protocols' table)",
        "tie_break": "full-ranking systems (most-popular, SASRec, BBQRec): equal scores "
                     "ordered by a seeded hash of (user, item), so ties earn no credit; "
                     "generative retriever: beam-search order of distinct log-likelihoods",
        "strata": "by the test target item's training interaction count: popular = top share, "
                  "long_tail = bottom share of items seen in training, middle = the rest, "
                  "cold = never seen in training",
        "data_protocol": data_info,
        "decoding": decoding,
        "ks": cfg.ks,
        "list_depth": cfg.depth,
        "invalid@10": "share of top-10 slots that are empty (-1, or missing because the list is "
                      "shorter) or not a catalogue item",
        "bootstrap": {"samples": cfg.bootstrap_samples, "confidence": cfg.confidence,
                      "seed": seed, "method": "percentile bootstrap of the mean over test "
                      "users; strata resampled within the stratum"},
        "comparisons": "paired over the same test users: bootstrap of the mean difference and "
                       "exact two-sided sign test",
        "baselines": {name: desc for name, desc in {
            "pop": "training interaction count, ties by a seeded (user, item) hash",
            "heuristic": "no learned model: w_t*log1p(count(last->j)) + w_c*sum_h "
                         "decay^h*max(0,cos(recent_h,j)) + w_p*log1p(train count of j) over the "
                         "whole catalogue, weights fitted on validation users",
            "content_knn": "no learned model, content only: sum_{h<H} decay^h*max(0,cos(recent_h,"
                           "j)) over the whole catalogue (cold items included), H and decay "
                           "fitted on validation users",
            "sasrec_priors": "SASRec's top 50 (log-softmax) re-ordered by the retriever's priors, "
                             "weights fitted on SASRec's validation lists",
            "sasrec": {"via": "RecBole 1.2.1 benchmark files (our split)",
                       "loss": "CE over the full catalogue", **asdict(cfg.sasrec)},
        }.items() if name in cfg.baselines},
    }


def strongest_baseline(systems: dict[str, dict[str, Any]], cfg: EvalConfig) -> str | None:
    """The baseline with the highest overall NDCG@10: the bar every other system is held to."""
    scored = [(s["overall"].get("ndcg@10") or 0.0, n) for n, s in systems.items()
              if n in cfg.baselines]
    return max(scored)[1] if scored else None


def comparison_pairs(*, names: list[str], reference: str | None, strongest: str | None,
                     cfg: EvalConfig) -> list[tuple[str, str]]:
    """Every own system against the strongest baseline first, then the reference system
    against every other system."""
    pairs = [(n, strongest) for n in names if strongest and n not in cfg.baselines]
    pairs += [(reference, n) for n in names if reference and n != reference
              and (reference, n) not in pairs]
    return pairs


def compare_systems(
    *, ranked: dict[str, np.ndarray], pairs: list[tuple[str, str]], split: SequentialSplit,
    cfg: EvalConfig, seed: int,
) -> list[dict[str, Any]]:
    """Paired comparisons of each ``(a, b)`` pair whose lists are at hand."""
    pairs = [(a, b) for a, b in pairs if a in ranked and b in ranked and a != b]
    if not pairs:
        return []
    hits = {n: per_user_hits(ranked=r, targets=split.test_targets, ks=cfg.ks,
                             valid_items=split.n_items) for n, r in ranked.items()}
    labels = target_strata(split.test_targets, split.strata)
    out = []
    for reference, other in pairs:
        for metric in COMPARED_METRICS:
            if metric not in hits[reference]:
                continue
            for scope in ("overall", *STRATA):
                sel = np.ones(len(labels), bool) if scope == "overall" else labels == scope
                if not sel.any():
                    continue
                res = paired_comparison(
                    hits[reference][metric][sel], hits[other][metric][sel],
                    n_samples=cfg.bootstrap_samples, confidence=cfg.confidence, seed=seed,
                )
                out.append({"a": reference, "b": other, "metric": metric, "scope": scope, **res})
    return out


def _reference(ranked: dict[str, np.ndarray], cfg: EvalConfig) -> str | None:
    """The system others are compared with: the first non-baseline (the generative retriever
    when present), else the first baseline."""
    names = list(ranked)
    own = [n for n in names if n not in cfg.baselines]
    return (own or names or [None])[0]


def run(*, cfg: EvalConfig, run_dir: Path, seed: int = 0, device: str = "auto") -> dict:
    """Evaluate every available system on ``run_dir``'s split and write metrics + report."""
    started = time.perf_counter()
    run_dir = Path(run_dir)
    seed_everything(seed)
    device = resolve_device(device)
    split = SequentialSplit.from_run_dir(run_dir)

    systems: dict[str, dict[str, Any]] = {}
    ranked: dict[str, np.ndarray] = {}
    not_run: dict[str, str] = {}

    name, section, lists = retriever_system(run_dir, split, cfg, seed)
    decoding = (section or {}).get("decoding", {})
    if section is None:
        not_run["retriever"] = "retriever/candidates.parquet not found (run train-retriever)"
    else:
        systems[name] = section
        if lists is not None:
            ranked[name] = lists
        own_name, own_section, own_lists = retriever_system(run_dir, split, cfg, seed,
                                                            model_only=True)
        if own_section is not None:
            systems[own_name], ranked[own_name] = own_section, own_lists

    baselines: dict[str, Any] = {}
    for base in cfg.baselines:
        result = run_baseline(name=base, split=split, cfg=cfg, run_dir=run_dir, seed=seed,
                              device=device)
        systems[base] = {k: result[k] for k in SYSTEM_KEYS if k in result}
        systems[base]["source"] = f"baselines/{base}/ranked.parquet"
        baselines[base] = {"seconds": result.get("seconds"), "info": result.get("info", {})}
        ranked[base] = load_ranked(run_dir, base, n_users=split.n_users, depth=cfg.depth)

    for other, section, lists in other_systems(run_dir, split, cfg, seed):
        if other in systems:
            other = f"{other} ({section['source'].split('/')[0]})"
        systems[other] = section
        ranked[other] = lists

    variant_list, variant_tokenizers = variant_systems(run_dir, split, cfg, seed)
    for other, section, lists in variant_list:
        if other in systems:
            # Same tokenizer as the main retriever (another retriever setting): the variant's
            # own name, e.g. mmq_content and mmq_content_model_only.
            variant = section['source'].split('/')[1]
            renamed = variant + (MODEL_ONLY if other.endswith(MODEL_ONLY) else "")
            other = renamed if renamed not in systems else f"{other} ({variant})"
        systems[other] = section
        if lists is not None:
            ranked[other] = lists

    ts_name, ts_section, ts_lists = two_stage_system(run_dir, split, cfg, seed)
    if ts_section is not None and ts_name is not None:
        systems[ts_name] = ts_section
        ranked[ts_name] = ts_lists

    tokenizer = tokenizer_section(run_dir)
    ranking = ranking_section(run_dir)
    for label, sec in (("tokenizer", tokenizer), ("ranking", ranking)):
        if not is_run(sec):
            not_run[label] = sec["reason"]

    strongest = strongest_baseline(systems, cfg)
    merged = {
        "run_dir": str(run_dir),
        "dataset": dataset_section(run_dir, split),
        "tokenizer": tokenizer,
        "tokenizer_variants": variant_tokenizers,
        "retrieval": {n: {k: s[k] for k in SYSTEM_KEYS if k in s} for n, s in systems.items()},
        "ranking": ranking,
        "strongest_baseline": strongest,
        "comparisons": compare_systems(
            ranked=ranked, pairs=comparison_pairs(names=list(ranked), strongest=strongest,
                                                  reference=_reference(ranked, cfg), cfg=cfg),
            split=split, cfg=cfg, seed=seed),
        "baselines": baselines,
        "protocol": protocol(cfg=cfg, run_dir=run_dir, seed=seed, decoding=decoding),
        "not_run": not_run,
    }
    write_json(run_dir / "metrics.json", merged)
    paths: dict[str, Path] = {}
    if cfg.report:
        paths = write_report(merged, out_dir=layout(run_dir).report_dir)
    summary = {
        "systems": {n: {"ndcg@10": s["overall"].get("ndcg@10"),
                        "recall@10": s["overall"].get("recall@10")} for n, s in systems.items()},
        "not_run": sorted(not_run),
        "metrics": str(run_dir / "metrics.json"),
        "report": str(paths.get("html", "")),
        "seconds": round(time.perf_counter() - started, 2),
    }
    logger.info("evaluate: %s", summary)
    return summary
