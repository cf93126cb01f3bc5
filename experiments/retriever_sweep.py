"""Retriever experiments on validation users, beside most-popular on the same users.

Each named setting trains the generative retriever on an existing run's data, embeddings and
semantic IDs (linked into ``OUT/<name>/``; copied when stage 2 will rewrite them) with retriever-config overrides, and
records validation Recall/NDCG@5/10/20, distinct items in the top-10 lists, training time and
the learning curve. Test users are never looked at. Results are appended to a JSONL file (one
record per setting) so a sweep can be resumed and every verdict keeps its figures.

    python experiments/retriever_sweep.py runs/base --out runs/sweep \\
        --setting 'token={"history_encoding": "token"}' --setting 'item={}' \\
        --results benchmarks/results/retriever_sweep_ml-100k.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from eval.popularity import popularity_ranking
from generative_rec.config import RetrieverConfig
from generative_rec import stage as retriever_stage
from recdata.io import read_json, read_parquet
from recdata.metrics import ranking_metrics
from recdata.split import SequentialSplit

LINKED = ("data", "embeddings", "tokenizer", "config.yaml")


def base_retriever_config(run_dir: Path) -> dict:
    """The ``retriever:`` section of the base run's resolved config."""
    import yaml

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    return dict(cfg.get("retriever") or {})


def summarise(metrics: dict) -> dict:
    o = metrics["overall"]
    keys = ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20")
    return {k: round(float(o[k]), 5) for k in keys}


def popularity_valid(split: SequentialSplit) -> dict:
    counts = np.bincount(np.concatenate(split.train_sequences), minlength=split.n_items)
    ranked, _ = popularity_ranking(train_counts=counts, n_users=split.n_users, depth=20)
    return summarise(ranking_metrics(ranked=ranked, targets=split.valid_targets, ks=(5, 10, 20),
                                     valid_items=split.n_items))


def run_setting(base: Path, out: Path, name: str, overrides: dict, seed: int) -> dict:
    run = out / name
    run.mkdir(parents=True, exist_ok=True)
    fields = base_retriever_config(base)
    fields.update(overrides)
    cfg = RetrieverConfig.from_dict(fields)
    for entry in LINKED:
        link = run / entry
        if link.exists():
            continue
        if entry == "tokenizer" and cfg.stage2.enabled:
            # Stage 2 rewrites the ID table: give it a copy, never the base run's files.
            shutil.copytree((base / entry).resolve(), link)
        else:
            os.symlink((base / entry).resolve(), link)
    t0 = time.perf_counter()
    summary = retriever_stage.run(cfg=cfg, run_dir=run, seed=seed, device="cpu")
    seconds = time.perf_counter() - t0
    valid = read_json(run / "retriever" / "metrics_valid.json")
    curve = [json.loads(line) for line in (run / "retriever" / "train_log.jsonl").read_text()
             .splitlines()]
    split = SequentialSplit.from_run_dir(run)
    frame = read_parquet(run / "retriever" / "candidates.parquet")
    lists = [row[:10] for row in frame.filter(frame["split"] == "valid")["items"].to_list()]
    distinct = len({item for row in lists for item in row})
    return {
        "setting": name, "overrides": overrides, "seed": seed, "base": str(base),
        "valid": summarise(valid), "valid_distinct@10": distinct,
        # Recall@10 of the users whose target lies in each training-popularity stratum.
        "valid_strata_recall@10": {k: round(float(v["recall@10"]), 5)
                                   for k, v in valid.get("strata", {}).items() if v["users"]},
        "valid_users": int(split.n_users),
        "train_seconds": round(summary["phases"]["train"]["seconds"], 1),
        "stage_seconds": round(seconds, 1),
        "steps": summary["phases"]["train"]["steps"],
        "best_step": summary["phases"]["train"]["best_step"],
        "curve": [{k: r[k] for k in ("phase", "step", "epoch", "train_loss", "valid_ndcg@10",
                                     "seconds") if k in r}
                  for r in curve if "valid_ndcg@10" in r],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", type=Path, help="a run directory with data/, embeddings/, tokenizer/")
    parser.add_argument("--out", type=Path, required=True, help="folder for the settings' runs")
    parser.add_argument("--setting", action="append", required=True, metavar="NAME=JSON",
                        help="a named set of retriever-config overrides (repeatable)")
    parser.add_argument("--results", type=Path, required=True, help="JSONL file to append to")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    split = SequentialSplit.from_run_dir(args.base)
    pop = popularity_valid(split)
    print(f"pop (valid, {split.n_users} users): {json.dumps(pop)}", flush=True)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    for spec in args.setting:
        name, _, payload = spec.partition("=")
        record = run_setting(args.base, args.out, name, json.loads(payload or "{}"), args.seed)
        record["pop_valid"] = pop
        with args.results.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        v = record["valid"]
        print(f"{name}: valid R@10 {v['recall@10']:.4f} N@10 {v['ndcg@10']:.4f} "
              f"R@20 {v['recall@20']:.4f} distinct@10 {record['valid_distinct@10']} "
              f"train {record['train_seconds']} s ({record['steps']} steps, best "
              f"{record['best_step']}) | pop R@10 {pop['recall@10']:.4f} "
              f"N@10 {pop['ndcg@10']:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
