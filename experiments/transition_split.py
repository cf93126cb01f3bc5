"""Where a retriever's hits come from: users whose target directly follows their last history
item somewhere in the training sequences ("seen transition") against all others.

A model that memorises item-to-item transitions (SASRec does) wins the first group; one that
generalises from item content wins the second. Reads a run's saved lists only (no training):
the retriever's ``candidates.parquet`` and, for the test users, SASRec's ``ranked.parquet``.

    python experiments/transition_split.py runs/quality-amazon-beauty-cpu --split test
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from recdata.io import read_parquet
from recdata.split import SequentialSplit

K = 10


def seen_transitions(split: SequentialSplit, split_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Per user: whether (last history item -> target) occurs in a training sequence, and the
    target."""
    pairs = set()
    for seq in split.train_sequences:
        pairs.update(zip(seq[:-1].tolist(), seq[1:].tolist()))
    offset = 3 if split_name == "valid" else 2
    last = [int(s[-offset]) for s in split.sequences]
    targets = split.valid_targets if split_name == "valid" else split.test_targets
    seen = np.array([(a, int(b)) in pairs for a, b in zip(last, targets)])
    return seen, targets


def hits_at_k(lists: Path, split_name: str, targets: np.ndarray, n_users: int) -> np.ndarray | None:
    """``[n_users]`` rank of the target within the first K (K = missed), or None if absent."""
    if not lists.exists():
        return None
    frame = read_parquet(lists)
    frame = frame.filter(frame["split"] == split_name).sort("user_idx")
    if frame.height != n_users:
        return None
    items = np.array([row[:K] + [-1] * (K - len(row[:K])) for row in frame["items"].to_list()])
    hit = items == targets[frame["user_idx"].to_numpy()][:, None]
    return np.where(hit.any(1), hit.argmax(1), K)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--split", choices=("valid", "test"), default="valid")
    args = ap.parse_args(argv)
    split = SequentialSplit.from_run_dir(args.run)
    seen, targets = seen_transitions(split, args.split)
    out = {"split": args.split, "users": int(len(seen)), "seen_share": round(float(seen.mean()), 4)}
    sources = {"retriever": args.run / "retriever" / "candidates.parquet",
               "sasrec": args.run / "baselines" / "sasrec" / "ranked.parquet"}
    for name, path in sources.items():
        rank = hits_at_k(path, args.split, targets, split.n_users)
        if rank is None:
            continue
        ndcg = np.where(rank < K, 1 / np.log2(rank + 2), 0.0)
        out[name] = {
            group: {f"recall@{K}": round(float((rank[mask] < K).mean()), 4),
                    f"ndcg@{K}": round(float(ndcg[mask].mean()), 4)}
            for group, mask in (("all", np.ones_like(seen)), ("seen", seen), ("unseen", ~seen))}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
