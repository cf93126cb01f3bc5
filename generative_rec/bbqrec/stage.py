"""The ``train-bbqrec`` stage: train BBQRec on a run directory and evaluate it on the test users.

Reads ``data/`` (leave-one-out split, popularity strata) and, when reweighting is on,
``tokenizer/semantic_ids.parquet`` (raw tokens = every position but the last, collision token).
Writes ``RUN_DIR/<cfg.name>/``:

* ``model.safetensors`` — weights (config and SID codes in the metadata / buffers);
* ``metrics.json`` — ``{"model", "overall", "strata", "protocol", "train", "similarity_bias",
  "config"}``; ``overall`` / ``strata`` come from :func:`recdata.metrics.ranking_metrics`
  (Recall@K, NDCG@K for K = 5, 10, 20, MRR, invalid@10) over the target item's stratum;
* ``ranked.parquet`` — ``user_idx, split ("test"), items (top-k item_idx), scores``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from generative_rec.bbqrec.config import BBQRecConfig
from generative_rec.bbqrec.model import BBQRec
from generative_rec.bbqrec.train import rank_users, train_model
from recdata.errors import DataError
from recdata.io import save_tensors, write_json, write_parquet
from recdata.metrics import ranking_metrics
from recdata.runtime import resolve_device, seed_everything
from recdata.split import SequentialSplit
from recdata.layout import layout

log = logging.getLogger(__name__)

KS = (5, 10, 20)


def load_raw_codes(run_dir: Path, n_items: int) -> torch.Tensor:
    """Raw SID tokens [N, L] of the run's tokenizer (collision token dropped)."""
    from tokenizer.sid import SemanticIds

    sids = SemanticIds.from_run_dir(run_dir)
    if sids.n_items != n_items:
        raise DataError(f"semantic ID table has {sids.n_items} items, data/ has {n_items}",
                        path=layout(run_dir).semantic_ids)
    if sids.length < 2:
        raise DataError("semantic IDs have no token besides the collision token",
                        path=layout(run_dir).semantic_ids)
    return torch.from_numpy(sids.codes[:, :-1].copy())


def write_ranked(path: Path, *, users: np.ndarray, items: np.ndarray, scores: np.ndarray) -> None:
    """Ranked lists in the shared ``user_idx, split, items, scores`` layout (-1 slots dropped)."""
    items_l, scores_l = [], []
    for row_items, row_scores in zip(items, scores):
        keep = row_items >= 0
        items_l.append(row_items[keep].tolist())
        scores_l.append(row_scores[keep].astype(np.float64).tolist())
    frame = pl.DataFrame(
        {"user_idx": np.asarray(users, dtype=np.int64), "split": ["test"] * len(items_l),
         "items": items_l, "scores": scores_l},
        schema={"user_idx": pl.Int64, "split": pl.Utf8, "items": pl.List(pl.Int64),
                "scores": pl.List(pl.Float64)},
    )
    write_parquet(path, frame)


def run(*, cfg: BBQRecConfig, run_dir: Path, seed: int = 0, device: str = "auto") -> dict:
    """Train and evaluate BBQRec (or, with ``cfg.reweight = False``, the plain backbone)."""
    cfg.validate()
    run_dir = Path(run_dir)
    dev = resolve_device(device)
    out = run_dir / cfg.name
    split = SequentialSplit.from_run_dir(run_dir)
    codes = load_raw_codes(run_dir, split.n_items) if cfg.reweight else None
    seed_everything(seed)
    model = BBQRec(cfg, n_items=split.n_items, codes=codes).to(dev)
    log.info("%s: %d users, %d items, reweighting %s%s", cfg.name, split.n_users, split.n_items,
             "on" if cfg.reweight else "off",
             f" ({cfg.similarity} similarity over {codes.shape[1]} SID tokens)" if codes is not None else "")

    train = train_model(model, train_sequences=split.train_sequences, valid_inputs=split.valid_inputs,
                        valid_targets=split.valid_targets, seed=seed, device=dev)
    start = time.perf_counter()
    ranked, scores = rank_users(model, split.test_inputs, k=cfg.top_k, batch_size=cfg.eval_batch_size,
                                device=dev, exclude_history=cfg.exclude_history)
    score_seconds = time.perf_counter() - start
    metrics = ranking_metrics(ranked=ranked, targets=split.test_targets, ks=KS, strata=split.strata,
                              valid_items=split.n_items)

    bias = None
    if model.bias is not None:
        bias = model.bias.table.detach().cpu().tolist()
    result = {
        "model": cfg.name,
        "overall": metrics["overall"],
        "strata": metrics["strata"],
        "protocol": {
            "split": "leave-one-out (test: s[:-1] -> s[-1]; validation s[:-2] -> s[-2] for early stopping)",
            "ranking": "full catalogue",
            "exclude_history": cfg.exclude_history,
            "strata": "stratum of the target item by training interactions",
        },
        "train": {k: v for k, v in train.items() if k != "history"},
        "train_log": train["history"],
        "score_seconds": score_seconds,
        "similarity_bias": {"mode": cfg.similarity if cfg.reweight else None,
                            "table[layer][head][similarity]": bias},
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "config": cfg.to_dict(),
    }
    save_tensors(out / "model.safetensors", model.state_dict(),
                 metadata={"format": "mmqrec-bbqrec", "config": json.dumps(cfg.to_dict()),
                           "n_items": str(split.n_items)})
    write_ranked(out / "ranked.parquet", users=np.arange(split.n_users), items=ranked, scores=scores)
    write_json(out / "metrics.json", result)
    summary = {
        "model": cfg.name,
        "recall@10": metrics["overall"]["recall@10"],
        "ndcg@10": metrics["overall"]["ndcg@10"],
        "best_epoch": train["best_epoch"],
        "best_valid_ndcg@10": train["best_valid_ndcg@10"],
        "train_seconds": train["train_seconds"],
    }
    log.info("%s done: %s", cfg.name, summary)
    return summary
