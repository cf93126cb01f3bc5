"""The ranker's use of recdata.metrics (AUC, GAUC, log-loss) on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recdata.metrics import ctr_metrics, ctr_summary

USERS = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2])
LABELS = np.array([1, 0, 1, 0, 1, 1, 0, 1, 1])
PROBS = np.array([0.9, 0.8, 0.3, 0.1, 0.4, 0.6, 0.5, 0.2, 0.7])


def test_summary_matches_hand_computed_auc_gauc_logloss() -> None:
    got = ctr_summary(USERS, LABELS, PROBS)
    # AUC: 6 positives x 3 negatives; pairs ranked correctly: 3 + 1 + 1 + 2 + 1 + 2 = 10
    assert got["auc"] == pytest.approx(10 / 18)
    # GAUC: user 0 -> 3/4 on 4 impressions, user 1 -> 1/2 on 3, user 2 has one class: excluded
    assert got["gauc"] == pytest.approx((4 * 0.75 + 3 * 0.5) / 7)
    assert got["gauc_users"] == 2 and got["gauc_users_excluded"] == 1
    expect_ll = -sum(math.log(p) if y else math.log(1 - p) for y, p in zip(LABELS, PROBS)) / len(LABELS)
    assert got["logloss"] == pytest.approx(expect_ll)
    assert got["impressions"] == 9 and got["positives"] == 6


def test_ties_count_one_half() -> None:
    got = ctr_summary(np.array([0, 0, 0]), np.array([1, 0, 0]), np.array([0.5, 0.5, 0.2]))
    assert got["auc"] == pytest.approx(0.75)
    assert got["gauc"] == pytest.approx(0.75)


def test_strata_split_by_the_scored_item() -> None:
    items = np.arange(9)
    strata = np.array(["popular"] * 4 + ["middle"] * 3 + ["long_tail"] * 2 + ["cold"])
    got = ctr_metrics(users=USERS, items=items, labels=LABELS, probs=PROBS, strata=strata)
    assert set(got["strata"]) == {"popular", "middle", "long_tail", "cold"}
    assert got["overall"]["auc"] == pytest.approx(10 / 18)
    assert got["strata"]["popular"]["auc"] == pytest.approx(0.75)
    assert got["strata"]["popular"]["gauc"] == pytest.approx(0.75)
    assert got["strata"]["middle"]["auc"] == pytest.approx(0.5)
    tail = got["strata"]["long_tail"]  # only positives: AUC undefined, the user is excluded and counted
    assert tail["auc"] is None and tail["gauc"] is None and tail["gauc_users_excluded"] == 1
    assert tail["logloss"] == pytest.approx(-(math.log(0.2) + math.log(0.7)) / 2)
    cold = got["strata"]["cold"]
    assert cold["impressions"] == 0 and cold["auc"] is None and cold["logloss"] is None
