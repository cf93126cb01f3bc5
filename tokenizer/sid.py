"""Semantic-ID tables: collision resolution and the ``semantic_ids.parquet`` artefact.

A semantic ID is a fixed-length tuple of ints; position ``p`` takes values in
``[0, codebook_sizes[p])`` and the LAST position is the collision (disambiguation) token, so every
item maps to exactly one unique tuple. Token order: shared experts, text experts, vision experts
(or RQ levels), then the collision token.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recdata.errors import DataError
from recdata.io import atomic_path
from recdata.layout import layout

SID_FILE = "semantic_ids.parquet"
_META_KEY = "mmqrec.semantic_ids"


# ---------------------------------------------------------------------------- collisions
def collision_stats(codes: np.ndarray) -> dict[str, float | int]:
    """Collision figures of raw codes [N, L] (before resolution).

    ``collision_rate`` = 1 - distinct tuples / N, i.e. the share of items that need a non-zero
    collision token; ``colliding_items`` = share of items whose tuple is shared with another;
    ``max_collision_group`` = size of the largest group of items with one tuple (1 = none).
    """
    codes = np.asarray(codes)
    n = codes.shape[0]
    if n == 0:
        return {"collision_rate": 0.0, "colliding_items": 0.0, "max_collision_group": 0, "n_unique": 0}
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    inverse = np.asarray(inverse).reshape(-1)
    return {
        "collision_rate": float(1.0 - len(counts) / n),
        "colliding_items": float((counts[inverse] > 1).mean()),
        "max_collision_group": int(counts.max()),
        "n_unique": int(len(counts)),
    }


def _append_token(codes: np.ndarray) -> np.ndarray:
    """The within-group rank (0, 1, 2, ... in item order) of every row among identical rows."""
    n = codes.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    # Stable lexicographic sort keeps item order inside each group of identical rows.
    order = np.lexsort(codes.T[::-1]) if codes.shape[1] else np.arange(n)
    sorted_codes = codes[order]
    new_group = np.ones(n, dtype=bool)
    if n > 1:
        new_group[1:] = np.any(sorted_codes[1:] != sorted_codes[:-1], axis=1)
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
    rank_sorted = np.arange(n) - group_start
    rank = np.empty(n, dtype=np.int64)
    rank[order] = rank_sorted
    return rank


def append_token_reference(codes: np.ndarray) -> np.ndarray:
    """Slow, obviously correct oracle for :func:`_append_token` (a dict of counters)."""
    seen: dict[tuple[int, ...], int] = {}
    out = np.zeros(len(codes), dtype=np.int64)
    for i, row in enumerate(np.asarray(codes).tolist()):
        key = tuple(row)
        out[i] = seen.get(key, 0)
        seen[key] = out[i] + 1
    return out


def _reassign(codes: np.ndarray, scores: list[np.ndarray], max_alternatives: int) -> tuple[np.ndarray, int]:
    """Greedy re-assignment of colliding items to the next-nearest free code.

    In each group of identical tuples the best-fitting item (highest summed score; ties: lower
    item_idx) keeps the tuple. Every other member tries, from cheapest to dearest, changing one
    position to one of its ``max_alternatives`` next-best codes, where the cost is the score it
    gives up; it takes the first change that yields an unused tuple, or keeps its tuple (the
    appended token then separates it).
    """
    codes = codes.copy()
    n, length = codes.shape
    fit = np.zeros(n)
    for p in range(length):
        fit += scores[p][np.arange(n), codes[:, p]]
    used = {tuple(r) for r in codes.tolist()}
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    inverse = np.asarray(inverse).reshape(-1)
    colliding = np.nonzero(counts[inverse] > 1)[0]
    groups: dict[int, list[int]] = {}
    for i in colliding.tolist():
        groups.setdefault(int(inverse[i]), []).append(i)
    moved = 0
    # Groups in order of their first item, members by decreasing fit: deterministic.
    for members in sorted(groups.values(), key=lambda m: m[0]):
        members = sorted(members, key=lambda i: (-fit[i], i))
        for i in members[1:]:
            options: list[tuple[float, int, int]] = []
            for p in range(length):
                row = scores[p][i]
                k = min(max_alternatives + 1, row.shape[0])
                best = np.argsort(-row, kind="stable")[:k]
                for c in best.tolist():
                    if c != codes[i, p]:
                        options.append((float(row[codes[i, p]] - row[c]), p, c))
            options.sort()
            for _, p, c in options:
                cand = codes[i].copy()
                cand[p] = c
                key = tuple(cand.tolist())
                if key not in used:
                    codes[i] = cand
                    used.add(key)
                    moved += 1
                    break
    return codes, moved


def resolve_collisions(
    codes: np.ndarray,
    *,
    strategy: str = "append",
    scores: list[np.ndarray] | None = None,
    min_collision_size: int = 1,
    max_alternatives: int = 8,
) -> tuple[np.ndarray, dict]:
    """Make every row unique by appending a collision token (pure function).

    ``codes``: raw codes [N, L]. ``strategy="append"`` keeps the raw codes and numbers the items of
    each group of identical rows 0, 1, 2, ... in item order (TIGER). ``"reassign"`` first moves
    colliding items to their next-nearest free code (needs ``scores``: per position [N, K_p],
    higher = closer), then appends. Returns ``(unique_codes [N, L + 1] int64, stats)`` where stats
    holds the collision figures before resolution (see :func:`collision_stats`), ``reassigned``
    and ``collision_codebook_size`` = max(largest remaining group, ``min_collision_size``).
    """
    codes = np.asarray(codes, dtype=np.int64)
    if codes.ndim != 2:
        raise ValueError(f"codes must be 2-D [N, L], got shape {codes.shape}")
    stats = collision_stats(codes)
    moved = 0
    if strategy == "reassign":
        if scores is None or len(scores) != codes.shape[1]:
            raise ValueError("strategy='reassign' needs one score matrix per position")
        codes, moved = _reassign(codes, [np.asarray(s, dtype=np.float64) for s in scores], max_alternatives)
    elif strategy != "append":
        raise ValueError(f"unknown collision strategy {strategy!r}")
    token = _append_token(codes)
    unique = np.concatenate([codes, token[:, None]], axis=1)
    stats["reassigned"] = int(moved)
    stats["collision_codebook_size"] = int(max(min_collision_size, int(token.max(initial=0)) + 1))
    return unique, stats


# ---------------------------------------------------------------------------- the table
@dataclass
class SemanticIds:
    """The final ID table: ``codes[item_idx]`` is the item's unique token tuple."""

    codes: np.ndarray  # int64 [N, L]; last column = collision token
    codebook_sizes: list[int]  # per position, incl. the collision position
    item_ids: list[str]
    position_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.codes = np.asarray(self.codes, dtype=np.int64)
        if not self.position_names:
            self.position_names = [f"t{i}" for i in range(self.codes.shape[1])]

    @property
    def n_items(self) -> int:
        return int(self.codes.shape[0])

    @property
    def length(self) -> int:
        return int(self.codes.shape[1])

    def offsets(self) -> np.ndarray:
        """Vocabulary offset of each position: token (p, c) -> ``offsets()[p] + c``."""
        return np.concatenate([[0], np.cumsum(self.codebook_sizes)[:-1]]).astype(np.int64)

    def vocab_size(self) -> int:
        return int(sum(self.codebook_sizes))

    def token_ids(self) -> np.ndarray:
        """[N, L] codes shifted into one shared vocabulary."""
        return self.codes + self.offsets()[None, :]

    def item_of(self) -> dict[tuple[int, ...], int]:
        """Map a full code tuple back to its item_idx."""
        return {tuple(r): i for i, r in enumerate(self.codes.tolist())}

    def validate(self, *, path: object = None) -> "SemanticIds":
        if self.codes.ndim != 2 or self.codes.shape[0] != len(self.item_ids):
            raise DataError(f"codes shape {self.codes.shape} does not match {len(self.item_ids)} items", path=path)
        if len(self.codebook_sizes) != self.codes.shape[1]:
            raise DataError(f"{len(self.codebook_sizes)} codebook sizes for {self.codes.shape[1]} positions", path=path)
        if self.n_items:
            sizes = np.asarray(self.codebook_sizes)
            bad = np.nonzero(((self.codes < 0) | (self.codes >= sizes[None, :])).any(1))[0]
            if len(bad):
                raise DataError("code outside its codebook", path=path, row=int(bad[0]))
            if collision_stats(self.codes)["max_collision_group"] > 1:
                raise DataError("semantic IDs are not unique", path=path)
        return self

    def save(self, run_dir: Path) -> Path:
        """Write ``run_dir/tokenizer/semantic_ids.parquet`` (sizes in the file's metadata)."""
        return self.save_file(layout(run_dir).semantic_ids)

    def save_file(self, path: Path) -> Path:
        """Write the table to ``path`` atomically (sizes in the file's metadata)."""
        import polars as pl

        self.validate()
        cols: dict[str, object] = {
            "item_idx": np.arange(self.n_items, dtype=np.int64),
            "item_id": list(self.item_ids),
        }
        for p in range(self.length):
            cols[f"t{p}"] = self.codes[:, p]
        frame = pl.DataFrame(cols, schema={"item_idx": pl.Int64, "item_id": pl.String,
                                           **{f"t{p}": pl.Int64 for p in range(self.length)}})
        meta = json.dumps({"codebook_sizes": [int(s) for s in self.codebook_sizes],
                           "position_names": list(self.position_names)})
        with atomic_path(path) as tmp:
            frame.write_parquet(tmp, metadata={_META_KEY: meta})
        return path

    @classmethod
    def from_run_dir(cls, run_dir: Path) -> "SemanticIds":
        """The run's final ID table (:func:`final_ids_dir`); DataError when missing or invalid."""
        return cls.from_file(final_ids_dir(run_dir) / SID_FILE)

    @classmethod
    def from_file(cls, path: Path) -> "SemanticIds":
        """Load one ``semantic_ids.parquet``; DataError when missing or invalid."""
        import polars as pl

        from recdata.io import read_parquet

        path = Path(path)
        frame = read_parquet(path).sort("item_idx")
        try:
            meta = json.loads(pl.read_parquet_metadata(path)[_META_KEY])
        except (KeyError, json.JSONDecodeError):
            raise DataError("semantic ID table lacks its codebook sizes metadata", path=path) from None
        cols = [c for c in frame.columns if c.startswith("t") and c[1:].isdigit()]
        cols.sort(key=lambda c: int(c[1:]))
        if not np.array_equal(frame["item_idx"].to_numpy(), np.arange(len(frame))):
            raise DataError("item_idx must be 0..N-1 without gaps", path=path)
        codes = np.stack([frame[c].to_numpy() for c in cols], 1) if cols else np.zeros((len(frame), 0))
        sids = cls(codes=codes, codebook_sizes=list(meta["codebook_sizes"]),
                   item_ids=[str(v) for v in frame["item_id"].to_list()],
                   position_names=list(meta.get("position_names", [])))
        return sids.validate(path=path)


def table_digest(path: Path) -> str:
    """Content hash of an ID table file (what stage 2 was based on)."""
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def final_ids_dir(run_dir: Path) -> Path:
    """The one place every later reader takes the ID table (and tokenizer weights) from.

    ``tokenizer/`` (written by `tokenize`), unless `train-retriever`'s stage 2 wrote
    ``stage2/`` and adopted it: its marker says ``adopted`` and names the digest of the
    ``tokenizer/`` table it started from (a table re-written by `tokenize` since makes it stale).
    """
    run = layout(run_dir)
    marker = run.stage2_marker
    if marker.exists() and run.semantic_ids.exists():
        try:
            info = json.loads(marker.read_text())
        except (OSError, ValueError):
            info = {}
        if info.get("adopted") and info.get("based_on") == table_digest(run.semantic_ids):
            return run.stage2_dir
    return run.tokenizer_dir
