"""Choosing ``retriever.transition_prior_weight`` on validation users, offline on a trained run.

Re-orders each user's saved candidates (``retriever/candidates.parquet``, valid and test) by

    score(item) + gamma * log(1 + count(last history item -> item in the training sequences))

(what ``transition_prior_weight = gamma`` does when decoding; :mod:`generative_rec.transitions`)
for a grid of gamma, and prints validation Recall/NDCG@10, distinct items in the top-10 lists
and R@10 of the middle and long-tail strata per gamma, beside gamma = 0 (the lists as saved).
Then, at the chosen gamma, up to M of the most recent item's most frequent successors are added
to each list first (``transition_candidates = M``; :func:`generative_rec.transitions.
add_successors`), for a grid of M. The setting with the best validation NDCG@10 is then scored
once on the test users. Run it on lists decoded without the prior.

    python experiments/transition_prior.py runs/quality-amazon-beauty-cpu5
"""

from __future__ import annotations

import json

from generative_rec.transitions import (
    TransitionCounts,
    add_successors,
    rerank_with_transitions,
)
from recdata.split import SequentialSplit

# A sibling script: running a script of this folder puts the folder first on sys.path.
from popularity_rerank import (
    candidate_lists,
    last_of,
    offline_args,
    summary,
)

GAMMAS = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0)
SUCCESSORS = (0, 5, 10)


def main(argv: list[str] | None = None) -> int:
    args = offline_args(__doc__, argv)

    split = SequentialSplit.from_run_dir(args.run_dir)
    counts = TransitionCounts.from_sequences(split.train_sequences, n_items=split.n_items)
    lists = {name: candidate_lists(args.run_dir, name, split.n_users) for name in ("valid", "test")}
    last = {"valid": last_of(split.valid_inputs), "test": last_of(split.test_inputs)}
    targets = {"valid": split.valid_targets, "test": split.test_targets}

    def scored(name: str, gamma: float, m: int = 0) -> dict:
        items, scores = lists[name]
        width = items.shape[1]
        if m > 0 and gamma > 0:
            items, scores = add_successors(items=items, scores=scores, last=last[name],
                                           transitions=counts, m=m)
        ranked, _ = rerank_with_transitions(items=items, scores=scores, last=last[name],
                                            transitions=counts, weight=gamma)
        return summary(ranked[:, :width], targets[name], split)

    items = lists["valid"][0]
    with_count = counts.lookup(last=last["valid"], items=items)[items >= 0]
    print(f"{args.run_dir}: {split.n_users} users, {items.shape[1]} candidates each, "
          f"{len(counts.keys)} distinct training transitions; "
          f"{(with_count > 0).mean():.1%} of the validation candidates have a count")
    print("| gamma | valid R@10 | valid N@10 | distinct@10 | middle R@10 | long-tail R@10 |")
    print("|---:|---:|---:|---:|---:|---:|")
    rows = []
    for gamma in GAMMAS:
        s = scored("valid", gamma)
        rows.append({"gamma": gamma, **s})
        print(f"| {gamma:g} | {s['recall@10']:.4f} | {s['ndcg@10']:.4f} | {s['distinct@10']} | "
              f"{s['middle_recall@10']:.4f} | {s['long_tail_recall@10']:.4f} |")
    best = max(rows, key=lambda r: (r["ndcg@10"], -r["gamma"]))
    gamma = best["gamma"]
    print(f"\nat gamma = {gamma:g}, with up to M successors of the last item added first:")
    print("| M | valid R@10 | valid N@10 | distinct@10 | middle R@10 | long-tail R@10 |")
    print("|---:|---:|---:|---:|---:|---:|")
    m_rows = []
    for m in SUCCESSORS:
        s = scored("valid", gamma, m)
        m_rows.append({"gamma": gamma, "successors": m, **s})
        print(f"| {m} | {s['recall@10']:.4f} | {s['ndcg@10']:.4f} | {s['distinct@10']} | "
              f"{s['middle_recall@10']:.4f} | {s['long_tail_recall@10']:.4f} |")
    chosen = max(m_rows, key=lambda r: (r["ndcg@10"], -r["successors"]))
    settings = sorted({(0.0, 0), (gamma, chosen["successors"])})
    test = {f"gamma {g:g}, M {m}": scored("test", g, m) for g, m in settings}
    print(f"chosen on validation: gamma = {gamma:g}, M = {chosen['successors']}; test: "
          + "; ".join(f"{k}: {json.dumps(s)}" for k, s in test.items()))
    if args.json:
        from recdata.io import write_json

        write_json(args.json, {"run_dir": args.run_dir.name, "valid": rows,
                               "valid_successors": m_rows, "chosen_gamma": gamma,
                               "chosen_successors": chosen["successors"], "test": test})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
