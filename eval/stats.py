"""How sure the report can be of a metric: bootstrap intervals over users, paired comparisons
of two systems on the same users, and one system's report (metrics, intervals, exposure).

Every metric itself is defined in :mod:`recdata.metrics`, the one home of metric code.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from recdata.errors import DataError
from recdata.metrics import (
    DEFAULT_KS,
    INVALID_AT,
    STRATA,
    exposure_metrics,
    metric_names,
    per_user_hits,
    ranking_metrics,
    target_strata,
)


# --------------------------------------------------------------------------- bootstrap


def _percentile_interval(samples: np.ndarray, confidence: float) -> list[float]:
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(samples, [alpha, 1.0 - alpha])
    return [float(lo), float(hi)]


def bootstrap_ci(
    values: np.ndarray, *, n_samples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> list[float] | None:
    """Percentile bootstrap interval of the mean of per-user ``values`` (users resampled).

    None when there are no users.
    """
    out = bootstrap_intervals(
        {"value": np.asarray(values, dtype=np.float64)},
        n_samples=n_samples, confidence=confidence, seed=seed,
    )
    return out["value"]


def bootstrap_intervals(
    per_user: Mapping[str, np.ndarray],
    *,
    mask: np.ndarray | None = None,
    n_samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, list[float] | None]:
    """Bootstrap intervals for several per-user metrics at once.

    Every metric is resampled with the same user draws, so intervals of one system are
    mutually consistent; ``mask`` selects the users (e.g. one stratum).
    """
    if not 0.0 < confidence < 1.0:
        raise DataError(f"confidence must lie in (0, 1), got {confidence}")
    if n_samples < 1:
        raise DataError(f"bootstrap needs at least one sample, got {n_samples}")
    names = list(per_user)
    if not names:
        return {}
    n_total = len(per_user[names[0]])
    sel = np.ones(n_total, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    n = int(sel.sum())
    if n == 0:
        return {name: None for name in names}
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_samples, n))
    result: dict[str, list[float] | None] = {}
    for name in names:
        values = np.asarray(per_user[name], dtype=np.float64)[sel]
        result[name] = _percentile_interval(values[draws].mean(axis=1), confidence)
    return result


# --------------------------------------------------------------------------- paired tests


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided sign test p-value (ties dropped beforehand)."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return float(min(1.0, 2 * tail / 2**n))


def paired_comparison(
    a: np.ndarray,
    b: np.ndarray,
    *,
    n_samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Compare two systems' per-user values on the same users (``a - b``).

    Returns the means, the mean difference with a paired bootstrap interval, a two-sided
    bootstrap p-value (twice the share of resampled differences on the other side of zero),
    and the exact sign-test p-value over users where the systems differ.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise DataError(f"paired comparison needs two 1-D arrays over the same users, got "
                        f"{a.shape} and {b.shape}")
    if a.size == 0:
        raise DataError("paired comparison needs at least one user")
    diff = a - b
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, diff.size, size=(n_samples, diff.size))
    boot = diff[draws].mean(axis=1)
    p_boot = min(1.0, 2.0 * min(float((boot <= 0).mean()), float((boot >= 0).mean())))
    if np.all(diff == 0):
        p_boot = 1.0
    wins, losses = int((diff > 0).sum()), int((diff < 0).sum())
    return {
        "users": int(diff.size),
        "mean_a": float(a.mean()),
        "mean_b": float(b.mean()),
        "diff": float(diff.mean()),
        "ci": _percentile_interval(boot, confidence),
        "p_bootstrap": p_boot,
        "wins": wins,
        "losses": losses,
        "ties": int(diff.size - wins - losses),
        "p_sign": sign_test(wins, losses),
    }


def retrieval_report(
    *,
    ranked: np.ndarray,
    targets: np.ndarray,
    strata: np.ndarray,
    ks: Sequence[int] = DEFAULT_KS,
    valid_items: int | None = None,
    n_samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Everything the report shows for one system: metrics, intervals and exposure.

    ``{"overall", "strata"}`` follow :func:`ranking_metrics`; ``"ci"`` mirrors them with
    ``[low, high]`` bootstrap intervals; ``"exposure"`` holds coverage, long-tail share and Gini
    of the top-10 lists.
    """
    out = ranking_metrics(
        ranked=ranked, targets=targets, ks=ks, strata=strata, valid_items=valid_items
    )
    hits = per_user_hits(ranked=ranked, targets=targets, ks=ks, valid_items=valid_items)
    names = metric_names(ks)
    per_user = {name: hits[name] for name in names}
    labels = target_strata(targets, strata)
    ci: dict[str, Any] = {
        "overall": bootstrap_intervals(
            per_user, n_samples=n_samples, confidence=confidence, seed=seed
        ),
        "strata": {},
    }
    for j, name in enumerate(STRATA):
        ci["strata"][name] = bootstrap_intervals(
            per_user, mask=labels == name, n_samples=n_samples, confidence=confidence,
            seed=seed + 1 + j,
        )
    out["ci"] = ci
    out["exposure"] = exposure_metrics(ranked, strata=strata, k=INVALID_AT)
    return out
