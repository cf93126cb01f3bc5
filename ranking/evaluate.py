"""CTR metrics of a ranker overall and per popularity stratum of the scored item."""

from __future__ import annotations

from typing import Any

import numpy as np

from recdata.metrics import STRATA, auc, gauc, logloss


def ctr_summary(users: np.ndarray, labels: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """AUC, GAUC and log-loss of one set of impressions, with the counts behind them.

    ``auc``/``gauc`` are None when undefined (one class only); GAUC excludes users whose
    impressions are all one class and reports how many it used and excluded.
    """
    labels = np.asarray(labels).astype(np.int64)
    if len(labels) == 0:
        return {
            "auc": None, "gauc": None, "logloss": None,
            "impressions": 0, "positives": 0, "gauc_users": 0, "gauc_users_excluded": 0,
        }
    g, used, excluded = gauc(users, labels, probs)
    return {
        "auc": auc(labels, probs),
        "gauc": g,
        "logloss": logloss(labels, probs),
        "impressions": int(len(labels)),
        "positives": int(labels.sum()),
        "gauc_users": used,
        "gauc_users_excluded": excluded,
    }


def ctr_metrics(
    *, users: np.ndarray, items: np.ndarray, labels: np.ndarray, probs: np.ndarray, strata: np.ndarray
) -> dict[str, Any]:
    """``{"overall": {...}, "strata": {popular, middle, long_tail, cold}}`` (contract schema)."""
    item_strata = np.asarray(strata)[np.asarray(items, dtype=np.int64)]
    out: dict[str, Any] = {"overall": ctr_summary(users, labels, probs), "strata": {}}
    for name in STRATA:
        sel = item_strata == name
        out["strata"][name] = ctr_summary(users[sel], labels[sel], probs[sel])
    return out
