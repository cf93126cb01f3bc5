"""Switchable item representation: ItemID embedding, SID token embeddings, or both.

An item is described by a fixed list of categorical *fields*; its vector is the sum of one
embedding per field. The fields are

* ``itemid`` ("itemid", "both"): one row per item;
* ``sid_p`` for every SID position p ("sid", "both"): one table per position, rows = that
  position's codebook, so items sharing a code share that row;
* ``prefix_l`` for l = 2 .. L-1 when ``sid_ngrams`` is on: one row per distinct SID prefix of
  length l present in the catalogue. The full-length prefix is left out on purpose: SIDs are
  unique per item, so it would be an item ID in disguise.

Summing (rather than concatenating) keeps the item vector the same width for every switch, so
the rest of the model is identical and only its inputs change. All tables live in one
``nn.Embedding`` with per-field offsets; ``field_ids`` is a buffer [N, F] giving each item's row
in every field, and it is saved with the weights so a checkpoint never depends on a tokenizer
re-run (the SID codes it was trained with are inside it).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from recdata.errors import DataError


def item_fields(
    *, mode: str, n_items: int, sid_codes: np.ndarray | None, codebook_sizes: list[int] | None, sid_ngrams: bool
) -> tuple[list[str], list[int], np.ndarray]:
    """Field names, table sizes and per-item row ids [N, F] (row ids local to each field)."""
    names: list[str] = []
    sizes: list[int] = []
    columns: list[np.ndarray] = []
    if mode in ("itemid", "both"):
        names.append("itemid")
        sizes.append(n_items)
        columns.append(np.arange(n_items, dtype=np.int64))
    if mode in ("sid", "both"):
        if sid_codes is None or codebook_sizes is None:
            raise DataError(f"item_repr={mode!r} needs semantic IDs (tokenizer/semantic_ids.parquet)")
        codes = np.asarray(sid_codes, dtype=np.int64)
        if codes.ndim != 2 or codes.shape[0] != n_items or codes.shape[1] != len(codebook_sizes):
            raise DataError(
                f"semantic IDs have shape {codes.shape}, expected [{n_items}, {len(codebook_sizes)}]"
            )
        if (codes < 0).any() or (codes >= np.asarray(codebook_sizes)[None, :]).any():
            raise DataError("a semantic ID code lies outside its codebook")
        for p, size in enumerate(codebook_sizes):
            names.append(f"sid_{p}")
            sizes.append(int(size))
            columns.append(codes[:, p])
        if sid_ngrams:
            for length in range(2, codes.shape[1]):
                _, inverse = np.unique(codes[:, :length], axis=0, return_inverse=True)
                inverse = inverse.reshape(-1).astype(np.int64)
                names.append(f"prefix_{length}")
                sizes.append(int(inverse.max()) + 1 if n_items else 1)
                columns.append(inverse)
    elif mode != "itemid":
        raise DataError(f"unknown item representation {mode!r}")
    return names, sizes, np.stack(columns, axis=1)


class ItemRepresentation(nn.Module):
    """item_idx → sum of its field embeddings, width ``dim``."""

    def __init__(self, *, field_names: list[str], field_sizes: list[int], field_ids: np.ndarray, dim: int) -> None:
        super().__init__()
        self.field_names = list(field_names)
        self.field_sizes = [int(s) for s in field_sizes]
        offsets = np.concatenate([[0], np.cumsum(self.field_sizes)[:-1]]).astype(np.int64)
        global_ids = np.asarray(field_ids, dtype=np.int64) + offsets[None, :]
        self.register_buffer("field_ids", torch.from_numpy(global_ids), persistent=True)
        self.table = nn.Embedding(int(sum(self.field_sizes)), dim)
        # Scale so the summed vector has the same spread whatever the number of fields.
        nn.init.normal_(self.table.weight, std=0.05 / math.sqrt(len(self.field_sizes)))

    @property
    def n_items(self) -> int:
        return int(self.field_ids.shape[0])

    def append_sid_items(self, codes: np.ndarray) -> bool:
        """Give rows to items added after training from their SID ``codes`` [M, L].

        Possible only when every field is a SID position (an ItemID or prefix field has no row
        for an unseen item); returns whether the items were appended.
        """
        if not all(name.startswith("sid_") for name in self.field_names):
            return False
        offsets = np.concatenate([[0], np.cumsum(self.field_sizes)[:-1]]).astype(np.int64)
        positions = [int(name.split("_")[1]) for name in self.field_names]
        rows = np.asarray(codes, dtype=np.int64)[:, positions] + offsets[None, :]
        self.field_ids = torch.cat([self.field_ids, torch.as_tensor(rows, device=self.field_ids.device)])
        return True

    def inputs(self, items: torch.Tensor) -> torch.Tensor:
        """The embedding rows an item reads, [..., F]: exactly what the switches change."""
        return self.field_ids[items]

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        return self.table(self.inputs(items)).sum(dim=-2)

    def all_items(self) -> torch.Tensor:
        """Vectors of the whole catalogue [N, d]; cheaper than ``forward`` when a batch reads
        more item slots than the catalogue has items (the sum is then done once per item)."""
        return self.table(self.field_ids).sum(dim=-2)

    def lookup(self, *item_tensors: torch.Tensor) -> list[torch.Tensor]:
        """``forward`` for several index tensors, through ``all_items`` when that is cheaper."""
        slots = sum(int(t.numel()) for t in item_tensors)
        if slots > self.n_items:
            table = self.all_items()
            return [table[t] for t in item_tensors]
        return [self(t) for t in item_tensors]

    def l2(self, items: torch.Tensor) -> torch.Tensor:
        """Summed squared norm of the rows each of ``items`` reads, averaged over ``items``."""
        return self.table(self.inputs(items)).pow(2).sum() / max(items.numel(), 1)
