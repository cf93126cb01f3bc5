"""The ``data`` stage: load, clean, filter and split a dataset into ``run_dir/data``."""

from __future__ import annotations

from pathlib import Path

from recdata.config import DataConfig
from recdata.prepare import prepare
from recdata.registry import load_dataset


def run(*, cfg: DataConfig, run_dir: Path, seed: int = 0, device: str = "auto") -> dict:
    dataset = load_dataset(
        name=cfg.dataset,
        data_root=cfg.data_root,
        path=cfg.path,
        images_outside_folder=cfg.images_outside_folder,
        synthetic_users=cfg.synthetic_users,
        synthetic_items=cfg.synthetic_items,
        seed=seed,
    )
    return prepare(dataset=dataset, cfg=cfg, run_dir=Path(run_dir), seed=seed)
