"""A vectorised prefix trie over the catalogue's semantic IDs, for constrained beam search.

Layout. Sort the SIDs lexicographically. At depth ``d`` (0 = root, ``L`` = complete SIDs) the trie's
nodes are the distinct length-``d`` prefixes, numbered in sorted order. Because the order is
lexicographic, the children of a node are a *contiguous* run of nodes one level down, so each level
stores only

* ``child_start[d][n]`` — id of the first child (at depth ``d + 1``) of node ``n``,
* ``child_count[d][n]`` — its number of children,
* ``node_code[d + 1][m]`` — the code at position ``d`` that leads to node ``m``,

plus ``leaf_item[m]``: the catalogue row (``item_idx``) of complete SID ``m``. Total memory is
``O(N · L)``. A decoding step gathers a fixed-width window ``child_start + arange(width[d])`` for every
beam, where ``width[d]`` is the largest branching factor at depth ``d``; the cost per beam depends
on that width only, never on the catalogue size, and every shape is static, so the whole batch runs
on the device without host round-trips.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from recdata.errors import DataError


@dataclass
class SidTrie:
    """Constrained-decoding index over unique SIDs. Build with :meth:`from_codes`."""

    codes: torch.Tensor
    """[N, L] int64, row = item_idx (the catalogue as given)."""
    child_start: list[torch.Tensor]
    """Per depth d in [0, L): [n_nodes[d]] int64, first child id at depth d + 1."""
    child_count: list[torch.Tensor]
    """Per depth d in [0, L): [n_nodes[d]] int64, number of children."""
    node_code: list[torch.Tensor]
    """Per depth d in [1, L] (index d - 1): [n_nodes[d]] int64, code at position d - 1."""
    leaf_item: torch.Tensor
    """[N] int64, item_idx of each depth-L node (sorted SID order)."""
    widths: tuple[int, ...]
    """Largest branching factor at each depth d in [0, L) (the decoding window)."""
    max_codes: tuple[int, ...]
    """Largest code at each position (checked against the vocabulary's codebook sizes)."""

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def from_codes(cls, codes: np.ndarray | torch.Tensor | Sequence[Sequence[int]], *, device: str | torch.device = "cpu") -> "SidTrie":
        """Build the trie from an ``[N, L]`` integer array of SIDs (row = item_idx; rows must be unique)."""
        arr = codes.detach().cpu().numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)
        if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
            raise DataError(f"SID table must be a non-empty [N, L] array, got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.integer):
            raise DataError(f"SID table must hold integers, got dtype {arr.dtype}")
        arr = arr.astype(np.int64, copy=False)
        if (arr < 0).any():
            row = int(np.nonzero((arr < 0).any(axis=1))[0][0])
            raise DataError(f"SID table has a negative code at item_idx {row}")
        n, length = arr.shape

        # Lexicographic order: np.lexsort sorts by the last key first, so pass the columns reversed.
        order = np.lexsort(arr.T[::-1])
        srt = arr[order]

        # new_prefix[d][i]: row i starts a new length-(d+1) prefix (row 0 always does).
        differs = np.ones((n, length), dtype=bool)
        differs[1:] = srt[1:] != srt[:-1]
        new_prefix = np.logical_or.accumulate(differs, axis=1)
        if not new_prefix[:, -1].all():
            dup = int(np.nonzero(~new_prefix[:, -1])[0][0])
            raise DataError(
                f"SID table has duplicate rows (item_idx {int(order[dup - 1])} and {int(order[dup])} share "
                f"SID {srt[dup].tolist()}); resolve collisions before building the trie"
            )

        # node id of each sorted row at each depth d >= 1; depth 0 is the single root.
        node_of_row = np.cumsum(new_prefix, axis=0) - 1  # [n, L], column d-1 -> depth d
        child_start, child_count, node_code, widths = [], [], [], []
        parent_of_row = np.zeros(n, dtype=np.int64)  # depth-0 node of every row
        n_parent = 1
        for d in range(1, length + 1):
            first_rows = np.nonzero(new_prefix[:, d - 1])[0]  # first sorted row of each depth-d node
            parent = parent_of_row[first_rows]  # non-decreasing: children are contiguous
            count = np.bincount(parent, minlength=n_parent).astype(np.int64)
            start = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)
            child_start.append(start)
            child_count.append(count)
            node_code.append(srt[first_rows, d - 1].copy())
            widths.append(int(count.max()))
            parent_of_row = node_of_row[:, d - 1]
            n_parent = len(first_rows)

        dev = torch.device(device)
        as_t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.long, device=dev)  # noqa: E731
        return cls(
            codes=as_t(arr),
            child_start=[as_t(a) for a in child_start],
            child_count=[as_t(a) for a in child_count],
            node_code=[as_t(a) for a in node_code],
            leaf_item=as_t(order),
            widths=tuple(widths),
            max_codes=tuple(int(m) for m in arr.max(axis=0)),
        )

    # ---- basic properties -----------------------------------------------------------------
    @property
    def n_items(self) -> int:
        return int(self.codes.shape[0])

    @property
    def sid_length(self) -> int:
        return int(self.codes.shape[1])

    @property
    def device(self) -> torch.device:
        return self.codes.device

    def n_nodes(self, depth: int) -> int:
        """Number of distinct length-``depth`` prefixes (1 for the root)."""
        return 1 if depth == 0 else int(self.node_code[depth - 1].shape[0])

    def to(self, device: str | torch.device) -> "SidTrie":
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        if dev == self.device:
            return self
        return SidTrie(
            codes=self.codes.to(dev),
            child_start=[t.to(dev) for t in self.child_start],
            child_count=[t.to(dev) for t in self.child_count],
            node_code=[t.to(dev) for t in self.node_code],
            leaf_item=self.leaf_item.to(dev),
            widths=self.widths,
            max_codes=self.max_codes,
        )

    # ---- vectorised traversal -------------------------------------------------------------
    def children(self, depth: int, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Fixed-width child windows of depth-``depth`` nodes.

        Returns ``(child, code, valid)``, each ``[*nodes.shape, widths[depth]]``: child node ids at
        depth + 1 (clamped into range where invalid), the code leading to each child, and whether the
        window slot is a real child.
        """
        width = self.widths[depth]
        slot = torch.arange(width, device=nodes.device)
        start = self.child_start[depth][nodes].unsqueeze(-1)
        valid = slot < self.child_count[depth][nodes].unsqueeze(-1)
        child = (start + slot).clamp_(max=self.n_nodes(depth + 1) - 1)
        return child, self.node_code[depth][child], valid

    def lookup(self, sids: torch.Tensor | np.ndarray) -> torch.Tensor:
        """item_idx of each complete SID in ``sids [..., L]``; -1 where it is not a catalogue SID."""
        q = torch.as_tensor(sids, dtype=torch.long, device=self.device)
        if q.ndim == 0 or q.shape[-1] != self.sid_length:
            raise DataError(f"expected SIDs with last dimension {self.sid_length}, got shape {tuple(q.shape)}")
        flat = q.reshape(-1, self.sid_length)
        found = torch.ones(flat.shape[0], dtype=torch.bool, device=self.device)
        for _, _, _, hit, nodes in self._descend(flat):
            found &= hit.any(dim=-1)
        items = torch.where(found, self.leaf_item[nodes], torch.full_like(nodes, -1))
        return items.reshape(q.shape[:-1])

    def prefix_leaves(self, sids: torch.Tensor, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The leaves (positions in sorted SID order, see ``leaf_item``) under each row's
        length-``depth`` prefix, as half-open ranges ``(lo, hi)`` of ``[B]``: lexicographic order
        makes every subtree one contiguous run. Rows must be catalogue SIDs ``[B, L]``."""
        q = torch.as_tensor(sids, dtype=torch.long, device=self.device)
        nodes = torch.zeros(q.shape[0], dtype=torch.long, device=self.device)
        if depth > 0:
            for d, _, _, _, reached in self._descend(q):
                if d + 1 == depth:
                    nodes = reached
                    break

        def first_leaf(at: torch.Tensor) -> torch.Tensor:
            for d in range(depth, self.sid_length):
                at = self.child_start[d][at]
            return at

        following = nodes + 1  # the next node at this depth starts where this subtree ends
        last = following >= self.n_nodes(depth)
        hi = torch.where(last, torch.full_like(nodes, self.n_items),
                         first_leaf(following.clamp(max=self.n_nodes(depth) - 1)))
        return first_leaf(nodes), hi

    def sibling_mask(self, sids: torch.Tensor, width: int) -> torch.Tensor:
        """Which codes continue each prefix of ``sids [B, L]`` (catalogue SIDs) to a real item:
        ``[B, L, width]`` bool, ``[b, d, c]`` true iff ``sids[b, :d] + [c]`` is a prefix of some
        catalogue SID. The softmax of ``output_softmax: children`` runs over these codes. Cost
        ``O(B · sum(widths))``, independent of the catalogue size, and no host round-trip (rows
        must be catalogue SIDs: training targets are; this is not checked)."""
        q = torch.as_tensor(sids, dtype=torch.long, device=self.device)
        if q.ndim != 2 or q.shape[1] != self.sid_length:
            raise DataError(f"expected SIDs [B, {self.sid_length}], got shape {tuple(q.shape)}")
        if width <= max(self.max_codes):
            raise DataError(f"mask width {width} is too narrow for code {max(self.max_codes)}")
        # One spare column receives the window's padding slots, so they never mark a code.
        mask = torch.zeros(q.shape[0], self.sid_length, width + 1, dtype=torch.bool,
                           device=self.device)
        for d, code, valid, _, _ in self._descend(q):
            mask[:, d].scatter_(1, code.masked_fill(~valid, width), True)
        return mask[..., :width]

    def _descend(self, sids: torch.Tensor):  # type: ignore[no-untyped-def]
        """Walk ``sids [B, L]`` down the trie: per depth ``d`` yield ``(d, code, valid, hit,
        nodes)`` — the child window's codes and real slots, which slot matches ``sids[:, d]``,
        and the depth-``d + 1`` node reached (arbitrary where nothing matched)."""
        nodes = torch.zeros(sids.shape[0], dtype=torch.long, device=self.device)
        for d in range(self.sid_length):
            child, code, valid = self.children(d, nodes)
            hit = valid & (code == sids[:, d : d + 1])
            nodes = child.gather(1, hit.to(torch.uint8).argmax(dim=-1, keepdim=True)).squeeze(1)
            yield d, code, valid, hit, nodes

    def leaf_sids(self) -> torch.Tensor:
        """SIDs in sorted (depth-L node) order, ``[N, L]`` — ``codes[leaf_item]``."""
        return self.codes[self.leaf_item]
