"""Two candidate reasons why the retriever's own lists trail the ``heuristic`` on a catalogue,
checked offline on a trained run (no training).

1. ``--clip``: the heuristic counts content cosines below 0 as 0, the item head's learned
   content signal sums signed cosines. The heuristic is scored both ways on validation users,
   at the weights the benchmark fitted (``--weights``), and the share of negative cosines in the
   catalogue is printed.
2. ``--popularity``: the model's own validation lists (``retriever/candidates_model_only``)
   re-ordered by ``score - lam * log(1 + training count)`` for a grid of ``lam``, before and
   after the run's fitted priors (``retriever/priors.json``), validation NDCG@10 each.

    python experiments/heuristic_gap.py RUN --clip --users 5000
    python experiments/heuristic_gap.py RUN --popularity
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from eval.heuristic import Heuristic, _recent as recent
from generative_rec.content import ContentVectors
from generative_rec.inference import load_priors
from generative_rec.priors import ndcg_at_10
from recdata.io import read_parquet
from recdata.layout import layout
from recdata.split import SequentialSplit

LAMBDAS = (0.0, 1.0, 2.0, 4.0, 8.0)


def heuristic_ndcg(*, split: SequentialSplit, rule: Heuristic, vectors: np.ndarray,
                   users: np.ndarray, weights: dict, clip: bool, chunk: int = 500) -> float:
    """Validation NDCG@10 of the heuristic over the whole catalogue, under the benchmark's
    protocol (history items not excluded, ties by the shared hash), its cosines clipped at 0
    (the rule as it is) or signed."""
    total = 0.0
    depth = int(weights["content_history"])
    for lo in range(0, len(users), chunk):
        block_users = users[lo:lo + chunk]
        histories = [split.valid_inputs[u] for u in block_users]
        block = rule.block(histories=histories, users=block_users, depth=depth, exclude=False)
        if not clip:  # the clipped cosines plus what clipping took away
            items = recent(histories, depth)
            for h in range(depth):
                negative = np.minimum(vectors[np.maximum(items[:, h], 0)] @ vectors.T, 0.0)
                negative[items[:, h] < 0] = 0.0
                block.content[h] += negative.astype(np.float16)
        rank = rule.rank_of_targets(block, weights, split.valid_targets[block_users])
        total += float(np.where(rank < 10, 1.0 / np.log2(rank + 2.0), 0.0).sum())
    return total / len(users)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--clip", action="store_true")
    parser.add_argument("--popularity", action="store_true")
    parser.add_argument("--users", type=int, default=5000, help="validation users (--clip)")
    parser.add_argument("--weights", type=json.loads, default={
        "transition_weight": 0.5, "content_weight": 1.0, "content_history": 3,
        "content_decay": 0.5, "popularity_weight": 0.05},
        help="the heuristic's weights (default: as fitted in the Beauty cpu benchmark)")
    args = parser.parse_args(argv)
    split = SequentialSplit.from_run_dir(args.run_dir)
    if args.clip:
        content = ContentVectors.from_run_dir(args.run_dir)
        vectors = content.vectors.astype(np.float32)
        rule = Heuristic(split=split, content=content)
        rng = np.random.default_rng(1)
        users = np.sort(rng.choice(split.n_users, min(args.users, split.n_users), replace=False))
        for depth, decay in ((args.weights["content_history"], args.weights["content_decay"]),
                             (5, 0.7)):
            w = {**args.weights, "content_history": depth, "content_decay": decay}
            for clip in (True, False):
                got = heuristic_ndcg(split=split, rule=rule, vectors=vectors, users=users,
                                     weights=w, clip=clip)
                print(f"heuristic, {depth} items, decay {decay}, cosines "
                      f"{'clipped at 0' if clip else 'signed'}: validation NDCG@10 {got:.4f}")
        sample = vectors[:200] @ vectors.T
        print(f"cosines below 0: {(sample < 0).mean():.2%}; mean cosine {sample.mean():.3f}")
    if args.popularity:
        priors = load_priors(args.run_dir)
        frame = read_parquet(layout(args.run_dir).retriever_dir / "candidates_model_only.parquet")
        frame = frame.filter(frame["split"] == "valid").sort("user_idx")
        users = frame["user_idx"].to_numpy()
        items = np.array(frame["items"].to_list())
        scores = np.array(frame["scores"].to_list())
        targets = split.valid_targets[users]
        rec = recent([split.valid_inputs[u] for u in users], priors.history_needed)
        log_pop = np.log1p(np.asarray(split.train_counts, np.float64))
        for lam in LAMBDAS:
            adjusted = scores - lam * log_pop[items]
            order = np.argsort(-adjusted, axis=1, kind="stable")
            its = np.take_along_axis(items, order, 1)
            scs = np.take_along_axis(adjusted, order, 1)
            after, _ = priors.apply(items=its, scores=scs, recent=rec, top_k=its.shape[1])
            print(f"popularity correction {lam}: validation NDCG@10 model alone "
                  f"{ndcg_at_10(its, targets):.4f}, after the fitted priors "
                  f"{ndcg_at_10(after, targets):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
