"""Token vocabulary of the generative retriever: special tokens, hashed user tokens, SID tokens.

Layout (binding; the trained model's embedding table follows it):

* ``pad_id = 0`` — padding and the T5 ``decoder_start_token_id``;
* ``eos_id = 1``;
* user tokens ``[2, 2 + n_user_buckets)`` — a stable hash of the user id string;
* SID position ``p``, code ``c`` → ``offset[p] + c`` with ``offset[0] = 2 + n_user_buckets`` and
  ``offset[p + 1] = offset[p] + codebook_sizes[p]``.

Every position owns a disjoint token range, so a token alone tells which SID position it encodes.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence, TypeVar

import numpy as np

from recdata.errors import DataError

if TYPE_CHECKING:
    import torch

ArrayLike = TypeVar("ArrayLike", np.ndarray, "torch.Tensor")

PAD_ID = 0
EOS_ID = 1
USER_OFFSET = 2


@dataclass(frozen=True)
class SidVocab:
    """Vocabulary built from the tokenizer's codebook sizes (one entry per SID position)."""

    codebook_sizes: Sequence[int]
    """Number of codes at each SID position (the last one is the collision token's range)."""
    n_user_buckets: int = 2000
    """Number of hashed user tokens (TIGER: 2000)."""

    pad_id: int = field(default=PAD_ID, init=False)
    eos_id: int = field(default=EOS_ID, init=False)

    def __post_init__(self) -> None:
        sizes = tuple(int(s) for s in self.codebook_sizes)
        if not sizes:
            raise DataError("SidVocab needs at least one SID position (codebook_sizes is empty)")
        if any(s < 1 for s in sizes):
            raise DataError(f"SidVocab codebook sizes must be >= 1, got {list(sizes)}")
        if self.n_user_buckets < 1:
            raise DataError(f"SidVocab n_user_buckets must be >= 1, got {self.n_user_buckets}")
        object.__setattr__(self, "codebook_sizes", sizes)

    # ---- derived layout -------------------------------------------------------------------
    @property
    def sid_length(self) -> int:
        return len(self.codebook_sizes)

    @property
    def user_offset(self) -> int:
        return USER_OFFSET

    @property
    def offsets(self) -> tuple[int, ...]:
        """First token id of each SID position."""
        first = USER_OFFSET + self.n_user_buckets
        return tuple(int(x) for x in first + np.concatenate([[0], np.cumsum(self.codebook_sizes)[:-1]]))

    @property
    def vocab_size(self) -> int:
        return USER_OFFSET + self.n_user_buckets + int(sum(self.codebook_sizes))

    def position_range(self, position: int) -> tuple[int, int]:
        """Half-open token range ``[start, end)`` of SID position ``position``."""
        start = self.offsets[position]
        return start, start + self.codebook_sizes[position]

    # ---- users ----------------------------------------------------------------------------
    def user_token(self, user_id: str) -> int:
        """Token of a user: blake2b of the UTF-8 id modulo the bucket count.

        Python's ``hash()`` is salted per process, so it would give a different token after a restart.
        """
        digest = hashlib.blake2b(str(user_id).encode("utf-8"), digest_size=8).digest()
        return USER_OFFSET + int.from_bytes(digest, "little") % self.n_user_buckets

    def user_tokens(self, user_ids: Sequence[str]) -> np.ndarray:
        """Vectorised convenience over :meth:`user_token` (int64 array)."""
        return np.fromiter((self.user_token(u) for u in user_ids), dtype=np.int64, count=len(user_ids))

    # ---- SIDs -----------------------------------------------------------------------------
    def encode_sids(self, codes: ArrayLike) -> ArrayLike:
        """Map codes ``[..., L]`` to token ids of the same shape (numpy in → numpy out, torch → torch)."""
        self._check_last_dim(codes)
        sizes, offsets = self._layout_like(codes)
        if bool((codes < 0).any()) or bool((codes >= sizes).any()):
            raise DataError(f"SID codes out of range for codebook sizes {list(self.codebook_sizes)}")
        return codes + offsets

    def decode_tokens(self, tokens: ArrayLike) -> ArrayLike:
        """Inverse of :meth:`encode_sids`; raises when a token is not in its position's range."""
        self._check_last_dim(tokens)
        sizes, offsets = self._layout_like(tokens)
        codes = tokens - offsets
        if bool((codes < 0).any()) or bool((codes >= sizes).any()):
            raise DataError("token ids are not valid SID tokens for their positions")
        return codes

    def _check_last_dim(self, x: "np.ndarray | torch.Tensor") -> None:
        if x.ndim == 0 or x.shape[-1] != self.sid_length:
            raise DataError(f"expected SIDs with last dimension {self.sid_length}, got shape {tuple(x.shape)}")

    def _layout_like(self, x: "np.ndarray | torch.Tensor") -> tuple[Any, Any]:
        # torch is imported lazily so that the vocabulary (user hashing, layout) stays importable
        # without it; a tensor can only exist once torch has been imported.
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(x, torch.Tensor):
            kw = {"dtype": torch.long, "device": x.device}
            return torch.tensor(self.codebook_sizes, **kw), torch.tensor(self.offsets, **kw)
        return np.asarray(self.codebook_sizes, dtype=np.int64), np.asarray(self.offsets, dtype=np.int64)

    # ---- persistence ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (stored in the retriever's config.json)."""
        return {"codebook_sizes": list(self.codebook_sizes), "n_user_buckets": self.n_user_buckets}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SidVocab":
        return cls(codebook_sizes=[int(s) for s in d["codebook_sizes"]], n_user_buckets=int(d["n_user_buckets"]))
