"""Exposure metrics (recdata.metrics) and the bootstrap and paired comparisons of eval.stats."""

from __future__ import annotations

import numpy as np
import pytest

from recdata.metrics import coverage, exposure_counts, exposure_metrics, gini, ranking_metrics, stratum_share
from eval.stats import bootstrap_ci, bootstrap_intervals, paired_comparison, retrieval_report, sign_test
from recdata.errors import DataError

STRATA = np.array(["popular", "popular", "middle", "middle", "long_tail", "long_tail", "cold",
                   "middle"])
RANKED = np.array([[0, 1, 4, -1], [0, 2, 9, 5]])  # 9 is outside the 8-item catalogue


def test_exposure_hand_computed():
    assert exposure_counts(RANKED, n_items=8, k=3).tolist() == [2, 1, 1, 0, 1, 0, 0, 0]
    # top-3 valid items: {0, 1, 2, 4} of 8
    assert coverage(RANKED, n_items=8, k=3) == pytest.approx(4 / 8)
    # valid top-3 slots: 0, 1, 4, 0, 2 → one of five is long-tail
    assert stratum_share(RANKED, strata=STRATA, k=3) == pytest.approx(1 / 5)
    assert stratum_share(RANKED, strata=STRATA, k=4, stratum="long_tail") == pytest.approx(2 / 6)
    assert stratum_share(np.full((2, 3), -1), strata=STRATA, k=3) is None
    out = exposure_metrics(RANKED, strata=STRATA, k=10)
    assert out["coverage@10"] == pytest.approx(5 / 8)
    assert out["cold_share@10"] == 0.0


def test_gini_hand_computed():
    assert gini(np.array([5, 5, 5, 5])) == pytest.approx(0.0)
    assert gini(np.array([0, 0, 0, 1])) == pytest.approx(0.75)
    # sorted [1, 2, 3]: 2*(1+4+9)/(3*6) - 4/3 = 28/18 - 24/18 = 2/9
    assert gini(np.array([3, 1, 2])) == pytest.approx(2 / 9)
    assert gini(np.zeros(4)) is None
    with pytest.raises(DataError):
        gini(np.array([1, -1]))


def test_bootstrap_is_seeded_and_contains_point_estimate():
    rng = np.random.default_rng(0)
    values = (rng.random(300) < 0.3).astype(float)
    a = bootstrap_ci(values, n_samples=500, seed=11)
    b = bootstrap_ci(values, n_samples=500, seed=11)
    c = bootstrap_ci(values, n_samples=500, seed=12)
    assert a == b
    assert a != c
    assert a[0] <= values.mean() <= a[1]
    assert a[1] - a[0] > 0.02  # 300 Bernoulli(0.3) users cannot pin the mean to ±0.01
    assert bootstrap_ci(np.array([]), n_samples=10) is None
    assert bootstrap_ci(np.ones(5), n_samples=50) == [1.0, 1.0]


def test_bootstrap_intervals_per_stratum_contain_point_estimates():
    rng = np.random.default_rng(1)
    n_items, n_users = 30, 400
    strata = np.array(["popular"] * 8 + ["middle"] * 14 + ["long_tail"] * 8)
    ranked = np.stack([rng.permutation(n_items)[:20] for _ in range(n_users)])
    targets = rng.integers(0, n_items, size=n_users)
    out = retrieval_report(ranked=ranked, targets=targets, strata=strata, n_samples=300, seed=3)
    for scope, values in [("overall", out["overall"])] + list(out["strata"].items()):
        cis = out["ci"]["overall"] if scope == "overall" else out["ci"]["strata"][scope]
        if values["users"] == 0:
            assert all(v is None for v in cis.values())
            continue
        for name in ("recall@10", "ndcg@10", "mrr"):
            lo, hi = cis[name]
            assert lo <= values[name] <= hi, (scope, name)
    assert out["strata"]["cold"]["users"] == 0
    # retrieval_report keeps ranking_metrics' numbers untouched.
    plain = ranking_metrics(ranked=ranked, targets=targets, strata=strata)
    assert out["overall"] == plain["overall"]


def test_bootstrap_intervals_share_draws_across_metrics():
    values = np.arange(50, dtype=float)
    out = bootstrap_intervals({"x": values, "y": values * 2}, n_samples=200, seed=5)
    assert out["y"] == pytest.approx([2 * v for v in out["x"]])


def test_sign_test_exact_values():
    assert sign_test(5, 0) == pytest.approx(2 / 32)
    assert sign_test(0, 0) == 1.0
    assert sign_test(1, 1) == 1.0
    # n = 10, k = 2: 2 * (1 + 10 + 45) / 1024
    assert sign_test(8, 2) == pytest.approx(112 / 1024)


def test_paired_comparison():
    a = np.array([1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.5])
    b = np.array([0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.5])
    res = paired_comparison(a, b, n_samples=400, seed=0)
    assert (res["wins"], res["losses"], res["ties"]) == (4, 0, 3)
    assert res["diff"] == pytest.approx(4 / 7)
    assert res["p_sign"] == pytest.approx(2 / 16)
    assert res["ci"][0] <= res["diff"] <= res["ci"][1]
    assert res == paired_comparison(a, b, n_samples=400, seed=0)
    same = paired_comparison(a, a, n_samples=100)
    assert same["p_bootstrap"] == 1.0 and same["p_sign"] == 1.0
    # A clear, consistent advantage over many users is significant.
    rng = np.random.default_rng(2)
    base = (rng.random(500) < 0.2).astype(float)
    better = np.maximum(base, (rng.random(500) < 0.2).astype(float))
    strong = paired_comparison(better, base, n_samples=500)
    assert strong["p_bootstrap"] < 0.01 and strong["p_sign"] < 0.01
    with pytest.raises(DataError):
        paired_comparison(a, b[:3])
