"""The untrained items' channel (``retriever.priors.untrained_candidates``) on and off, offline
on a trained run of the cold-start protocol.

Takes the model's own lists (``retriever/candidates_model_only.parquet``, valid and test), fits
the priors on the validation users as the train-retriever stage does, and scores them once on
the test users with the channel off (width 0) and at the default width: overall Recall/NDCG@10, R@10 of the users whose target has training interactions, and of
the users whose target is a cold item (the only users who can tell the channel's worth — no
validation target is cold).

    python experiments/untrained_channel.py runs/quality-ml-100k-mm-cpu-cold --json out.json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from generative_rec.config import PriorsConfig
from generative_rec.content import ContentVectors
from generative_rec.priors import fit_priors
from generative_rec.transitions import TransitionCounts
from generative_rec.untrained import UntrainedItems, trained_items
from recdata.io import read_parquet
from recdata.layout import layout
from recdata.metrics import ranking_metrics
from recdata.split import SequentialSplit


def model_lists(run_dir: Path, split_name: str, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    frame = read_parquet(layout(run_dir).retriever_dir / "candidates_model_only.parquet")
    frame = frame.filter(frame["split"] == split_name)
    width = max(len(x) for x in frame["items"].to_list())
    items = np.full((n_users, width), -1, dtype=np.int64)
    scores = np.full((n_users, width), -np.inf, dtype=np.float32)
    for user, its, scs in zip(frame["user_idx"].to_list(), frame["items"].to_list(),
                              frame["scores"].to_list()):
        items[user, : len(its)] = its
        scores[user, : len(scs)] = scs
    return items, scores


def recent(inputs: list[np.ndarray], depth: int) -> np.ndarray:
    out = np.full((len(inputs), depth), -1, dtype=np.int64)
    for row, history in enumerate(inputs):
        tail = np.asarray(history)[::-1][:depth]
        out[row, : len(tail)] = tail
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    split = SequentialSplit.from_run_dir(args.run_dir)
    content = ContentVectors.from_run_dir(args.run_dir)
    transitions = TransitionCounts.from_sequences(split.train_sequences, n_items=split.n_items)
    trained = trained_items(split.train_sequences, split.n_items)
    table = UntrainedItems.build(content=content, trained=trained)
    default = PriorsConfig()
    depth = max(default.content_history)
    valid_items, valid_scores = model_lists(args.run_dir, "valid", split.n_users)
    test_items, test_scores = model_lists(args.run_dir, "test", split.n_users)
    targets = np.asarray(split.test_targets)
    cold = ~trained[targets]
    rows = []
    priors, report = fit_priors(
        items=valid_items, scores=valid_scores, recent=recent(split.valid_inputs, depth),
        targets=np.asarray(split.valid_targets), top_k=valid_items.shape[1], cfg=default,
        transitions=transitions, content=content, untrained=table)
    for width in (0, default.untrained_candidates):
        priors = replace(priors, untrained_candidates=width)
        ranked, _ = priors.apply(items=test_items, scores=test_scores,
                                 recent=recent(split.test_inputs, priors.history_needed),
                                 top_k=test_items.shape[1])

        def recall(mask: np.ndarray) -> float:
            return float((ranked[mask, :10] == targets[mask, None]).any(1).mean())
        overall = ranking_metrics(ranked=ranked, targets=targets, ks=(10,),
                                  valid_items=split.n_items)["overall"]
        top10 = ranked[:, :10]
        rows.append({
            "untrained_candidates": width, "weights": priors.weights(),
            "valid_ndcg@10": report["valid_ndcg@10"],
            "test_recall@10": round(overall["recall@10"], 4),
            "test_ndcg@10": round(overall["ndcg@10"], 4),
            "test_recall@10_trained_targets": round(recall(~cold), 4),
            "test_recall@10_cold_targets": round(recall(cold), 4),
            "cold_users": int(cold.sum()),
            "lists_with_an_untrained_item_in_top10": round(
                float(((top10 >= 0) & ~trained[np.maximum(top10, 0)]).any(1).mean()), 4),
        })
        print(json.dumps(rows[-1]))
    if args.json:
        args.json.write_text(json.dumps({"run_dir": str(args.run_dir), "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
