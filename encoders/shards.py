"""Resumable encoding: shard files that survive a killed run, merged into one file at the end.

A shard holds the rows of some items: "item_idx" int64 [n], "embeddings" float32 [n, d],
"mask" uint8 [n] and "reason" uint8 [n] (an index into MASK_REASONS, 0 = present). Its name
carries the modality and the cache key, so shards of another model, template or item set are
never mixed in. Each shard is written atomically, so one that exists is complete.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from recdata.io import load_tensors, save_tensors

logger = logging.getLogger(__name__)

MASK_REASONS: tuple[str, ...] = (
    "present",
    "empty_text",
    "no_image_path",
    "missing_file",
    "not_an_image",
    "truncated",
    "unreadable",
    "non_finite",
)
_REASON_CODE = {name: code for code, name in enumerate(MASK_REASONS)}


class ShardStore:
    """The shards of one modality under one cache key."""

    def __init__(self, directory: Path, *, modality: str, key: str) -> None:
        self.directory = Path(directory)
        self.modality = modality
        self.key = key
        self.prefix = f"{modality}-{key[:16]}-"

    def paths(self) -> list[Path]:
        if not self.directory.exists():
            return []
        return sorted(self.directory.glob(f"{self.prefix}*.safetensors"))

    def write(
        self,
        *,
        item_idx: Sequence[int],
        embeddings: np.ndarray,
        mask: np.ndarray,
        reasons: Sequence[str | None],
    ) -> Path:
        item_idx = np.asarray(item_idx, dtype=np.int64)
        codes = np.array([_REASON_CODE[r or "present"] for r in reasons], dtype=np.uint8)
        # Items of one shard are disjoint from every other pending shard, so the first item and
        # the count name it uniquely.
        path = self.directory / f"{self.prefix}{int(item_idx[0]):08d}+{len(item_idx)}.safetensors"
        save_tensors(
            path,
            {
                "item_idx": item_idx,
                "embeddings": np.ascontiguousarray(embeddings, dtype=np.float32),
                "mask": np.asarray(mask, dtype=np.uint8),
                "reason": codes,
            },
            metadata={"modality": self.modality, "cache_key": self.key},
        )
        return path

    def _read(self, path: Path) -> dict | None:
        try:
            shard = load_tensors(path)
        except Exception:
            logger.warning("ignoring unreadable shard %s (it will be re-encoded)", path)
            path.unlink(missing_ok=True)
            return None
        return shard

    def done(self, n_items: int) -> np.ndarray:
        """Boolean [n_items]: which items already sit in a finished shard."""
        covered = np.zeros(n_items, dtype=bool)
        for path in self.paths():
            shard = self._read(path)
            if shard is not None:
                idx = shard["item_idx"].numpy()
                covered[idx[(idx >= 0) & (idx < n_items)]] = True
        return covered

    def merge(self, n_items: int) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
        """All shards → (embeddings float32 [N, d] in item_idx order, mask uint8 [N], reasons).

        Raises RuntimeError if an item is in no shard (an unfinished rank).
        """
        embeddings: np.ndarray | None = None
        mask = np.zeros(n_items, dtype=np.uint8)
        reason = np.zeros(n_items, dtype=np.uint8)
        seen = np.zeros(n_items, dtype=bool)
        for path in self.paths():
            shard = self._read(path)
            if shard is None:
                continue
            idx = shard["item_idx"].numpy()
            rows = shard["embeddings"].numpy()
            if embeddings is None:
                embeddings = np.zeros((n_items, rows.shape[1]), dtype=np.float32)
            embeddings[idx] = rows
            mask[idx] = shard["mask"].numpy()
            reason[idx] = shard["reason"].numpy()
            seen[idx] = True
        if not seen.all():
            missing = np.flatnonzero(~seen)
            raise RuntimeError(
                f"{self.modality} shards cover {int(seen.sum())} of {n_items} items; "
                f"first missing item_idx {int(missing[0])}"
            )
        assert embeddings is not None
        embeddings[mask == 0] = 0.0
        counts = Counter(MASK_REASONS[c] for c in reason[mask == 0])
        return embeddings, mask, dict(sorted(counts.items()))

    def clear_modality(self) -> None:
        """Remove every shard of this modality (this key and stale ones of older keys)."""
        if not self.directory.exists():
            return
        for pattern in (f"{self.modality}-*.safetensors", f".{self.modality}-*.tmp"):
            for path in self.directory.glob(pattern):  # .tmp: left by a killed write
                path.unlink(missing_ok=True)
        if not any(self.directory.iterdir()):
            self.directory.rmdir()
