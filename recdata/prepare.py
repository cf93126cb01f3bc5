"""From a loaded dataset to the run directory's ``data/`` artefacts.

Order of operations (each step counts what it drops in ``dataset.json``):
1. optional image requirement, 2. k-core filter, 3. per-user chronological order
(timestamp, then the row's position in the source file — a stable tie-break), 4. users with
fewer than ``min_user_interactions`` dropped, 5. optional cold-item hold-out, 6. popularity
strata from training interactions only, 7. the ranker's chronological split.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import polars as pl

from recdata.config import DataConfig
from recdata.dataset import Dataset
from recdata.errors import DataError
from recdata.io import write_json, write_parquet
from recdata.strata import STRATA, popularity_strata
from recdata.layout import layout

log = logging.getLogger(__name__)

PROTOCOL = {
    "sequential_split": "leave-one-out per user: last item = test, second-last = validation, "
    "the rest = training",
    "order": "per user by timestamp, ties broken by the row's position in the source file",
    "strata": "computed from training interactions only (validation and test targets excluded): "
    "popular = top share of items by count, long_tail = bottom share of items seen in training, "
    "middle = the rest, cold = never seen in training",
    "cold_items": "with cold_item_share > 0, that share of items is held out of every training "
    "sequence (s[:-2]) and kept only where it is a validation or test target",
    "ranking_split": "global chronological cut when timestamps exist (per-user order otherwise): "
    "last share = test, the last share of the remainder = validation; rating > threshold = 1",
}


def _natural_key(values: list[str]) -> list[str]:
    """Sort ids numerically when they are all integers, else lexicographically."""
    if all(v.isdigit() for v in values):
        return sorted(values, key=lambda v: (len(v.lstrip("0")), v.lstrip("0"), v))
    return sorted(values)


def kcore_filter(interactions: pl.DataFrame, *, k: int) -> pl.DataFrame:
    """Keep users and items with ≥ k interactions, repeating until nothing changes."""
    if k <= 1:
        return interactions
    frame = interactions
    while True:
        before = frame.height
        item_ok = frame.group_by("item_id").len().filter(pl.col("len") >= k).select("item_id")
        frame = frame.join(item_ok, on="item_id", how="semi")
        user_ok = frame.group_by("user_id").len().filter(pl.col("len") >= k).select("user_id")
        frame = frame.join(user_ok, on="user_id", how="semi")
        if frame.height == before:
            return frame


def prepare(*, dataset: Dataset, cfg: DataConfig, run_dir: Path, seed: int = 0) -> dict:
    """Filter, order and split ``dataset``; write ``run_dir/data``; return the summary."""
    skipped = dict(dataset.skipped)
    warnings = list(dataset.warnings)

    def count(reason: str, n: int) -> None:
        if n:
            skipped[reason] = skipped.get(reason, 0) + int(n)

    items = dataset.items
    inter = dataset.interactions.with_row_index("_row")
    if cfg.require_image:
        no_image = items.filter(pl.col("image_path").is_null())
        count("items_without_image_dropped", no_image.height)
        n_before = inter.height
        inter = inter.join(no_image.select("item_id"), on="item_id", how="anti")
        count("interactions_on_items_without_image", n_before - inter.height)

    n_before = inter.height
    inter = kcore_filter(inter, k=cfg.kcore)
    count(f"interactions_removed_by_{cfg.kcore}_core", n_before - inter.height)

    # Chronological order with the stable tie-break documented in PROTOCOL.
    inter = inter.sort(["user_id", "timestamp", "_row"])
    lengths = inter.group_by("user_id").len()
    short = lengths.filter(pl.col("len") < cfg.min_user_interactions)
    if short.height:
        count("users_with_too_few_interactions", short.height)
        inter = inter.join(short.select("user_id"), on="user_id", how="anti")

    user_ids = _natural_key(inter["user_id"].unique().to_list())
    if cfg.max_users is not None:
        user_ids = user_ids[: cfg.max_users]
        inter = inter.filter(pl.col("user_id").is_in(user_ids))
    if not user_ids:
        raise DataError(f"dataset {dataset.name!r} has no users left after filtering")

    used_items = set(inter["item_id"].unique().to_list())
    count("items_without_interactions", items.height - len(used_items))
    item_ids = _natural_key(list(used_items))
    item_index = pl.DataFrame(
        {"item_id": item_ids, "item_idx": np.arange(len(item_ids), dtype=np.int64)}
    )
    user_index = pl.DataFrame(
        {"user_id": user_ids, "user_idx": np.arange(len(user_ids), dtype=np.int64)}
    )
    items_out = item_index.join(items, on="item_id", how="left").sort("item_idx")
    items_out = items_out.select(["item_idx", "item_id", *[c for c in items_out.columns if c not in ("item_idx", "item_id")]])
    inter = (
        inter.join(item_index, on="item_id").join(user_index, on="user_id")
        .sort(["user_idx", "timestamp", "_row"])
    )

    sequences = inter.group_by("user_idx", maintain_order=True).agg(
        pl.col("item_idx").alias("items")
    )
    seq_list = [np.asarray(s, dtype=np.int64) for s in sequences["items"].to_list()]

    cold_items = np.zeros(len(item_ids), dtype=bool)
    if cfg.cold_item_share > 0:
        rng = np.random.default_rng(seed)
        n_cold = int(round(cfg.cold_item_share * len(item_ids)))
        cold_items[rng.choice(len(item_ids), size=n_cold, replace=False)] = True
        # Held-out items leave the training part s[:-2] only: as validation targets (s[-2]) as
        # well as test targets they let the settings of the channel for new items be fitted on
        # validation users like every other weight, instead of set by hand.
        kept = []
        removed = 0
        for seq in seq_list:
            history, last = seq[:-2], seq[-2:]
            keep = ~cold_items[history]
            removed += int((~keep).sum())
            kept.append(np.concatenate([history[keep], last]))
        count("cold_protocol_history_interactions_removed", removed)
        seq_list = kept
        too_short = [len(s) < cfg.min_user_interactions for s in seq_list]
        if any(too_short):
            count("users_too_short_after_cold_holdout", sum(too_short))
            keep_users = [i for i, t in enumerate(too_short) if not t]
            seq_list = [seq_list[i] for i in keep_users]
            user_index = user_index.filter(pl.col("user_idx").is_in(keep_users))
            # re-number users densely
            user_index = user_index.with_columns(
                pl.arange(0, user_index.height, dtype=pl.Int64).alias("new_idx")
            )
            remap = dict(zip(user_index["user_idx"].to_list(), user_index["new_idx"].to_list()))
            inter = inter.filter(pl.col("user_idx").is_in(keep_users)).with_columns(
                pl.col("user_idx").replace_strict(remap, return_dtype=pl.Int64)
            )
            user_index = user_index.drop("user_idx").rename({"new_idx": "user_idx"})

    n_items = len(item_ids)
    train_counts = np.zeros(n_items, dtype=np.int64)
    for seq in seq_list:
        np.add.at(train_counts, seq[:-2], 1)
    strata = popularity_strata(
        train_counts, popular_share=cfg.popular_share, long_tail_share=cfg.long_tail_share
    )

    data_dir = layout(run_dir).data_dir
    write_parquet(data_dir / "items.parquet", items_out)

    users_out = user_index.select(["user_idx", "user_id"])
    if dataset.users is not None:
        users_out = users_out.join(dataset.users, on="user_id", how="left")
    write_parquet(data_dir / "users.parquet", users_out.sort("user_idx"))

    write_parquet(
        data_dir / "sequences.parquet",
        pl.DataFrame(
            {
                "user_idx": user_index.sort("user_idx")["user_idx"],
                "user_id": user_index.sort("user_idx")["user_id"],
                "items": [s.tolist() for s in seq_list],
            },
            schema={"user_idx": pl.Int64, "user_id": pl.Utf8, "items": pl.List(pl.Int64)},
        ),
    )
    write_parquet(
        data_dir / "strata.parquet",
        pl.DataFrame(
            {
                "item_idx": np.arange(n_items, dtype=np.int64),
                "train_count": train_counts,
                "stratum": strata,
                "cold_holdout": cold_items,
            }
        ),
    )

    ratings = _ranking_split(inter, cfg=cfg, has_timestamps=dataset.has_timestamps)
    write_parquet(data_dir / "ratings.parquet", ratings)

    lengths_arr = np.array([len(s) for s in seq_list])
    summary = {
        "name": dataset.name,
        "users": len(seq_list),
        "items": n_items,
        "interactions": int(lengths_arr.sum()),
        "items_with_image": int(items_out["image_path"].is_not_null().sum()),
        "sequence_length": {
            "min": int(lengths_arr.min()),
            "median": float(np.median(lengths_arr)),
            "max": int(lengths_arr.max()),
        },
        "strata_items": {s: int((strata == s).sum()) for s in STRATA},
        "test_targets_per_stratum": {
            s: int(sum(strata[seq[-1]] == s for seq in seq_list)) for s in STRATA
        },
        "ranking_split": {
            split: int((ratings["split"] == split).sum()) for split in ("train", "valid", "test")
        },
        "ranking_positive_rate": float(ratings["label"].mean()) if ratings.height else 0.0,
        "has_ratings": bool(ratings["rating"].is_not_null().any()),
        "has_timestamps": dataset.has_timestamps,
        "text_fields": list(dataset.text_fields),
        "default_template": dataset.default_template,
        "skipped": dict(sorted(skipped.items())),
        "warnings": warnings,
        "config": {
            "kcore": cfg.kcore,
            "require_image": cfg.require_image,
            "cold_item_share": cfg.cold_item_share,
            "popular_share": cfg.popular_share,
            "long_tail_share": cfg.long_tail_share,
            "ranking_test_share": cfg.ranking_test_share,
            "ranking_valid_share": cfg.ranking_valid_share,
            "positive_threshold": cfg.positive_threshold,
        },
        "protocol": PROTOCOL,
    }
    write_json(data_dir / "dataset.json", summary)
    log.info(
        "data: %d users, %d items, %d interactions", summary["users"], n_items, summary["interactions"]
    )
    return summary


def _ranking_split(inter: pl.DataFrame, *, cfg: DataConfig, has_timestamps: bool) -> pl.DataFrame:
    """Chronological train / valid / test split of all interactions for the CTR ranker."""
    frame = inter.select(["user_idx", "item_idx", "rating", "timestamp", "_row"])
    if has_timestamps:
        frame = frame.sort(["timestamp", "user_idx", "_row"])
        n = frame.height
        n_test = int(round(n * cfg.ranking_test_share))
        n_rest = n - n_test
        n_valid = int(round(n_rest * cfg.ranking_valid_share))
        split = np.array(["train"] * (n_rest - n_valid) + ["valid"] * n_valid + ["test"] * n_test)
        frame = frame.with_columns(pl.Series("split", split))
    else:
        # No global clock: cut each user's own history chronologically.
        frame = frame.sort(["user_idx", "timestamp", "_row"]).with_columns(
            pl.int_range(pl.len()).over("user_idx").alias("_pos"),
            pl.len().over("user_idx").alias("_n"),
        )
        n_test = (pl.col("_n") * cfg.ranking_test_share).round().clip(lower_bound=1)
        n_valid = ((pl.col("_n") - n_test) * cfg.ranking_valid_share).round().clip(lower_bound=1)
        frame = frame.with_columns(
            pl.when(pl.col("_pos") >= pl.col("_n") - n_test)
            .then(pl.lit("test"))
            .when(pl.col("_pos") >= pl.col("_n") - n_test - n_valid)
            .then(pl.lit("valid"))
            .otherwise(pl.lit("train"))
            .alias("split")
        ).drop(["_pos", "_n"])
    label = (
        (pl.col("rating") > cfg.positive_threshold).cast(pl.Int8)
        if frame["rating"].is_not_null().any()
        else pl.lit(1, dtype=pl.Int8)
    )
    return frame.with_columns(label.alias("label")).drop("_row").select(
        ["user_idx", "item_idx", "rating", "timestamp", "label", "split"]
    )
