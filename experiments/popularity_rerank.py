"""Does a popularity correction of the retriever's scores help? An offline check on a trained run.

Re-ranks each user's saved candidates (``retriever/candidates.parquet``, valid and test) by

    score(item) - alpha * log(1 + training count of item)

— a logit adjustment against the item prior that a next-item likelihood absorbs — for a grid of
alpha, and prints validation Recall/NDCG@10, distinct items in the top-10 lists and R@10 of the
middle and long-tail strata per alpha, beside alpha = 0 (the retriever as it is). The alpha with
the best validation NDCG@10 is then scored once on the test users. Only the order inside the
saved candidates changes (their number is ``retriever.decoding.candidates_n``), so R@K at K = that number
cannot move.

    python experiments/popularity_rerank.py runs/demo
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from recdata.io import read_parquet
from recdata.layout import layout
from recdata.metrics import ranking_metrics
from recdata.split import SequentialSplit

ALPHAS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)


def candidate_lists(run_dir: Path, split_name: str, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """``[n_users, n]`` items (-1 = none) and scores (-inf = none) of one split's candidates."""
    frame = read_parquet(layout(run_dir).retriever_dir / "candidates.parquet")
    frame = frame.filter(frame["split"] == split_name)
    width = max(len(x) for x in frame["items"].to_list())
    items = np.full((n_users, width), -1, dtype=np.int64)
    scores = np.full((n_users, width), -np.inf)
    for user, its, scs in zip(frame["user_idx"].to_list(), frame["items"].to_list(),
                              frame["scores"].to_list()):
        items[user, : len(its)] = its
        scores[user, : len(scs)] = scs
    return items, scores


def rerank(items: np.ndarray, scores: np.ndarray, log_prior: np.ndarray,
           alpha: float) -> np.ndarray:
    adjusted = np.where(items >= 0, scores - alpha * log_prior[np.maximum(items, 0)], -np.inf)
    # A stable sort keeps the retriever's own order among equal adjusted scores.
    order = np.argsort(-adjusted, axis=1, kind="stable")
    return np.take_along_axis(items, order, axis=1)


def summary(ranked: np.ndarray, targets: np.ndarray, split: SequentialSplit) -> dict:
    m = ranking_metrics(ranked=ranked, targets=targets, ks=(10,), strata=split.strata,
                        valid_items=split.n_items)
    top10 = ranked[:, :10]
    return {
        "recall@10": round(float(m["overall"]["recall@10"]), 5),
        "ndcg@10": round(float(m["overall"]["ndcg@10"]), 5),
        "distinct@10": int(np.unique(top10[top10 >= 0]).size),
        "middle_recall@10": round(float(m["strata"].get("middle", {}).get("recall@10", 0.0)), 5),
        "long_tail_recall@10": round(float(
            m["strata"].get("long_tail", {}).get("recall@10", 0.0)), 5),
    }


def offline_args(doc: str | None, argv: list[str] | None) -> argparse.Namespace:
    """``RUN_DIR [--json FILE]``: what every offline re-ranking check takes."""
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args(argv)


def last_of(inputs: list[np.ndarray]) -> np.ndarray:
    """The most recent item of each history (-1 = empty)."""
    return recent_of(inputs, 1)[:, 0]


def recent_of(inputs: list[np.ndarray], n: int) -> np.ndarray:
    """``[E, n]``: the ``n`` most recent items of each history, most recent first (-1 = none)."""
    out = np.full((len(inputs), n), -1, dtype=np.int64)
    for row, seq in enumerate(inputs):
        tail = np.asarray(seq, np.int64)[::-1][:n]
        out[row, : len(tail)] = tail
    return out


def main(argv: list[str] | None = None) -> int:
    args = offline_args(__doc__, argv)

    split = SequentialSplit.from_run_dir(args.run_dir)
    log_prior = np.log1p(np.asarray(split.train_counts, dtype=np.float64))
    v_items, v_scores = candidate_lists(args.run_dir, "valid", split.n_users)
    rows = []
    print(f"{args.run_dir}: {split.n_users} users, {v_items.shape[1]} candidates each")
    print("| alpha | valid R@10 | valid N@10 | distinct@10 | middle R@10 | long-tail R@10 |")
    print("|---:|---:|---:|---:|---:|---:|")
    for alpha in ALPHAS:
        s = summary(rerank(v_items, v_scores, log_prior, alpha), split.valid_targets, split)
        rows.append({"alpha": alpha, **s})
        print(f"| {alpha:g} | {s['recall@10']:.4f} | {s['ndcg@10']:.4f} | {s['distinct@10']} | "
              f"{s['middle_recall@10']:.4f} | {s['long_tail_recall@10']:.4f} |")
    best = max(rows, key=lambda r: (r["ndcg@10"], -r["alpha"]))
    t_items, t_scores = candidate_lists(args.run_dir, "test", split.n_users)
    test = {a: summary(rerank(t_items, t_scores, log_prior, a), split.test_targets, split)
            for a in sorted({0.0, best["alpha"]})}
    print(f"chosen on validation: alpha = {best['alpha']:g}; test: "
          + "; ".join(f"alpha {a:g}: {json.dumps(s)}" for a, s in test.items()))
    if args.json:
        from recdata.io import write_json

        write_json(args.json, {"run_dir": str(args.run_dir), "valid": rows,
                               "chosen_alpha": best["alpha"],
                               "test": {str(a): s for a, s in test.items()}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
