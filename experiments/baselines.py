"""Most-popular vs SASRec (RecBole) on a run directory's split, printed side by side.

    python experiments/baselines.py RUN_DIR [--quick] [--epochs N] [--exclude-history]

Needs RUN_DIR/data (the data stage). Results are stored in RUN_DIR/baselines/<name>/ and reused
when the config and the data are unchanged (``--fresh`` retrains).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from eval.baselines import run_baseline
from eval.config import EvalConfig, SASRecConfig
from recdata.metrics import STRATA
from recdata.errors import DataError
from recdata.split import SequentialSplit

METRICS = ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr")


def _fmt(value: object) -> str:
    return "—" if value is None else f"{value:.4f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--quick", action="store_true", help="short SASRec schedule")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--exclude-history", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--fresh", action="store_true", help="ignore stored results")
    parser.add_argument("--baselines", default="pop,sasrec")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    sasrec = SASRecConfig.quick() if args.quick else SASRecConfig()
    if args.epochs is not None:
        sasrec.epochs = args.epochs
    names = [n for n in args.baselines.split(",") if n]
    cfg = EvalConfig(baselines=names, exclude_history=args.exclude_history, sasrec=sasrec,
                     bootstrap_samples=args.bootstrap, reuse_baselines=not args.fresh)
    try:
        split = SequentialSplit.from_run_dir(args.run_dir)
        results = {}
        for name in names:
            t0 = time.perf_counter()
            results[name] = run_baseline(name=name, split=split, cfg=cfg, run_dir=args.run_dir,
                                         seed=args.seed, device=args.device)
            results[name]["wall"] = time.perf_counter() - t0
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    print(f"\nrun: {args.run_dir}  users: {split.n_users}  items: {split.n_items}  "
          f"exclude_history: {cfg.exclude_history}")
    for name, res in results.items():
        info = res.get("info", {})
        extra = ""
        if name == "sasrec":
            extra = (f"  best epoch {info.get('best_epoch')} of {info.get('epochs_run')}, "
                     f"train {info.get('train_seconds')}s, threads {info.get('threads')}")
        print(f"{name}: computed in {res.get('seconds')}s (this call {res['wall']:.1f}s){extra}")
    header = f"{'scope':<10} {'users':>5} {'metric':<10}" + "".join(f"{n:>26}" for n in names)
    for scope in ("overall", *STRATA):
        print()
        print(header)
        for metric in METRICS:
            cells = []
            users = None
            for name in names:
                res = results[name]
                vals = res["overall"] if scope == "overall" else res["strata"][scope]
                cis = res["ci"]["overall"] if scope == "overall" else res["ci"]["strata"][scope]
                users = vals["users"]
                ci = (cis or {}).get(metric)
                text = _fmt(vals.get(metric))
                if ci:
                    text += f" [{ci[0]:.3f},{ci[1]:.3f}]"
                cells.append(f"{text:>26}")
            print(f"{scope:<10} {users:>5} {metric:<10}" + "".join(cells))
    if "sasrec" in results:
        rb = results["sasrec"].get("info", {}).get("recbole_test", {})
        ours = results["sasrec"]["overall"]
        print("\nSASRec cross-check, RecBole's own test evaluation vs ours:")
        for metric in ("recall@10", "ndcg@10", "recall@20", "ndcg@20"):
            print(f"  {metric:<10} recbole {_fmt(rb.get(metric))}  ours {_fmt(ours.get(metric))}")
    for name, res in results.items():
        e = res.get("exposure", {})
        print(f"{name} exposure: coverage@10 {_fmt(e.get('coverage@10'))}  long-tail share@10 "
              f"{_fmt(e.get('long_tail_share@10'))}  Gini@10 {_fmt(e.get('gini@10'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
