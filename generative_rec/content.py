"""Content similarity to the most recent item: the content prior that re-orders the retriever's
candidates (``RetrieverConfig.priors``).

On Beauty the retriever's own scores favour popular items: most long-tail targets are not even
among its 50 candidates, yet one in seven is among the 50 items whose frozen text embedding is
closest to the user's most recent item (retriever experiment 54). Adding
``weight * max(0, cos(last item, candidate))`` to each candidate's score, after the search, and
offering a few of the last item's nearest items as extra candidates, lets such items compete.

The vectors are the encoders' cached embeddings, each modality unit-normalised and the
modalities concatenated with weight ``1 / sqrt(m)``, so the dot product of two items is the mean
of their per-modality cosines (a modality an item lacks counts 0). Decoding looks up one vector
per candidate and one neighbour row per user: its cost does not grow with the catalogue. The
neighbour table is built once, when the retriever is trained, at a cost quadratic in the
catalogue (chunked matrix products; about a second for 12k items).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from generative_rec.config import CONTENT_NEIGHBOURS as NEIGHBOURS
from recdata.errors import DataError
from recdata.io import load_tensors, save_tensors
from recdata.layout import layout


@dataclass(frozen=True)
class ContentVectors:
    """Unit content vectors of the catalogue and each item's nearest items by them."""

    vectors: np.ndarray  # float32 [N, D]; a zero row = an item without content
    neighbours: np.ndarray  # int64 [N, K], most similar first, -1 = none

    @property
    def n_items(self) -> int:
        return int(self.vectors.shape[0])

    @classmethod
    def from_embeddings(cls, embeddings: Sequence[tuple[np.ndarray, np.ndarray]], *,
                        n_neighbours: int = NEIGHBOURS, chunk: int = 2048) -> "ContentVectors":
        """``embeddings``: per modality, ``([N, d] vectors, [N] bool mask of items that have it)``."""
        vectors = unit_vectors(embeddings)
        return cls(vectors=vectors, neighbours=_nearest(vectors, n_neighbours, chunk))

    def extended(self, vectors: np.ndarray) -> "ContentVectors":
        """The catalogue with items appended after training (``[M, D]``, from
        :func:`unit_vectors` over the same modalities): the priors see their content; they are
        nobody's nearest item and have none (the neighbour table is the trained catalogue's)."""
        vectors = np.asarray(vectors, np.float32).reshape(-1, self.vectors.shape[1])
        pad = np.full((len(vectors), self.neighbours.shape[1]), -1, np.int64)
        return ContentVectors(vectors=np.concatenate([self.vectors, vectors]),
                              neighbours=np.concatenate([self.neighbours, pad]))

    @classmethod
    def from_run_dir(cls, run_dir: Path, *, modalities: Sequence[str] = ("text", "image"),
                     n_neighbours: int = NEIGHBOURS) -> "ContentVectors":
        """From the run's cached embeddings (``embeddings/<modality>.safetensors``)."""
        found = []
        for modality in modalities:
            path = layout(run_dir).embeddings(modality)
            if path.exists():
                tensors = load_tensors(path)
                found.append((tensors["embeddings"].float().numpy(),
                              tensors["mask"].bool().numpy()))
        if not found:
            raise DataError("the content prior needs the encode stage's embeddings; none found",
                            path=layout(run_dir).embeddings_dir)
        return cls.from_embeddings(found, n_neighbours=n_neighbours)

    def similarity(self, *, last: np.ndarray, items: np.ndarray, chunk: int = 1024) -> np.ndarray:
        """``[B, K]`` cosine of ``last[b]`` and ``items[b, k]``; 0 where either is -1 or an item
        the table does not know (added after training), and for ``last[b]`` itself: an item is
        not its own neighbour (whether it comes again is the model's and the transition prior's
        to judge; on Beauty it never does, and a cosine of 1 would put it first)."""
        last = np.asarray(last, np.int64)
        items = np.asarray(items, np.int64)
        n = self.n_items
        known_last = (last >= 0) & (last < n)
        known = (known_last[:, None] & (items >= 0) & (items < n)
                 & (items != last[:, None]))
        out = np.zeros(items.shape, dtype=np.float32)
        # In row chunks: the gathered [rows, K, D] block of a whole split would take gigabytes.
        for lo in range(0, len(items), chunk):
            hi = lo + chunk
            src = self.vectors[np.where(known_last[lo:hi], last[lo:hi], 0)]
            dst = self.vectors[np.where(known[lo:hi], items[lo:hi], 0)]
            out[lo:hi] = np.einsum("bd,bkd->bk", src, dst)
        return np.where(known, out, 0.0)

    def nearest(self, item: int) -> np.ndarray:
        """The items closest to ``item`` by content, most similar first."""
        if not 0 <= item < self.n_items:
            return np.zeros(0, np.int64)
        row = self.neighbours[item]
        return row[row >= 0]

    def save(self, path: Path) -> None:
        save_tensors(path, {"vectors": self.vectors, "neighbours": self.neighbours})

    @classmethod
    def load(cls, path: Path) -> "ContentVectors":
        tensors = load_tensors(path)
        if set(tensors) != {"vectors", "neighbours"}:
            raise DataError("not a content-vector file", path=path)
        vectors, neighbours = tensors["vectors"].numpy(), tensors["neighbours"].numpy()
        if vectors.shape[0] != neighbours.shape[0]:
            raise DataError("content vectors and neighbours disagree on the catalogue", path=path)
        return cls(vectors=vectors, neighbours=neighbours.astype(np.int64))


def unit_vectors(embeddings: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """``[N, D]`` content vectors from per-modality ``([N, d] vectors, [N] bool mask)``: each
    modality unit-normalised and weighted ``1 / sqrt(m)``, a missing one all zeros."""
    if not embeddings:
        raise DataError("the content prior needs at least one modality's embeddings")
    parts = []
    for emb, mask in embeddings:
        emb = np.asarray(emb, np.float32)
        norm = np.linalg.norm(emb, axis=1, keepdims=True)
        keep = np.asarray(mask, bool)[:, None] & (norm > 0)
        parts.append(np.where(keep, emb / np.maximum(norm, 1e-12), 0.0))
    return (np.concatenate(parts, 1) / np.sqrt(len(parts))).astype(np.float32)


def _nearest(vectors: np.ndarray, k: int, chunk: int) -> np.ndarray:
    """``[N, k]`` most similar other items by dot product (ties: lower index first); items
    without content have no neighbours and are nobody's."""
    n = vectors.shape[0]
    k_eff = min(k, max(n - 1, 0))
    out = np.full((n, k), -1, dtype=np.int64)
    if k_eff == 0:
        return out
    x = torch.from_numpy(vectors)
    empty = ~(x.abs().sum(1) > 0)
    for lo in range(0, n, chunk):
        sim = x[lo : lo + chunk] @ x.T
        rows = torch.arange(lo, min(lo + chunk, n))
        sim[torch.arange(len(rows)), rows] = float("-inf")  # never one's own neighbour
        sim[:, empty] = float("-inf")
        # Sorting by (-sim, index) makes ties deterministic; topk's order among ties is not.
        vals, idx = torch.sort(sim, dim=1, descending=True, stable=True)
        vals, idx = vals[:, :k_eff], idx[:, :k_eff]
        idx = idx.masked_fill(~torch.isfinite(vals) | empty[rows, None], -1)
        out[lo : lo + len(rows), :k_eff] = idx.numpy()
    return out
