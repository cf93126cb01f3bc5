"""Tune the SASRec baseline on validation users, with the effort the retriever got.

    python experiments/sasrec_search.py RUN_DIR --grid ml-100k --out benchmarks/results/sasrec_search_ml-100k.json

``RUN_DIR`` is any run whose data stage is done (the quality benchmark's). Starting from the
base setting, each knob is varied in turn (coordinate search, one pass), keeping a value only
when it raises the validation NDCG@10 that RecBole reports for the best epoch; every setting
trains to convergence (early stopping on that metric, ``stopping_step`` checks without a gain).
Only validation figures are written; the chosen setting goes into the benchmark config, whose
run reports its test figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

from eval.config import SASRecConfig
from eval.recbole_sasrec import train_and_rank
from recdata.io import write_json
from recdata.split import SequentialSplit

GRIDS: dict[str, dict[str, Any]] = {
    # Base: the ml-100k cpu benchmark's SASRec (its 30 most recent prefixes per user and a
    # 20-item window keep an epoch near 20 s on 2 cores; every prefix triples it).
    "ml-100k": {
        "base": dict(epochs=100, max_seq_length=20, max_train_prefixes=30, train_batch_size=512,
                     learning_rate=2e-3, hidden_dropout=0.2, attn_dropout=0.2, stopping_step=3),
        "knobs": [("hidden_dropout", [0.5]), ("learning_rate", [1e-3]), ("hidden_size", [128]),
                  ("max_seq_length", [50])],
    },
    # Base: the Beauty cpu benchmark's SASRec (the ml-100k search's choice, every prefix, to
    # convergence), whose validation score that benchmark's run already reports (--base-score).
    "amazon-beauty": {
        "base": dict(epochs=100, max_seq_length=20, max_train_prefixes=0, train_batch_size=512,
                     learning_rate=2e-3, hidden_dropout=0.2, attn_dropout=0.2, stopping_step=3),
        "knobs": [("hidden_dropout", [0.5]), ("learning_rate", [1e-3])],
    },
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--grid", choices=sorted(GRIDS), required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--base-score", type=float, default=None,
                        help="the base setting's validation NDCG@10 when a benchmark run of the "
                             "same split and seed already trained it (not retrained)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    split = SequentialSplit.from_run_dir(args.run_dir)
    grid = GRIDS[args.grid]
    trials: list[dict[str, Any]] = []

    def train(setting: dict[str, Any]) -> float:
        cfg = SASRecConfig(**{**setting, "attn_dropout": setting["hidden_dropout"]})
        t0 = time.perf_counter()
        _, info = train_and_rank(split=split, cfg=cfg, work_dir=args.run_dir / "sasrec_search",
                                 ks=(10,), depth=10, seed=args.seed, device="cpu")
        trials.append({"setting": dataclasses.asdict(cfg), "valid_ndcg@10": info["best_valid_score"],
                       "best_epoch": info["best_epoch"], "epochs_run": info["epochs_run"],
                       "seconds": round(time.perf_counter() - t0, 1)})
        logging.info("sasrec search: %s -> valid NDCG@10 %.4f (best epoch %d of %d)", setting,
                     info["best_valid_score"], info["best_epoch"], info["epochs_run"])
        write_json(args.out, {"grid": args.grid, "trials": trials})
        return info["best_valid_score"]

    best = dict(grid["base"])
    if args.base_score is None:
        best_score = train(best)
    else:
        best_score = args.base_score
        trials.append({"setting": dataclasses.asdict(SASRecConfig(**best)),
                       "valid_ndcg@10": best_score, "source": "the benchmark run (--base-score)"})
    for knob, values in grid["knobs"]:
        for value in values:
            trial = {**best, knob: value}
            score = train(trial)
            if score > best_score:
                best, best_score = trial, score
    write_json(args.out, {"grid": args.grid, "trials": trials, "chosen": best,
                          "valid_ndcg@10": best_score})
    print(json.dumps({"chosen": best, "valid_ndcg@10": best_score}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
