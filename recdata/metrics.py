"""Evaluation metrics shared by every stage (pure numpy).

Retrieval (leave-one-out, one target per user): a user's ranked list is a row of item indices,
``-1`` marks an empty or invalid slot. ``recall@k`` is the hit rate at ``k`` (one relevant item),
``ndcg@k`` is ``1 / log2(rank + 1)`` when the target sits at 1-based position ``rank <= k``, and
``mrr`` is ``1 / rank`` over the whole list (0 when absent). Metrics are reported overall and per
popularity stratum of the *target* item.

Ranking (CTR): ``auc`` with ties scored by average rank, ``gauc`` (per-user AUC weighted by the
user's number of impressions; users whose impressions are all of one class are excluded and
counted) and clipped ``logloss``, overall and per stratum of the scored item (``ctr_metrics``).

Exposure of the top-k lists (coverage, long-tail share, Gini) and the tokenizer's codebook
figures (utilisation, entropy per position) live here too: this module is the one home of
metric code; ``eval.stats`` adds intervals and paired comparisons on top.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from recdata.errors import DataError

STRATA: tuple[str, ...] = ("popular", "middle", "long_tail", "cold")
DEFAULT_KS: tuple[int, ...] = (5, 10, 20)
INVALID_AT = 10


# --------------------------------------------------------------------------- retrieval


def _check_ranked(ranked: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ranked = np.asarray(ranked)
    targets = np.asarray(targets)
    if ranked.ndim != 2:
        raise DataError(f"ranked lists must be a 2-D array [users, K], got shape {ranked.shape}")
    if targets.ndim != 1 or targets.shape[0] != ranked.shape[0]:
        raise DataError(
            f"targets must be a 1-D array with one entry per ranked row "
            f"({ranked.shape[0]}), got shape {targets.shape}"
        )
    if ranked.size and not np.issubdtype(ranked.dtype, np.integer):
        raise DataError(f"ranked lists must hold integer item indices, got dtype {ranked.dtype}")
    if targets.size and not np.issubdtype(targets.dtype, np.integer):
        raise DataError(f"targets must be integer item indices, got dtype {targets.dtype}")
    if targets.size and targets.min() < 0:
        raise DataError("targets contain a negative item index")
    return ranked.astype(np.int64, copy=False), targets.astype(np.int64, copy=False)


def per_user_hits(
    *,
    ranked: np.ndarray,
    targets: np.ndarray,
    ks: Sequence[int] = DEFAULT_KS,
    valid_items: int | None = None,
) -> dict[str, np.ndarray]:
    """Per-user metric values (float arrays of length U) plus the target's 1-based ``rank``.

    Keys: ``rank`` (int, 0 = target not in the list), ``recall@k``, ``ndcg@k`` for each k,
    ``mrr`` and ``invalid@10``. A list shorter than 10 counts its missing slots as empty, hence
    invalid. Only the first occurrence of the target counts.
    """
    ranked, targets = _check_ranked(ranked, targets)
    n_users, width = ranked.shape
    invalid = ranked < 0
    if valid_items is not None:
        invalid |= ranked >= valid_items
    # An invalid slot can never hold the target, even if it equals it numerically.
    match = (ranked == targets[:, None]) & ~invalid
    found = match.any(axis=1) if width else np.zeros(n_users, dtype=bool)
    rank = np.where(found, match.argmax(axis=1) + 1 if width else 0, 0).astype(np.int64)

    out: dict[str, np.ndarray] = {"rank": rank}
    safe_rank = np.maximum(rank, 1)
    for k in ks:
        if k <= 0:
            raise DataError(f"cut-off k must be positive, got {k}")
        hit = found & (rank <= k)
        out[f"recall@{k}"] = hit.astype(np.float64)
        out[f"ndcg@{k}"] = np.where(hit, 1.0 / np.log2(safe_rank + 1.0), 0.0)
    out["mrr"] = np.where(found, 1.0 / safe_rank, 0.0)
    head = invalid[:, :INVALID_AT].sum(axis=1) + max(0, INVALID_AT - width)
    out["invalid@10"] = head / float(INVALID_AT)
    return out


def metric_names(ks: Sequence[int] = DEFAULT_KS) -> list[str]:
    """Names of the retrieval metrics in report order."""
    return (
        [f"recall@{k}" for k in ks] + [f"ndcg@{k}" for k in ks] + ["mrr", f"invalid@{INVALID_AT}"]
    )


def summarise_hits(
    hits: dict[str, np.ndarray], mask: np.ndarray | None = None, *, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, Any]:
    """Mean of each per-user metric over the users selected by ``mask`` (all when None).

    With no users selected every metric is ``None`` and ``users`` is 0.
    """
    names = metric_names(ks)
    n_total = len(hits["rank"])
    sel = np.ones(n_total, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    n = int(sel.sum())
    summary: dict[str, Any] = {}
    for name in names:
        summary[name] = float(hits[name][sel].mean()) if n else None
    summary["users"] = n
    return summary


def target_strata(targets: np.ndarray, strata: np.ndarray) -> np.ndarray:
    """Stratum label of each target item (array of str)."""
    strata = np.asarray(strata)
    targets = np.asarray(targets, dtype=np.int64)
    if targets.size and targets.max() >= len(strata):
        raise DataError(
            f"target item index {int(targets.max())} is outside the strata table "
            f"({len(strata)} items)"
        )
    return strata[targets].astype(str)


def ranking_metrics(
    *,
    ranked: np.ndarray,
    targets: np.ndarray,
    ks: Sequence[int] = DEFAULT_KS,
    strata: np.ndarray | None = None,
    valid_items: int | None = None,
) -> dict[str, Any]:
    """Leave-one-out retrieval metrics, overall and per stratum of the target item.

    Returns ``{"overall": {metric: value, ..., "users": n}, "strata": {name: {...}}}``; the strata
    section lists every name in :data:`STRATA` (users 0 and ``None`` metrics when empty) and is an
    empty dict when ``strata`` is None.
    """
    ranked, targets = _check_ranked(ranked, targets)
    hits = per_user_hits(ranked=ranked, targets=targets, ks=ks, valid_items=valid_items)
    result: dict[str, Any] = {"overall": summarise_hits(hits, ks=ks), "strata": {}}
    if strata is not None:
        labels = target_strata(targets, strata)
        unknown = sorted(set(labels.tolist()) - set(STRATA))
        if unknown:
            raise DataError(f"unknown stratum label(s) {unknown}; expected one of {list(STRATA)}")
        for name in STRATA:
            result["strata"][name] = summarise_hits(hits, labels == name, ks=ks)
    return result


# --------------------------------------------------------------------------- CTR ranking


def _check_binary(labels: np.ndarray, scores: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.ndim != 1 or scores.shape != labels.shape:
        raise DataError(f"labels and {what} must be 1-D arrays of equal length, got "
                        f"{labels.shape} and {scores.shape}")
    if labels.size and not np.isin(labels, (0, 1)).all():
        raise DataError("labels must be 0 or 1")
    if not np.isfinite(scores).all():
        raise DataError(f"{what} contain NaN or infinite values")
    return labels.astype(np.int64), scores


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values``; tied values share the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    sorted_vals = values[order]
    # Start index of each run of equal values in sorted order.
    starts = np.flatnonzero(np.r_[True, sorted_vals[1:] != sorted_vals[:-1]])
    ends = np.r_[starts[1:], len(values)]
    avg = (starts + ends + 1) / 2.0  # mean of 1-based positions starts+1 .. ends
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney U); ties count one half.

    Returns None when only one class is present (AUC undefined).
    """
    labels, scores = _check_binary(labels, scores, "scores")
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _average_ranks(scores)
    u = ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def per_user_auc(
    user_ids: np.ndarray, labels: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-user AUC. Returns ``(users, auc_values, impressions)``; AUC is NaN for one-class users."""
    labels, scores = _check_binary(labels, scores, "scores")
    user_ids = np.asarray(user_ids)
    if user_ids.shape != labels.shape:
        raise DataError(f"user_ids must have one entry per label, got {user_ids.shape} "
                        f"and {labels.shape}")
    if not len(labels):
        empty = np.zeros(0)
        return np.zeros(0, dtype=user_ids.dtype), empty, empty.astype(np.int64)
    users, uidx = np.unique(user_ids, return_inverse=True)
    # Sort by (user, score); within a user, equal scores share the average rank.
    order = np.lexsort((scores, uidx))
    u_sorted, s_sorted, y_sorted = uidx[order], scores[order], labels[order]
    n_rows = len(order)
    counts = np.bincount(uidx, minlength=len(users))
    user_start = np.r_[0, np.cumsum(counts)[:-1]]
    pos_in_user = np.arange(n_rows) - user_start[u_sorted]
    new_group = np.r_[True, (u_sorted[1:] != u_sorted[:-1]) | (s_sorted[1:] != s_sorted[:-1])]
    g_starts = np.flatnonzero(new_group)
    g_ends = np.r_[g_starts[1:], n_rows]
    group_avg = (pos_in_user[g_starts] + pos_in_user[g_ends - 1]) / 2.0 + 1.0
    ranks = np.repeat(group_avg, g_ends - g_starts)
    n_pos = np.bincount(u_sorted, weights=y_sorted, minlength=len(users))
    n_neg = counts - n_pos
    rank_pos = np.bincount(u_sorted, weights=ranks * y_sorted, minlength=len(users))
    both = (n_pos > 0) & (n_neg > 0)
    values = np.full(len(users), np.nan)
    values[both] = (rank_pos[both] - n_pos[both] * (n_pos[both] + 1) / 2.0) / (
        n_pos[both] * n_neg[both]
    )
    return users, values, counts


def gauc(
    user_ids: np.ndarray, labels: np.ndarray, scores: np.ndarray
) -> tuple[float | None, int, int]:
    """Impression-weighted mean of per-user AUC.

    Returns ``(value, n_users_used, n_users_excluded)``; users with a single class are excluded
    (their AUC is undefined). ``value`` is None when no user has both classes.
    """
    _, values, counts = per_user_auc(user_ids, labels, scores)
    used = ~np.isnan(values)
    n_used = int(used.sum())
    n_excluded = int((~used).sum())
    if n_used == 0:
        return None, 0, n_excluded
    weights = counts[used].astype(np.float64)
    return float((values[used] * weights).sum() / weights.sum()), n_used, n_excluded


def logloss(labels: np.ndarray, probs: np.ndarray, *, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy with probabilities clipped to ``[eps, 1 - eps]``."""
    labels, probs = _check_binary(labels, probs, "probabilities")
    if not len(labels):
        raise DataError("logloss needs at least one example")
    if probs.min() < 0 or probs.max() > 1:
        raise DataError("probabilities must lie in [0, 1]")
    p = np.clip(probs, eps, 1.0 - eps)
    return float(-(labels * np.log(p) + (1 - labels) * np.log(1 - p)).mean())


# --------------------------------------------------------------------------- CTR


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


# --------------------------------------------------------------------------- exposure


def _valid_top(ranked: np.ndarray, k: int, n_items: int) -> np.ndarray:
    """Flat array of the valid item indices in the top ``k`` slots of every list."""
    ranked = np.asarray(ranked)
    if ranked.ndim != 2:
        raise DataError(f"ranked lists must be a 2-D array, got shape {ranked.shape}")
    top = ranked[:, :k].astype(np.int64).ravel()
    return top[(top >= 0) & (top < n_items)]


def exposure_counts(ranked: np.ndarray, *, n_items: int, k: int = 10) -> np.ndarray:
    """How often each catalogue item appears in the users' top-``k`` lists."""
    return np.bincount(_valid_top(ranked, k, n_items), minlength=n_items)


def coverage(ranked: np.ndarray, *, n_items: int, k: int = 10) -> float:
    """Share of the catalogue that appears in at least one user's top-``k`` list."""
    if n_items <= 0:
        raise DataError("coverage needs a non-empty catalogue")
    return float((exposure_counts(ranked, n_items=n_items, k=k) > 0).sum() / n_items)


def stratum_share(
    ranked: np.ndarray, *, strata: np.ndarray, k: int = 10, stratum: str = "long_tail"
) -> float | None:
    """Share of valid top-``k`` recommendations whose item belongs to ``stratum``.

    None when no list holds a valid item.
    """
    strata = np.asarray(strata).astype(str)
    shown = _valid_top(ranked, k, len(strata))
    if not len(shown):
        return None
    return float((strata[shown] == stratum).mean())


def gini(values: np.ndarray) -> float | None:
    """Gini coefficient of a non-negative distribution (0 = equal, (n-1)/n = one holder).

    Uses ``G = 2 * sum_i i * x_(i) / (n * sum x) - (n + 1) / n`` over ascending values, i from 1.
    None when the total is zero.
    """
    x = np.sort(np.asarray(values, dtype=np.float64))
    if x.size == 0:
        return None
    if x.min() < 0:
        raise DataError("Gini needs non-negative values")
    total = x.sum()
    if total == 0:
        return None
    n = x.size
    i = np.arange(1, n + 1)
    return float(2.0 * (i * x).sum() / (n * total) - (n + 1) / n)


def exposure_metrics(ranked: np.ndarray, *, strata: np.ndarray, k: int = 10) -> dict[str, Any]:
    """Coverage, long-tail and cold share, and Gini of exposure of the top-``k`` lists."""
    n_items = len(strata)
    counts = exposure_counts(ranked, n_items=n_items, k=k)
    return {
        f"coverage@{k}": coverage(ranked, n_items=n_items, k=k),
        f"long_tail_share@{k}": stratum_share(ranked, strata=strata, k=k, stratum="long_tail"),
        f"cold_share@{k}": stratum_share(ranked, strata=strata, k=k, stratum="cold"),
        f"gini@{k}": gini(counts),
    }


# --------------------------------------------------------------------------- codebooks


def position_stats(codes: np.ndarray, sizes: list[int], names: list[str]) -> list[dict]:
    """Per position: ``utilization`` = distinct codes used / codebook size; ``entropy`` = entropy
    of the code distribution over items in bits (maximum log2 K); ``perplexity`` = 2^entropy."""
    codes = np.asarray(codes)
    out = []
    for p, (size, name) in enumerate(zip(sizes, names)):
        counts = np.bincount(codes[:, p], minlength=size).astype(np.float64) if len(codes) else np.zeros(size)
        total = counts.sum()
        probs = counts[counts > 0] / total if total else np.zeros(0)
        entropy = float(-(probs * np.log2(probs)).sum()) if len(probs) else 0.0
        out.append({
            "name": name,
            "codebook_size": int(size),
            "utilization": float((counts > 0).sum() / size),
            "entropy": entropy,
            "perplexity": float(2.0 ** entropy),
        })
    return out


def utilization(codes: np.ndarray, sizes: list[int]) -> np.ndarray:
    """Utilisation of each position (fast path used every epoch)."""
    codes = np.asarray(codes)
    return np.array([len(np.unique(codes[:, p])) / s for p, s in enumerate(sizes)])
