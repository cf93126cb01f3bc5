"""Leave-one-out sequential split, read back from a run directory's ``data/`` artefacts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recdata.errors import DataError
from recdata.io import read_parquet
from recdata.layout import layout


@dataclass
class SequentialSplit:
    """Per-user chronological sequences and their leave-one-out split.

    For a user's sequence ``s``: training sequence ``s[:-2]``; validation input ``s[:-2]`` →
    target ``s[-2]``; test input ``s[:-1]`` → target ``s[-1]``.
    """

    item_ids: list[str]
    user_ids: list[str]
    sequences: list[np.ndarray]
    strata: np.ndarray
    train_counts: np.ndarray

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def train_sequences(self) -> list[np.ndarray]:
        return [s[:-2] for s in self.sequences]

    @property
    def valid_inputs(self) -> list[np.ndarray]:
        return [s[:-2] for s in self.sequences]

    @property
    def valid_targets(self) -> np.ndarray:
        return np.array([s[-2] for s in self.sequences], dtype=np.int64)

    @property
    def test_inputs(self) -> list[np.ndarray]:
        return [s[:-1] for s in self.sequences]

    @property
    def test_targets(self) -> np.ndarray:
        return np.array([s[-1] for s in self.sequences], dtype=np.int64)

    def user_index(self) -> dict[str, int]:
        return {u: i for i, u in enumerate(self.user_ids)}

    @classmethod
    def from_run_dir(cls, run_dir: str | Path) -> "SequentialSplit":
        data_dir = layout(run_dir).data_dir
        items = read_parquet(data_dir / "items.parquet").sort("item_idx")
        seqs = read_parquet(data_dir / "sequences.parquet").sort("user_idx")
        strata = read_parquet(data_dir / "strata.parquet").sort("item_idx")
        if strata.height != items.height:
            raise DataError("strata and items disagree on the number of items", path=data_dir)
        sequences = [np.asarray(s, dtype=np.int64) for s in seqs["items"].to_list()]
        if any(len(s) < 3 for s in sequences):
            raise DataError("a user has fewer than 3 interactions", path=data_dir / "sequences.parquet")
        return cls(
            item_ids=items["item_id"].to_list(),
            user_ids=seqs["user_id"].to_list(),
            sequences=sequences,
            strata=strata["stratum"].to_numpy().astype(str),
            train_counts=strata["train_count"].to_numpy().astype(np.int64),
        )
