"""Train the CTR rankers on a run and print ItemID vs SID, two-stage vs retriever-only, and a
recommendation with its load time.

    python experiments/ranker.py --source runs/ml100k --work runs/ml100k_rank
    python experiments/ranker.py --work RUN_DIR --skip-train        # only the recommend timing

``--source`` is copied (data/, tokenizer/, retriever/) into ``--work`` so that the source run is
never modified. Every figure printed here is measured by this script.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path



def _fmt(value: object) -> str:
    return "   -  " if value is None else f"{value:.4f}"


def copy_run(source: Path, work: Path) -> None:
    for name in ("data", "tokenizer", "retriever"):
        src = source / name
        if src.exists():
            dst = work / name
            if dst.exists():
                shutil.rmtree(dst)
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoint"))


def print_ctr(metrics: dict) -> None:
    print("\nCTR test split (global chronological 90/10; rating > 3 = positive)")
    header = f"{'model':<15}{'stratum':<11}{'impr.':>7}{'AUC':>9}{'GAUC':>9}{'logloss':>9}{'users(excl)':>13}"
    print(header)
    print("-" * len(header))
    for name in sorted(k for k in metrics if k.startswith("ranker_")):
        rows = [("overall", metrics[name]["overall"])] + list(metrics[name]["strata"].items())
        for stratum, m in rows:
            print(f"{name:<15}{stratum:<11}{m['impressions']:>7}{_fmt(m['auc']):>9}{_fmt(m['gauc']):>9}"
                  f"{_fmt(m['logloss']):>9}{m['gauc_users']:>7}({m['gauc_users_excluded']})")


def print_two_stage(two: dict) -> None:
    if "skipped" in two:
        print(f"\ntwo-stage: skipped ({two['skipped']})")
        return
    p = two["protocol"]
    print(f"\nTwo-stage on {p['users']} leave-one-out test users: top-{p['candidates_n']} retriever "
          f"candidates (target among them for {p['candidate_recall']:.3f}), exclude_seen={p['exclude_seen']}")
    keys = ["recall@5", "recall@10", "recall@20", "ndcg@10", "mrr"]
    print(f"{'list':<20}{'stratum':<11}" + "".join(f"{k:>11}" for k in keys))
    for name in ("retriever_only", *sorted(k for k in two if k.startswith("ranker_"))):
        for stratum, m in [("overall", two[name]["overall"])] + [
            (s, two[name]["strata"][s]) for s in ("popular", "long_tail")
        ]:
            print(f"{name:<20}{stratum:<11}" + "".join(f"{_fmt(m[k]):>11}" for k in keys) + f"  (n={m['users']})")
    for key, value in p.items():
        if key.startswith("fusion_"):
            print(f"  {key}: ranker weight {value['alpha']} chosen on validation users "
                  f"(valid NDCG@10 at 0 / 0.5 / 1: {value['valid_ndcg@10']['0.0']:.4f} / "
                  f"{value['valid_ndcg@10']['0.5']:.4f} / {value['valid_ndcg@10']['1.0']:.4f})")


def recommend_timing(work: Path, user: str, k: int) -> None:
    """Cold start in a fresh interpreter (imports included), then a warm second call."""
    code = (
        "import time, json; t0 = time.perf_counter()\n"
        "from mmqrec import Recommender, format_table\n"
        "t1 = time.perf_counter()\n"
        f"rec = Recommender.load({str(work)!r}, device='cpu')\n"
        "t2 = time.perf_counter()\n"
        f"r = rec.recommend([{user!r}], k={k})[0]\n"
        "t3 = time.perf_counter()\n"
        f"r2 = rec.recommend([{user!r}], k={k})[0]\n"
        "t4 = time.perf_counter()\n"
        "print(format_table(r))\n"
        "print(json.dumps({'import_s': round(t1 - t0, 3), 'load_s': round(t2 - t1, 3), "
        "'first_call_s': round(t3 - t2, 3), 'second_call_s': round(t4 - t3, 3)}))\n"
    )
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if out.returncode != 0:
        print(out.stderr.strip().splitlines()[-1])
        return
    print(f"\nrecommend for user {user} (fresh process, wall {wall:.2f} s incl. interpreter start):")
    print(out.stdout.rstrip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, help="run directory to copy data/, tokenizer/, retriever/ from")
    parser.add_argument("--work", type=Path, required=True, help="run directory the ranker writes into")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", default="itemid,sid")
    parser.add_argument("--ngrams", action="store_true")
    parser.add_argument("--user", default=None, help="user_id for the recommend demo (default: first user)")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-train", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from ranking.config import RankerConfig
    from recdata.io import read_json

    if args.source:
        copy_run(args.source, args.work)
    if not args.skip_train:
        from ranking.stage import run

        cfg = RankerConfig(epochs=args.epochs, cpu_threads=args.threads, variants=args.variants.split(","),
                           sid_ngrams=args.ngrams)
        started = time.perf_counter()
        summary = run(cfg=cfg, run_dir=args.work, seed=args.seed, device="cpu")
        print(f"train-ranker stage: {time.perf_counter() - started:.1f} s wall on {args.threads} thread(s)")
        metrics = read_json(args.work / "ranker" / "metrics.json")
        for name, t in metrics["training"].items():
            print(f"  {name}: best epoch {t['best_epoch']}/{t['epochs_run']} (valid AUC {t['best_valid_auc']:.4f}), "
                  f"{t['seconds']:.1f} s, {t['parameters']:,} parameters")
        del summary
    metrics = read_json(args.work / "ranker" / "metrics.json")
    print_ctr(metrics)
    print_two_stage(metrics["two_stage"])
    user = args.user
    if user is None:
        import polars as pl

        user = str(pl.read_parquet(args.work / "data" / "users.parquet").sort("user_idx")["user_id"][0])
    recommend_timing(args.work, user, args.k)
    print(json.dumps({"data": metrics["data"]}, default=str))


if __name__ == "__main__":
    main()
