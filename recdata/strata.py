"""Item popularity strata from training interaction counts."""

from __future__ import annotations

import numpy as np

STRATA = ("popular", "middle", "long_tail", "cold")


def popularity_strata(
    train_counts: np.ndarray, *, popular_share: float = 0.25, long_tail_share: float = 0.25
) -> np.ndarray:
    """Assign each item one stratum.

    Items never seen in training are ``cold``. The others are ranked by count (descending,
    ties by item index so the result is deterministic); the first ``popular_share`` of them are
    ``popular``, the last ``long_tail_share`` are ``long_tail``, the rest ``middle``.
    """
    counts = np.asarray(train_counts)
    strata = np.full(counts.shape[0], "middle", dtype=object)
    seen = np.flatnonzero(counts > 0)
    strata[counts == 0] = "cold"
    order = seen[np.lexsort((seen, -counts[seen]))]
    n_pop = int(round(popular_share * len(order)))
    n_tail = int(round(long_tail_share * len(order)))
    strata[order[:n_pop]] = "popular"
    if n_tail:
        strata[order[len(order) - n_tail :]] = "long_tail"
    return strata.astype(str)
