"""Choosing the content prior's settings (``retriever.content_prior_weight``,
``content_candidates``, ``content_history``, ``content_decay``) on validation users, offline on a
trained run.

Re-orders each user's saved candidates (``retriever/candidates.parquet``, valid and test; decoded
without the content prior) by

    score(item) + beta * sum_{h < H} decay**h * max(0, cos(h-th most recent history item, item))

over the run's frozen embeddings (what ``content_prior_weight = beta``, ``content_history = H``
and ``content_decay = decay`` do when decoding, after any transition prior;
:mod:`generative_rec.content`), first adding up to M of the most recent item's nearest items
that a list lacks (``content_candidates = M``), for a grid of (beta, M, H, decay).
It prints validation Recall/NDCG@10, distinct items in the top-10 lists and R@10 of the middle
and long-tail strata per setting, beside beta = 0 (the lists as saved), then scores the setting
with the best validation NDCG@10 once on the test users.

    python experiments/content_prior.py runs/quality-amazon-beauty-cpu --json out.json
"""

from __future__ import annotations

import json

import numpy as np

from generative_rec.content import ContentVectors
from generative_rec.priors import CandidatePriors
from recdata.split import SequentialSplit

# A sibling script: running a script of this folder puts the folder first on sys.path.
from popularity_rerank import (
    candidate_lists,
    recent_of,
    offline_args,
    summary,
)

# (beta, M, H, decay): the last item alone first, then the older items too.
GRID = [(0.0, 0, 1, 0.5), (2.0, 0, 1, 0.5), (4.0, 0, 1, 0.5), (8.0, 0, 1, 0.5), (8.0, 10, 1, 0.5),
        (12.0, 5, 1, 0.5), (12.0, 10, 1, 0.5), (16.0, 5, 1, 0.5), (16.0, 10, 1, 0.5),
        (16.0, 20, 1, 0.5), (20.0, 10, 1, 0.5), (24.0, 10, 1, 0.5),
        (16.0, 5, 2, 0.5), (16.0, 5, 3, 0.5), (16.0, 5, 5, 0.5), (12.0, 5, 3, 0.5),
        (20.0, 5, 3, 0.5), (16.0, 5, 3, 0.3), (16.0, 5, 3, 0.7), (12.0, 5, 5, 0.7),
        (16.0, 5, 5, 0.7)]
HISTORY = max(h for _, _, h, _ in GRID)


def main(argv: list[str] | None = None) -> int:
    args = offline_args(__doc__, argv)

    split = SequentialSplit.from_run_dir(args.run_dir)
    content = ContentVectors.from_run_dir(args.run_dir)
    lists = {name: candidate_lists(args.run_dir, name, split.n_users) for name in ("valid", "test")}
    recent = {"valid": recent_of(split.valid_inputs, HISTORY),
              "test": recent_of(split.test_inputs, HISTORY)}
    targets = {"valid": split.valid_targets, "test": split.test_targets}

    def scored(name: str, beta: float, m: int, h: int, decay: float) -> dict:
        items, scores = lists[name]
        priors = CandidatePriors(content=content, content_weight=beta, content_candidates=m,
                                 content_history=h, content_decay=decay)
        ranked, _ = priors.apply(items=items, scores=scores, recent=recent[name],
                                 top_k=items.shape[1])
        return summary(ranked, targets[name], split)

    items = lists["valid"][0]
    near = np.stack([np.isin(items[u], content.nearest(int(recent["valid"][u, 0]))[:10])
                     for u in range(len(items))])
    print(f"{args.run_dir}: {split.n_users} users, {items.shape[1]} candidates each; "
          f"{near[items >= 0].mean():.1%} of the validation candidates are among the last "
          "item's 10 nearest items by content")
    print("| beta | M | H | decay | valid R@10 | valid N@10 | distinct@10 | middle R@10 | "
          "long-tail R@10 |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for beta, m, h, decay in GRID:
        s = scored("valid", beta, m if beta > 0 else 0, h, decay)
        rows.append({"beta": beta, "candidates": m, "history": h, "decay": decay, **s})
        print(f"| {beta:g} | {m} | {h} | {decay:g} | {s['recall@10']:.4f} | {s['ndcg@10']:.4f} | "
              f"{s['distinct@10']} | {s['middle_recall@10']:.4f} | "
              f"{s['long_tail_recall@10']:.4f} |", flush=True)
    # Ties go to the simpler setting: a lower weight, fewer candidates, fewer history items.
    best = max(rows, key=lambda r: (r["ndcg@10"], -r["beta"], -r["candidates"], -r["history"]))
    chosen = (best["beta"], best["candidates"], best["history"], best["decay"])
    settings = sorted({GRID[0], chosen})
    test = {f"beta {b:g}, M {m}, H {h}, decay {d:g}": scored("test", b, m, h, d)
            for b, m, h, d in settings}
    print(f"chosen on validation: beta = {chosen[0]:g}, M = {chosen[1]}, H = {chosen[2]}, "
          f"decay = {chosen[3]:g}; test: "
          + "; ".join(f"{k}: {json.dumps(s)}" for k, s in test.items()))
    if args.json:
        from recdata.io import write_json

        write_json(args.json, {"run_dir": args.run_dir.name, "valid": rows,
                               "chosen": dict(zip(("beta", "candidates", "history", "decay"),
                                                  chosen)),
                               "test": test})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
