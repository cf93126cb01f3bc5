"""Configuration of the data stage: which dataset, how it is filtered and split."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DataConfig:
    """How a dataset is loaded, filtered and split.

    The sequential split is always leave-one-out per user (last item = test, second-last =
    validation); the ranker split is chronological (``ranking_test_share``).
    """

    dataset: str = "ml-100k-mm"
    """Registry name: ml-100k-mm, ml-1m-mm, amazon-beauty, custom, synthetic."""
    data_root: str | None = None
    """Folder holding the real datasets; None → --data-root / $MMQREC_DATA / ../shared/data."""
    path: str | None = None
    """Folder with the user's tables for dataset=custom (see README, "Custom datasets")."""
    images_outside_folder: bool = False
    """dataset=custom: accept image paths that resolve outside the dataset folder (absolute
    paths elsewhere, ``..``, links). Off by default: such a row is an error, so a catalogue
    cannot make the encoder (or the server) open arbitrary files."""
    kcore: int = 0
    """Keep only users and items with at least this many interactions (repeated until stable);
    0 = off. Off by default: MovieLens users already have ≥ 20 ratings and Amazon Beauty is
    5-core, and the rare items k-core would drop are exactly the long tail the report studies."""
    require_image: bool = False
    """Drop items without an image before filtering (and count them)."""
    min_user_interactions: int = 3
    """Users need a training item, a validation item and a test item."""
    cold_item_share: float = 0.0
    """Cold-start protocol: this share of items is held out of training entirely: they appear
    only as validation and test targets (and so as the last item of a test history), never in
    the training sequences (0 = off)."""
    popular_share: float = 0.25
    """Top share of items (by training interactions) that forms the `popular` stratum."""
    long_tail_share: float = 0.25
    """Bottom share of items seen in training that forms the `long_tail` stratum."""
    ranking_test_share: float = 0.10
    """Chronologically last share of interactions used as the ranker's test set."""
    ranking_valid_share: float = 0.10
    """Chronologically last share of the ranker's training part used for early stopping."""
    positive_threshold: float = 3.0
    """A rating strictly above this is a positive label for the ranker."""
    max_users: int | None = None
    """Keep only the first N users (by user order) — for quick experiments."""
    synthetic_users: int = 200
    synthetic_items: int = 120
