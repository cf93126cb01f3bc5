"""CTR examples and user features built from ``run_dir/data``.

Protocol (documented in the report):

* Rows come from ``data/ratings.parquet``; ``split`` is the global chronological 90/10 split
  written by the data stage (the last 10 % of the 90 % is the validation part).
* Explicit datasets (ratings present): label = rating > 3, as written by the data stage. Rows
  whose rating is null are skipped and counted.
* Implicit datasets (every rating null, e.g. amazon-beauty): each observed interaction is a
  positive; ``negatives_per_positive`` negatives per positive are drawn uniformly (seeded) from
  the items the user never interacted with. A negative shares the positive's user, history and
  split. AUC on such data measures separating observed from random unobserved items, so it is
  not comparable with the explicit-label numbers.
* History of a row: the user's interactions strictly before it in the user's chronological
  order (timestamp, then the data stage's stable row order), never the row itself or anything
  later. Each history item carries its own feedback code (liked / not liked).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recdata.errors import DataError
from recdata.layout import layout

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
# Feedback codes of history positions: 0 is padding so that the embedding row stays unused.
FEEDBACK_PAD, FEEDBACK_NEG, FEEDBACK_POS = 0, 1, 2
N_FEEDBACK = 3

# Age buckets shared by ML-100K (raw ages) and ML-1M (ages already coded as 1, 18, 25, ...).
AGE_EDGES = (18, 25, 35, 45, 50, 56)
AGE_LABELS = ("<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+")
USER_FEATURE_COLUMNS = ("age", "gender", "occupation")


@dataclass
class UserFeatures:
    """Categorical user features: ``values[u, f]`` is an index into ``vocab[names[f]]`` + 1
    (0 = missing)."""

    names: list[str]
    values: np.ndarray  # int64 [U, F]
    vocab: dict[str, list[str]]

    @property
    def sizes(self) -> list[int]:
        return [len(self.vocab[name]) + 1 for name in self.names]


@dataclass
class HistoryStore:
    """Every user's interactions, concatenated in chronological order."""

    items: np.ndarray  # int64 [T]
    feedback: np.ndarray  # int64 [T]
    user_start: np.ndarray  # int64 [U]   first position of each user
    user_end: np.ndarray  # int64 [U]     one past the last position


@dataclass
class CtrExamples:
    """One row per scored (user, item) pair; ``hist_end`` indexes the :class:`HistoryStore`."""

    user: np.ndarray  # int64 [R]
    item: np.ndarray  # int64 [R]
    label: np.ndarray  # float32 [R]
    hist_end: np.ndarray  # int64 [R]  exclusive end of the row's history in the store
    split: np.ndarray  # int8 [R]    index into SPLITS

    def rows(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == SPLITS.index(split))


@dataclass
class CtrData:
    n_users: int
    n_items: int
    examples: CtrExamples
    history: HistoryStore
    users: UserFeatures
    strata: np.ndarray  # str [N] stratum of each item
    implicit: bool
    stats: dict = field(default_factory=dict)


def bucket_age(value: object) -> str | None:
    if value is None:
        return None
    try:
        age = float(value)
    except (TypeError, ValueError):
        return None
    if not np.isfinite(age) or age <= 0:
        return None
    return AGE_LABELS[int(np.searchsorted(AGE_EDGES, age, side="right"))]


def load_user_features(run_dir: Path, n_users: int) -> UserFeatures:
    """Read age / gender / occupation from ``users.parquet`` where present (else no features)."""
    from recdata.io import read_parquet

    path = layout(run_dir).users
    frame = read_parquet(path)
    if "user_idx" not in frame.columns:
        raise DataError("column user_idx missing", path=path)
    user_idx = frame["user_idx"].to_numpy().astype(np.int64)
    if user_idx.size and (user_idx.min() < 0 or user_idx.max() >= n_users):
        raise DataError(f"user_idx outside [0, {n_users})", path=path)
    names: list[str] = []
    columns: list[np.ndarray] = []
    vocab: dict[str, list[str]] = {}
    for name in USER_FEATURE_COLUMNS:
        if name not in frame.columns:
            continue
        raw = frame[name].to_list()
        text = [bucket_age(v) if name == "age" else (None if v is None else str(v)) for v in raw]
        present = sorted({t for t in text if t is not None and t != ""})
        if not present:
            continue
        index = {value: i + 1 for i, value in enumerate(present)}
        column = np.zeros(n_users, dtype=np.int64)
        column[user_idx] = [index.get(t, 0) if t else 0 for t in text]
        names.append(name)
        columns.append(column)
        vocab[name] = present
    values = np.stack(columns, axis=1) if columns else np.zeros((n_users, 0), dtype=np.int64)
    return UserFeatures(names=names, values=values, vocab=vocab)


def load_strata(run_dir: Path, n_items: int) -> np.ndarray:
    from recdata.io import read_parquet

    path = layout(run_dir).strata
    frame = read_parquet(path)
    strata = np.full(n_items, "cold", dtype=object)
    idx = frame["item_idx"].to_numpy().astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= n_items):
        raise DataError(f"item_idx outside [0, {n_items})", path=path)
    strata[idx] = frame["stratum"].to_numpy()
    return strata.astype(str)


def catalogue_sizes(run_dir: Path) -> tuple[int, int]:
    """(n_users, n_items) from users.parquet and items.parquet."""
    import polars as pl

    from recdata.io import read_parquet

    users = read_parquet(layout(run_dir).users)
    items = read_parquet(layout(run_dir).items)
    n_users = int(users.select(pl.col("user_idx").max()).item()) + 1 if users.height else 0
    n_items = int(items.select(pl.col("item_idx").max()).item()) + 1 if items.height else 0
    return n_users, n_items


def _read_ratings(run_dir: Path, n_users: int, n_items: int):
    import polars as pl

    from recdata.io import read_parquet

    path = layout(run_dir).ratings
    frame = read_parquet(path)
    missing = {"user_idx", "item_idx", "rating", "timestamp", "label", "split"} - set(frame.columns)
    if missing:
        raise DataError(f"columns missing: {sorted(missing)}", path=path)
    frame = frame.with_row_index("_row")
    bad_split = frame.filter(~pl.col("split").is_in(list(SPLITS)))
    if bad_split.height:
        row = int(bad_split["_row"][0])
        raise DataError(f"split must be one of {SPLITS}, got {bad_split['split'][0]!r}", path=path, row=row)
    out_of_range = frame.filter(
        (pl.col("user_idx") < 0) | (pl.col("user_idx") >= n_users) | (pl.col("item_idx") < 0) | (pl.col("item_idx") >= n_items)
    )
    if out_of_range.height:
        raise DataError("user_idx or item_idx outside the catalogue", path=path, row=int(out_of_range["_row"][0]))
    # Stable chronological order per user: timestamp, then the data stage's row order.
    return frame.sort(["user_idx", "timestamp", "_row"], maintain_order=True), path


def build_ctr_data(
    *, run_dir: Path, negatives_per_positive: int = 4, seed: int = 0, max_neg_rounds: int = 20
) -> CtrData:
    """Read ``run_dir/data`` into CTR rows, a history store, user features and item strata."""
    run_dir = Path(run_dir)
    n_users, n_items = catalogue_sizes(run_dir)
    frame, path = _read_ratings(run_dir, n_users, n_items)
    stats: dict = {"rows_in": frame.height}
    implicit = frame.height > 0 and frame["rating"].null_count() == frame.height
    if not implicit:
        null_rating = frame["rating"].null_count()
        if null_rating:
            stats["skipped_null_rating"] = int(null_rating)
            log.warning("%s: skipping %d rows with a null rating", path, null_rating)
            frame = frame.filter(frame["rating"].is_not_null())

    users = frame["user_idx"].to_numpy().astype(np.int64)
    items = frame["item_idx"].to_numpy().astype(np.int64)
    split = np.array([SPLITS.index(s) for s in frame["split"].to_list()], dtype=np.int8)
    if implicit:
        labels = np.ones(len(items), dtype=np.float32)
    else:
        labels = frame["label"].to_numpy().astype(np.float32)
        if np.isnan(labels).any() or not np.isin(labels, (0.0, 1.0)).all():
            raise DataError("label must be 0 or 1 on every rated row", path=path)

    counts = np.bincount(users, minlength=n_users)
    user_end = np.cumsum(counts).astype(np.int64)
    user_start = user_end - counts
    history = HistoryStore(
        items=items,
        feedback=np.where(labels > 0.5, FEEDBACK_POS, FEEDBACK_NEG).astype(np.int64),
        user_start=user_start,
        user_end=user_end,
    )
    # Row t of the store is scored with history store[user_start : t] (strictly earlier).
    hist_end = np.arange(len(items), dtype=np.int64)
    examples = CtrExamples(user=users, item=items, label=labels, hist_end=hist_end, split=split)
    if implicit:
        examples, neg_stats = _add_sampled_negatives(
            examples, history, n_items=n_items, per_positive=negatives_per_positive, seed=seed, rounds=max_neg_rounds
        )
        stats.update(neg_stats)
    stats.update({f"rows_{s}": int((examples.split == i).sum()) for i, s in enumerate(SPLITS)})
    stats["positive_rate"] = float(examples.label.mean()) if len(examples.label) else 0.0
    return CtrData(
        n_users=n_users,
        n_items=n_items,
        examples=examples,
        history=history,
        users=load_user_features(run_dir, n_users),
        strata=load_strata(run_dir, n_items),
        implicit=bool(implicit),
        stats=stats,
    )


def _add_sampled_negatives(
    examples: CtrExamples, history: HistoryStore, *, n_items: int, per_positive: int, seed: int, rounds: int
) -> tuple[CtrExamples, dict]:
    """Uniform negatives the user never interacted with; rejection sampling, seeded."""
    rng = np.random.default_rng(seed)
    seen_keys = np.unique(examples.user * n_items + examples.item)
    rep = np.repeat(np.arange(len(examples.item)), per_positive)
    neg_user = examples.user[rep]
    neg_item = rng.integers(0, n_items, size=len(rep))
    for _ in range(rounds):
        clash = np.isin(neg_user * n_items + neg_item, seen_keys)
        if not clash.any():
            break
        neg_item[clash] = rng.integers(0, n_items, size=int(clash.sum()))
    keep = ~np.isin(neg_user * n_items + neg_item, seen_keys)
    dropped = int((~keep).sum())
    rep, neg_item = rep[keep], neg_item[keep]
    merged = CtrExamples(
        user=np.concatenate([examples.user, examples.user[rep]]),
        item=np.concatenate([examples.item, neg_item]),
        label=np.concatenate([examples.label, np.zeros(len(rep), dtype=np.float32)]),
        hist_end=np.concatenate([examples.hist_end, examples.hist_end[rep]]),
        split=np.concatenate([examples.split, examples.split[rep]]),
    )
    return merged, {"sampled_negatives": int(len(rep)), "negatives_dropped_no_unseen_item": dropped}


def gather_history(
    store: HistoryStore, users: np.ndarray, hist_end: np.ndarray, length: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Right-aligned last ``length`` history positions: items, feedback codes, mask [B, length]."""
    pos = hist_end[:, None] - length + np.arange(length)[None, :]
    valid = pos >= store.user_start[users][:, None]
    pos = np.where(valid, pos, 0)
    items = np.where(valid, store.items[pos] if len(store.items) else 0, 0)
    feedback = np.where(valid, store.feedback[pos] if len(store.feedback) else 0, FEEDBACK_PAD)
    return items.astype(np.int64), feedback.astype(np.int64), valid


def history_arrays(
    items: np.ndarray, feedback: np.ndarray, length: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same right-aligned layout for one explicit history (serving / two-stage scoring)."""
    items = np.asarray(items, dtype=np.int64)[-length:]
    feedback = np.asarray(feedback, dtype=np.int64)[-length:]
    out_items = np.zeros(length, dtype=np.int64)
    out_feedback = np.zeros(length, dtype=np.int64)
    mask = np.zeros(length, dtype=bool)
    if len(items):
        out_items[-len(items):] = items
        out_feedback[-len(items):] = feedback
        mask[-len(items):] = True
    return out_items, out_feedback, mask


def drop_train_pairs(
    examples: CtrExamples, *, users: np.ndarray, items: np.ndarray, n_items: int
) -> tuple[CtrExamples, int]:
    """Remove training rows whose (user, item) pair is listed; other splits stay as they are."""
    held = np.unique(np.asarray(users, dtype=np.int64) * n_items + np.asarray(items, dtype=np.int64))
    keys = examples.user * n_items + examples.item
    drop = np.isin(keys, held) & (examples.split == SPLITS.index("train"))
    keep = ~drop
    kept = CtrExamples(
        user=examples.user[keep],
        item=examples.item[keep],
        label=examples.label[keep],
        hist_end=examples.hist_end[keep],
        split=examples.split[keep],
    )
    return kept, int(drop.sum())
