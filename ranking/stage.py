"""The ``train-ranker`` stage: CTR rankers per item representation + two-stage evaluation.

Reads ``data/`` (ratings, users, items, strata, sequences), ``tokenizer/semantic_ids.parquet``
(for the SID variants) and ``retriever/candidates.parquet`` (for the two-stage lists; skipped
with a warning when absent). Writes ``ranker/model_<variant>.safetensors``,
``ranker/config.json``, ``ranker/metrics.json`` and ``ranker/two_stage_ranked.parquet``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recdata.errors import DataError
from recdata.io import read_parquet, write_json, write_parquet
from recdata.layout import layout
from ranking.checkpoint import save_model
from ranking.config import RankerConfig
from recdata.metrics import ctr_metrics
from ranking.features import CtrData, build_ctr_data, drop_train_pairs
from ranking.models import MODELS
from ranking.train import predict, train_model
from ranking.two_stage import FeedbackLookup, fuse_scores, pad_lists, rank_lists, score_candidates

log = logging.getLogger(__name__)

PROTOCOL = {
    "ctr_split": "global chronological 90/10 split of ratings.parquet; the last 10% of the 90% is "
    "validation (early stopping on validation AUC, best epoch kept)",
    "labels": "explicit data: rating > 3 = 1; implicit data: observed = 1 plus uniformly sampled "
    "unseen items = 0 (negatives_per_positive per interaction, seeded)",
    "history": "the user's interactions strictly before the scored one (timestamp, then the data "
    "stage's stable order), most recent history_len, each with its own liked/not-liked feedback",
    "gauc": "per-user AUC weighted by the user's impressions; one-class users excluded and counted",
    "strata": "popularity stratum of the scored item (training counts of the sequential split)",
    "two_stage": "leave-one-out test users: retriever top-N candidates for input s[:-1], re-scored by "
    "the ranker with history s[:-1], seen items excluded when exclude_seen, full list evaluated with "
    "recall/ndcg/mrr against s[-1]; retriever_only applies the same exclusion to the retriever order; "
    "ranker_<v> orders by the ranker alone, ranker_<v>_fused by the validation-tuned fusion",
}


def load_sid_codes(run_dir: Path) -> tuple[np.ndarray, list[int]]:
    """SID codes [N, L] (row = item_idx) and codebook sizes, via the tokenizer's API."""
    from tokenizer.sid import SemanticIds

    sids = SemanticIds.from_run_dir(run_dir)
    return np.asarray(sids.codes, dtype=np.int64), [int(s) for s in sids.codebook_sizes]


def sid_frame(sids: Any) -> Any:
    """The ``semantic_ids.parquet`` column layout (item_idx, item_id, t0..t{L-1})."""
    import polars as pl

    cols: dict[str, Any] = {"item_idx": np.arange(sids.n_items, dtype=np.int64), "item_id": list(sids.item_ids)}
    for p in range(sids.length):
        cols[f"t{p}"] = sids.codes[:, p].astype(np.int64)
    return pl.DataFrame(cols)


def _sequential_split(run_dir: Path):
    from recdata.split import SequentialSplit

    return SequentialSplit.from_run_dir(run_dir)


def _holdout_sequential_targets(data: CtrData, split) -> int:
    users = np.arange(split.n_users, dtype=np.int64)
    held_users = np.concatenate([users, users])
    held_items = np.concatenate([split.valid_targets, split.test_targets])
    data.examples, dropped = drop_train_pairs(data.examples, users=held_users, items=held_items, n_items=data.n_items)
    return dropped


def read_candidates(run_dir: Path, *, split: str, n: int) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """(user_idx [U], top-n items per user, their retriever scores) of one split."""
    path = layout(run_dir).candidates
    frame = read_parquet(path)
    missing = {"user_idx", "split", "items"} - set(frame.columns)
    if missing:
        raise DataError(f"columns missing: {sorted(missing)}", path=path)
    frame = frame.filter(frame["split"] == split).sort("user_idx")
    users = frame["user_idx"].to_numpy().astype(np.int64)
    items = [np.asarray(x, dtype=np.int64)[:n] for x in frame["items"].to_list()]
    if "scores" in frame.columns:
        scores = [np.asarray(x, dtype=np.float64)[:n] for x in frame["scores"].to_list()]
    else:
        scores = [-np.arange(len(x), dtype=np.float64) for x in items]
    return users, items, scores


@dataclass
class _SplitCandidates:
    users: np.ndarray
    candidates: list[np.ndarray]
    retriever_scores: list[np.ndarray]
    histories: list[np.ndarray]
    feedback: list[np.ndarray]
    targets: np.ndarray


def _split_candidates(*, cfg: RankerConfig, run_dir: Path, split, lookup: FeedbackLookup, which: str) -> _SplitCandidates:
    users, candidates, scores = read_candidates(run_dir, split=which, n=cfg.candidates_n)
    if len(users) and (users.min() < 0 or users.max() >= split.n_users):
        raise DataError("user_idx outside the user table", path=layout(run_dir).candidates)
    inputs = split.test_inputs if which == "test" else split.valid_inputs
    targets = split.test_targets if which == "test" else split.valid_targets
    histories = [inputs[u] for u in users]
    return _SplitCandidates(
        users=users, candidates=candidates, retriever_scores=scores, histories=histories,
        feedback=[lookup(u, h) for u, h in zip(users, histories)], targets=targets[users],
    )


def _two_stage(
    *, cfg: RankerConfig, run_dir: Path, data: CtrData, split, models: dict[str, Any], device: str
) -> tuple[dict[str, Any], dict[str, tuple[list[np.ndarray], list[np.ndarray]]], np.ndarray, dict[str, float]]:
    """Metrics of retriever-only, pure re-ranking and fused lists; serving lists; fusion weights."""
    from recdata.metrics import ranking_metrics

    lookup = FeedbackLookup.from_store(data.examples.user, data.examples.item, data.examples.label, data.n_items)
    test = _split_candidates(cfg=cfg, run_dir=run_dir, split=split, lookup=lookup, which="test")
    valid = _split_candidates(cfg=cfg, run_dir=run_dir, split=split, lookup=lookup, which="valid")
    width = max(cfg.candidates_n, max(cfg.eval_ks))
    ks = tuple(cfg.eval_ks)

    def evaluate(lists: list[np.ndarray], on: _SplitCandidates) -> dict[str, Any]:
        return ranking_metrics(ranked=pad_lists(lists, width), targets=on.targets, ks=ks, strata=data.strata)

    def ordered(on: _SplitCandidates, scores: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        return rank_lists(candidates=on.candidates, scores=scores, histories=on.histories, exclude_seen=cfg.exclude_seen)

    def ranker_probs(model: Any, on: _SplitCandidates) -> list[np.ndarray]:
        return score_candidates(
            model=model, users=on.users, histories=on.histories, feedback=on.feedback,
            candidates=on.candidates, history_len=cfg.history_len, device=device,
        )

    alphas = sorted(set(cfg.fusion_alphas) - {1.0})
    tune = bool(alphas) and len(valid.users) > 0
    out: dict[str, Any] = {
        "protocol": {
            "candidates_n": cfg.candidates_n,
            "exclude_seen": cfg.exclude_seen,
            "users": int(len(test.users)),
            "candidate_recall": float(np.mean([t in set(c.tolist()) for t, c in zip(test.targets, test.candidates)]))
            if len(test.users) else None,
            "fusion": "ranker_<v>_fused orders by a·z(ranker logit) + (1-a)·z(retriever score), a picked "
            "by NDCG@10 on the validation users' candidates" if tune else "off",
        },
        "retriever_only": evaluate(ordered(test, test.retriever_scores)[0], test),
    }
    lists: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    chosen: dict[str, float] = {}
    for variant, model in models.items():
        probs = ranker_probs(model, test)
        pure = ordered(test, probs)
        out[f"ranker_{variant}"] = evaluate(pure[0], test)
        lists[variant], chosen[variant] = pure, 1.0
        if not tune:
            continue
        valid_probs = ranker_probs(model, valid)
        scan = {}
        for a in [*alphas, 1.0]:
            fused = [fuse_scores(r, p, a) for r, p in zip(valid.retriever_scores, valid_probs)]
            scan[a] = evaluate(ordered(valid, fused)[0], valid)["overall"]["ndcg@10"]
        best = max(scan, key=lambda a: (scan[a], -a))  # ties go to the smaller ranker weight
        fused_lists = ordered(test, [fuse_scores(r, p, best) for r, p in zip(test.retriever_scores, probs)])
        out[f"ranker_{variant}_fused"] = evaluate(fused_lists[0], test)
        out["protocol"][f"fusion_{variant}"] = {"alpha": best, "valid_ndcg@10": {str(a): v for a, v in scan.items()}}
        lists[variant], chosen[variant] = fused_lists, float(best)
    return out, lists, test.users, chosen


def run(*, cfg: RankerConfig, run_dir: Path, seed: int = 0, device: str = "auto") -> dict:
    """Train every variant, evaluate CTR metrics and the two-stage lists, write ``ranker/``."""
    import torch

    previous_threads = torch.get_num_threads()
    if cfg.cpu_threads > 0:
        torch.set_num_threads(cfg.cpu_threads)
    try:
        return _run(cfg=cfg, run_dir=run_dir, seed=seed, device=device)
    finally:
        torch.set_num_threads(previous_threads)


def _run(*, cfg: RankerConfig, run_dir: Path, seed: int, device: str) -> dict:
    from recdata.runtime import resolve_device, seed_everything

    started = time.perf_counter()
    run_dir = Path(run_dir)
    if cfg.model not in MODELS:
        raise DataError(f"unknown ranker model {cfg.model!r}; known: {sorted(MODELS)}")
    seed_everything(seed)
    device = resolve_device(device)
    data = build_ctr_data(run_dir=run_dir, negatives_per_positive=cfg.negatives_per_positive, seed=seed)
    split = _sequential_split(run_dir)
    if cfg.holdout_sequential_targets:
        data.stats["train_rows_held_out_for_two_stage"] = _holdout_sequential_targets(data, split)
        data.stats["rows_train"] = int(len(data.examples.rows("train")))
    if not len(data.examples.rows("train")):
        raise DataError("no training rows for the ranker", path=layout(run_dir).ratings)

    sid_codes = codebook_sizes = None
    if any(v in ("sid", "both") for v in cfg.variants):
        sid_codes, codebook_sizes = load_sid_codes(run_dir)

    metrics: dict[str, Any] = {}
    training: dict[str, Any] = {}
    saved_variants: dict[str, Any] = {}
    models: dict[str, Any] = {}
    test_rows = data.examples.rows("test")
    ex = data.examples

    def record(variant: str, model: Any, spec: dict[str, Any], info: dict[str, Any]) -> None:
        probs = predict(model, data, test_rows, history_len=cfg.history_len, device=device)
        metrics[f"ranker_{variant}"] = ctr_metrics(
            users=ex.user[test_rows], items=ex.item[test_rows], labels=ex.label[test_rows], probs=probs,
            strata=data.strata,
        )
        training[f"ranker_{variant}"] = {**info, "parameters": int(sum(p.numel() for p in model.parameters()))}
        save_model(run_dir=run_dir, variant=variant, model=model, spec=spec)
        saved_variants[variant] = {"spec": spec, "best_epoch": info["best_epoch"]}
        models[variant] = model
        overall = metrics[f"ranker_{variant}"]["overall"]
        log.info("ranker[%s] test auc=%s gauc=%s logloss=%s", variant, overall["auc"], overall["gauc"], overall["logloss"])

    for variant in cfg.variants:
        result = train_model(
            cfg=cfg, item_repr=variant, data=data, sid_codes=sid_codes, codebook_sizes=codebook_sizes,
            device=device, seed=seed,
        )
        record(variant, result.model, result.spec, {
            "best_epoch": result.best_epoch, "best_valid_auc": result.best_valid_auc,
            "epochs_run": len(result.log), "seconds": round(result.seconds, 2), "log": result.log,
        })

    if cfg.soft_indexing:
        from ranking.soft_index import soft_finetune

        base = cfg.soft_from
        soft = soft_finetune(
            cfg=cfg, model=models[base], spec=saved_variants[base]["spec"], data=data, run_dir=run_dir,
            device=device, seed=seed,
        )
        name = f"{base}_soft"
        record(name, soft.model, soft.spec, {
            "best_epoch": soft.best_epoch, "best_valid_auc": soft.best_valid_auc, "epochs_run": len(soft.log) - 1,
            "seconds": round(soft.seconds, 2), "log": soft.log, "items_with_changed_codes": soft.changed_items,
        })
        write_parquet(layout(run_dir).ranker_semantic_ids(name), sid_frame(soft.sids))

    serve = cfg.serve_variant if cfg.serve_variant in models else cfg.variants[0]
    cand_path = layout(run_dir).candidates
    if cand_path.exists():
        two_stage, lists, users, alphas = _two_stage(
            cfg=cfg, run_dir=run_dir, data=data, split=split, models=models, device=device
        )
        for variant, alpha in alphas.items():
            saved_variants[variant]["fusion_alpha"] = alpha
        ranked, scores = lists[serve]
        import polars as pl

        write_parquet(
            layout(run_dir).two_stage_ranked,
            pl.DataFrame(
                {"user_idx": users, "items": [r.tolist() for r in ranked], "scores": [s.tolist() for s in scores]},
                schema={"user_idx": pl.Int64, "items": pl.List(pl.Int64), "scores": pl.List(pl.Float64)},
            ),
        )
        two_stage["protocol"]["ranked_file_variant"] = serve
        two_stage["protocol"]["ranked_file_alpha"] = alphas[serve]
    else:
        log.warning("%s not found: two-stage evaluation skipped", cand_path)
        two_stage = {"skipped": f"{cand_path.relative_to(run_dir)} not found (run train-retriever first)"}
    metrics["two_stage"] = two_stage
    metrics["training"] = training
    metrics["data"] = {**data.stats, "implicit": data.implicit}
    metrics["protocol"] = PROTOCOL

    write_json(
        layout(run_dir).ranker_config,
        {"ranker": cfg.to_dict(), "seed": seed, "serve_variant": serve, "variants": saved_variants},
    )
    write_json(layout(run_dir).ranker_metrics, metrics)
    summary = {
        variant: {
            "auc": metrics[f"ranker_{variant}"]["overall"]["auc"],
            "gauc": metrics[f"ranker_{variant}"]["overall"]["gauc"],
            "long_tail_auc": metrics[f"ranker_{variant}"]["strata"]["long_tail"]["auc"],
        }
        for variant in cfg.variants
    }
    summary["seconds"] = round(time.perf_counter() - started, 2)
    log.info("ranker: %s", summary)
    return summary
