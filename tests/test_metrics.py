"""recdata.metrics against hand-computed cases and slow reference implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recdata.errors import DataError
from recdata.metrics import auc, gauc, logloss, per_user_auc, per_user_hits, ranking_metrics

# Four users, lists of length 5; targets at ranks 2, 1, absent, 5.
RANKED = np.array(
    [
        [5, 2, 7, 1, 0],
        [1, -1, 4, 3, 9],
        [0, 1, 2, 3, 4],
        [-1, -1, 6, 8, 3],
    ]
)
TARGETS = np.array([2, 1, 8, 3])
# Item strata: 1, 2 popular; 8 long-tail; 3 cold; nobody's target is "middle".
STRATA = np.array(
    ["middle", "popular", "popular", "cold", "middle", "middle", "middle", "middle", "long_tail",
     "long_tail"]
)

NDCG_R2 = 1 / math.log2(3)  # target at rank 2
NDCG_R5 = 1 / math.log2(6)  # target at rank 5


def test_per_user_hits_hand_computed():
    hits = per_user_hits(ranked=RANKED, targets=TARGETS, ks=(1, 3, 5))
    assert hits["rank"].tolist() == [2, 1, 0, 5]
    assert hits["recall@1"].tolist() == [0, 1, 0, 0]
    assert hits["recall@3"].tolist() == [1, 1, 0, 0]
    assert hits["recall@5"].tolist() == [1, 1, 0, 1]
    np.testing.assert_allclose(hits["ndcg@3"], [NDCG_R2, 1, 0, 0])
    np.testing.assert_allclose(hits["ndcg@5"], [NDCG_R2, 1, 0, NDCG_R5])
    np.testing.assert_allclose(hits["mrr"], [0.5, 1, 0, 0.2])
    # Lists of length 5: the 5 missing slots of the top 10 are empty, plus explicit -1s.
    np.testing.assert_allclose(hits["invalid@10"], [0.5, 0.6, 0.5, 0.7])


def test_ranking_metrics_overall_and_strata_hand_computed():
    out = ranking_metrics(ranked=RANKED, targets=TARGETS, ks=(1, 3, 5), strata=STRATA)
    o = out["overall"]
    assert o["users"] == 4
    assert o["recall@1"] == pytest.approx(0.25)
    assert o["recall@3"] == pytest.approx(0.5)
    assert o["recall@5"] == pytest.approx(0.75)
    assert o["ndcg@1"] == pytest.approx(0.25)
    assert o["ndcg@3"] == pytest.approx((NDCG_R2 + 1) / 4)
    assert o["ndcg@5"] == pytest.approx((NDCG_R2 + 1 + NDCG_R5) / 4)
    assert o["mrr"] == pytest.approx(0.425)
    assert o["invalid@10"] == pytest.approx(0.575)

    s = out["strata"]
    assert list(s) == ["popular", "middle", "long_tail", "cold"]
    assert s["popular"]["users"] == 2
    assert s["popular"]["recall@3"] == pytest.approx(1.0)
    assert s["popular"]["ndcg@3"] == pytest.approx((NDCG_R2 + 1) / 2)
    assert s["popular"]["mrr"] == pytest.approx(0.75)
    assert s["long_tail"]["users"] == 1 and s["long_tail"]["recall@5"] == 0.0
    assert s["cold"]["users"] == 1
    assert s["cold"]["recall@3"] == 0.0 and s["cold"]["recall@5"] == 1.0
    assert s["cold"]["ndcg@5"] == pytest.approx(NDCG_R5)
    assert s["middle"]["users"] == 0
    assert all(v is None for k, v in s["middle"].items() if k != "users")


def test_default_keys_and_valid_items():
    out = ranking_metrics(ranked=RANKED, targets=TARGETS, valid_items=9)
    assert set(out["overall"]) == {
        "recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr",
        "invalid@10", "users",
    }
    assert out["strata"] == {}
    # Item 9 is now out of range: user 1 gains one invalid slot.
    assert out["overall"]["invalid@10"] == pytest.approx((0.5 + 0.7 + 0.5 + 0.7) / 4)
    # recall@20 with lists of 5 equals recall@5.
    assert out["overall"]["recall@20"] == pytest.approx(0.75)


def test_invalid_slot_never_counts_as_hit_and_first_occurrence_wins():
    ranked = np.array([[12, 4, 4, 12]])
    hits = per_user_hits(ranked=ranked, targets=np.array([12]), ks=(2,), valid_items=10)
    assert hits["rank"].tolist() == [0]
    hits = per_user_hits(ranked=ranked, targets=np.array([4]), ks=(2,), valid_items=10)
    assert hits["rank"].tolist() == [2]
    assert hits["invalid@10"].tolist() == [(2 + 6) / 10]


def _slow_hits(ranked, targets, k):
    rec, ndcg, mrr = [], [], []
    for row, t in zip(ranked.tolist(), targets.tolist()):
        pos = row.index(t) + 1 if t in row else None
        rec.append(1.0 if pos is not None and pos <= k else 0.0)
        ndcg.append(1 / math.log2(pos + 1) if pos is not None and pos <= k else 0.0)
        mrr.append(1 / pos if pos is not None else 0.0)
    return rec, ndcg, mrr


def test_per_user_hits_matches_slow_reference():
    rng = np.random.default_rng(3)
    n_items = 40
    ranked = np.stack([rng.permutation(n_items)[:20] for _ in range(200)])
    targets = rng.integers(0, n_items, size=200)
    hits = per_user_hits(ranked=ranked, targets=targets, ks=(10,))
    rec, ndcg, mrr = _slow_hits(ranked, targets, 10)
    np.testing.assert_allclose(hits["recall@10"], rec)
    np.testing.assert_allclose(hits["ndcg@10"], ndcg)
    np.testing.assert_allclose(hits["mrr"], mrr)


def test_ranking_metrics_rejects_bad_shapes():
    with pytest.raises(DataError):
        ranking_metrics(ranked=np.zeros(5, dtype=int), targets=np.zeros(5, dtype=int))
    with pytest.raises(DataError):
        ranking_metrics(ranked=np.zeros((3, 4), dtype=int), targets=np.zeros(2, dtype=int))
    with pytest.raises(DataError):
        ranking_metrics(ranked=RANKED, targets=TARGETS, strata=STRATA[:3])


# ----------------------------------------------------------------------------- AUC family


def _slow_auc(labels, scores):
    pos = [s for y, s in zip(labels, scores) if y == 1]
    neg = [s for y, s in zip(labels, scores) if y == 0]
    if not pos or not neg:
        return None
    total = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return total / (len(pos) * len(neg))


def test_auc_hand_computed_with_ties():
    labels = np.array([1, 0, 1, 0, 1])
    scores = np.array([0.9, 0.9, 0.4, 0.1, 0.4])
    # pairs (pos, neg): (.9,.9)=.5 (.9,.1)=1 (.4,.9)=0 (.4,.1)=1 (.4,.9)=0 (.4,.1)=1 → 3.5 / 6
    assert auc(labels, scores) == pytest.approx(3.5 / 6)
    assert auc(np.array([1, 0]), np.array([0.2, 0.7])) == 0.0
    assert auc(np.array([1, 1]), np.array([0.2, 0.7])) is None


def test_gauc_hand_computed():
    users = np.array(["a", "a", "a", "b", "b", "c", "c", "d", "d", "d"])
    labels = np.array([1, 0, 0, 0, 1, 1, 1, 0, 0, 0])
    scores = np.array([0.8, 0.3, 0.8, 0.2, 0.1, 0.5, 0.6, 0.1, 0.2, 0.3])
    # a: (.8,.3)=1 (.8,.8)=.5 → 0.75 over 3 impressions; b: 0 over 2; c, d single-class.
    value, used, excluded = gauc(users, labels, scores)
    assert value == pytest.approx((3 * 0.75 + 2 * 0.0) / 5)
    assert (used, excluded) == (2, 2)
    assert gauc(np.array([1, 1]), np.array([0, 0]), np.array([0.1, 0.2])) == (None, 0, 1)


def test_auc_and_gauc_match_slow_reference():
    rng = np.random.default_rng(7)
    n = 600
    users = rng.integers(0, 40, size=n)
    labels = rng.integers(0, 2, size=n)
    scores = rng.integers(0, 6, size=n) / 5.0  # coarse scores → many ties
    assert auc(labels, scores) == pytest.approx(_slow_auc(labels.tolist(), scores.tolist()))
    num = den = 0.0
    excluded = 0
    for u in np.unique(users):
        sel = users == u
        a = _slow_auc(labels[sel].tolist(), scores[sel].tolist())
        if a is None:
            excluded += 1
            continue
        num += a * sel.sum()
        den += sel.sum()
    value, used, n_excl = gauc(users, labels, scores)
    assert value == pytest.approx(num / den)
    assert n_excl == excluded and used == len(np.unique(users)) - excluded
    uids, values, counts = per_user_auc(users, labels, scores)
    assert counts.sum() == n and len(uids) == len(values)


def test_logloss_hand_computed_and_clipped():
    assert logloss(np.array([1, 0]), np.array([0.8, 0.4])) == pytest.approx(
        -(math.log(0.8) + math.log(0.6)) / 2
    )
    # p = 1 for a negative would be infinite; clipping keeps it finite at -log(eps).
    assert logloss(np.array([0]), np.array([1.0])) == pytest.approx(-math.log(1e-7))
    with pytest.raises(DataError):
        logloss(np.array([0, 2]), np.array([0.1, 0.2]))
    with pytest.raises(DataError):
        logloss(np.array([0]), np.array([1.5]))
