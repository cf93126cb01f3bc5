"""Top-k selection: the fast path equals the full-sort oracle, and ties earn no credit."""

from __future__ import annotations

import numpy as np

from recdata.metrics import ranking_metrics
from eval.popularity import popularity_ranking
from recdata.topk import tie_keys, top_k, top_k_reference


def test_fast_top_k_equals_full_sort_oracle():
    rng = np.random.default_rng(0)
    for _ in range(40):
        n_rows, n_items = int(rng.integers(1, 6)), int(rng.integers(1, 25))
        scores = rng.integers(0, 4, size=(n_rows, n_items)).astype(float)  # many ties
        exclude = [rng.choice(n_items, size=rng.integers(0, n_items + 1), replace=False)
                   for _ in range(n_rows)]
        users = rng.integers(0, 10_000, size=n_rows)
        k = int(rng.integers(1, n_items + 5))
        got = top_k(scores, k=k, users=users, exclude=exclude)
        want = top_k_reference(scores, k=k, users=users, exclude=exclude)
        assert got[0].tolist() == want[0].tolist()
        assert np.array_equal(got[1], want[1])


def test_constant_scores_rank_like_a_random_list():
    # Targets are the smallest item indices, which an index tie-break would always return.
    n_users, n_items, k = 3000, 500, 10
    targets = np.arange(n_users) % k
    ranked, _ = top_k(np.zeros((n_users, n_items)), k=k, users=np.arange(n_users))
    recall = ranking_metrics(ranked=ranked, targets=targets, ks=(k,))["overall"][f"recall@{k}"]
    # A random list hits with probability k / n_items = .02; sd of the mean ~.0026.
    assert abs(recall - k / n_items) < 0.01, recall
    # Different users get different orders of the tied items.
    assert len({tuple(r) for r in ranked[:50].tolist()}) > 40


def test_tie_order_depends_on_user_and_item_only():
    scores = np.zeros((6, 40))
    whole, _ = top_k(scores, k=8, users=np.arange(100, 106))
    halves = [top_k(scores[i : i + 3], k=8, users=np.arange(100 + i, 103 + i))[0]
              for i in (0, 3)]
    assert whole.tolist() == np.concatenate(halves).tolist()
    assert tie_keys(5, 7) == tie_keys(np.array([5]), np.array([7]))[0]
    assert tie_keys(5, 7) != tie_keys(7, 5)


def test_popularity_ties_follow_the_same_rule():
    counts = np.array([4, 1, 1, 1, 1, 1, 1, 0])
    ranked, _ = popularity_ranking(train_counts=counts, n_users=30, depth=3)
    assert (ranked[:, 0] == 0).all()
    want, _ = top_k(np.tile(counts.astype(float), (30, 1)), k=3)
    assert ranked.tolist() == want.tolist()
    assert len({tuple(r) for r in ranked.tolist()}) > 5  # the tied tail differs per user
