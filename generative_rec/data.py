"""Training and evaluation examples for the generative retriever.

For a user with chronological sequence ``s`` (leave-one-out split, see docs/architecture.md):

* training: every prefix of ``s[:-2]`` — target ``s[t]``, history ``s[max(0, t-H):t]`` for
  ``t >= 1`` (a training sequence of length 1 yields no example);
* validation: history ``s[:-2]`` (last ``H`` items), target ``s[-2]``;
* test: history ``s[:-1]`` (last ``H`` items), target ``s[-1]``.

A batch's encoder input is ``[user token] + SID tokens of each history item, oldest first +
[eos]`` (with ``history_encoding: item`` one token per history item instead of its ``L`` SID
tokens), right-padded with pad (0) to the batch maximum; the labels are exactly the ``L`` SID
tokens of the target (the decoder emits a fixed-length SID, so no eos is needed).

Histories are stored as an ``int32 [E, H]`` matrix of item indices, right-padded with -1, so a
batch is assembled with a few vectorised numpy operations and stage 2 can look the items up again
(``Batch.hist_items``) to substitute soft embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from recdata.errors import DataError
from recdata.layout import layout

SPLITS = ("train", "valid", "test")


@dataclass
class Examples:
    """One split's examples: user index, right-padded history (-1 = none) and target item."""

    users: np.ndarray  # int64 [E]
    history: np.ndarray  # int32 [E, H]
    targets: np.ndarray  # int64 [E]

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def subset(self, index: np.ndarray) -> "Examples":
        return Examples(self.users[index], self.history[index], self.targets[index])


@dataclass
class Batch:
    """A collated batch (torch tensors on one device)."""

    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T]
    labels: torch.Tensor  # [B, L] SID tokens of the target
    hist_items: torch.Tensor  # [B, h] item indices, -1 = padding
    targets: torch.Tensor  # [B] target item indices (-1 when unknown)
    users: torch.Tensor  # [B] user indices

    def to(self, device: str | torch.device) -> "Batch":
        return Batch(**{k: v.to(device, non_blocking=True) for k, v in self.__dict__.items()})


def right_aligned_windows(seq: np.ndarray, ends: np.ndarray, max_history: int) -> np.ndarray:
    """``seq[max(0, e-H):e]`` for every ``e`` in ``ends`` as an ``[len(ends), H]`` matrix,
    oldest item first, right-padded with -1."""
    seq = np.asarray(seq, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    h = max_history
    padded = np.concatenate([np.full(h, -1, dtype=np.int64), seq])
    # Row for end e is padded[e : e + H] == seq[e-H : e] with -1 where e-H < 0 (left padding).
    idx = ends[:, None] + np.arange(h)[None, :]
    left = padded[idx]
    n = np.minimum(ends, h)
    # Rotate each row by its padding width so that the real items come first.
    rot = (np.arange(h)[None, :] + (h - n)[:, None]) % h
    return np.take_along_axis(left, rot, axis=1)


def build_examples(
    *,
    train_sequences: list[np.ndarray],
    valid_inputs: list[np.ndarray],
    valid_targets: np.ndarray,
    test_inputs: list[np.ndarray],
    test_targets: np.ndarray,
    max_history: int,
    max_train_prefixes: int = 0,
) -> dict[str, Examples]:
    """Examples of the three splits (see the module docstring); with ``max_train_prefixes > 0``
    only each user's most recent ``max_train_prefixes`` training targets are kept."""
    users, hists, targets = [], [], []
    for u, seq in enumerate(train_sequences):
        seq = np.asarray(seq, dtype=np.int64)
        if len(seq) < 2:
            continue
        first = 1 if max_train_prefixes <= 0 else max(1, len(seq) - max_train_prefixes)
        ends = np.arange(first, len(seq))
        users.append(np.full(len(ends), u, dtype=np.int64))
        hists.append(right_aligned_windows(seq, ends, max_history))
        targets.append(seq[ends])
    if users:
        train = Examples(
            np.concatenate(users),
            np.concatenate(hists).astype(np.int32),
            np.concatenate(targets).astype(np.int64),
        )
    else:
        train = Examples(
            np.zeros(0, np.int64), np.zeros((0, max_history), np.int32), np.zeros(0, np.int64)
        )
    out = {"train": train}
    for name, inputs, tgt in (
        ("valid", valid_inputs, valid_targets),
        ("test", test_inputs, test_targets),
    ):
        rows = [
            right_aligned_windows(np.asarray(seq), np.array([len(seq)]), max_history)
            for seq in inputs
        ]
        hist = np.concatenate(rows) if rows else np.zeros((0, max_history), np.int64)
        out[name] = Examples(
            np.arange(len(inputs), dtype=np.int64),
            hist.astype(np.int32),
            np.asarray(tgt, dtype=np.int64),
        )
    return out


def histories_to_examples(histories: list[list[int]], max_history: int) -> Examples:
    """Examples without targets for arbitrary histories (user index = row, target = -1)."""
    rows = [
        right_aligned_windows(np.asarray(h, dtype=np.int64), np.array([len(h)]), max_history)
        for h in histories
    ]
    hist = np.concatenate(rows) if rows else np.zeros((0, max_history), np.int64)
    n = len(histories)
    return Examples(np.arange(n, dtype=np.int64), hist.astype(np.int32), np.full(n, -1, np.int64))


class Collator:
    """Turns example rows into model inputs.

    ``item_tokens``: ``[N, L]`` vocabulary ids of every item's SID; ``user_tokens``: ``[U]``
    vocabulary id of every user's hashed token.
    """

    def __init__(self, *, item_tokens: np.ndarray, user_tokens: np.ndarray, pad_id: int,
                 eos_id: int, item_offset: int | None = None) -> None:
        self.item_tokens = np.asarray(item_tokens, dtype=np.int64)
        self.user_tokens = np.asarray(user_tokens, dtype=np.int64)
        self.pad_id = pad_id
        self.eos_id = eos_id
        self.sid_len = int(self.item_tokens.shape[1])
        self.item_offset = item_offset
        """None: one encoder position per SID token; else item ``i`` is the single token
        ``item_offset + i`` (``history_encoding: item``, see ``generative_rec.model``)."""

    def __call__(self, examples: Examples, index: np.ndarray | None = None) -> Batch:
        ex = examples if index is None else examples.subset(index)
        hist = ex.history.astype(np.int64)
        lengths = (hist >= 0).sum(axis=1)
        h = max(int(lengths.max()) if len(lengths) else 0, 1)
        hist = hist[:, :h]
        b, sid_len = len(ex), self.sid_len
        if self.item_offset is not None:
            tokens = np.where(hist >= 0, self.item_offset + hist, self.pad_id)[:, :, None]
            sid_len = 1
        else:
            tokens = self.item_tokens[np.maximum(hist, 0)]  # [B, h, L]
            tokens[hist < 0] = self.pad_id
        width = 2 + h * sid_len
        ids = np.full((b, width), self.pad_id, dtype=np.int64)
        ids[:, 0] = self.user_tokens[ex.users]
        ids[:, 1 : 1 + h * sid_len] = tokens.reshape(b, h * sid_len)
        eos_pos = 1 + lengths * sid_len
        ids[np.arange(b), eos_pos] = self.eos_id
        mask = (np.arange(width)[None, :] <= eos_pos[:, None]).astype(np.int64)
        targets = ex.targets
        labels = np.where(
            (targets >= 0)[:, None], self.item_tokens[np.maximum(targets, 0)], self.pad_id
        )
        return Batch(
            input_ids=torch.from_numpy(ids),
            attention_mask=torch.from_numpy(mask),
            labels=torch.from_numpy(labels),
            hist_items=torch.from_numpy(hist),
            targets=torch.from_numpy(targets.copy()),
            users=torch.from_numpy(ex.users.copy()),
        )


def epoch_order(
    n: int, *, epoch: int, seed: int, rank: int = 0, world_size: int = 1
) -> np.ndarray:
    """This rank's share of a seeded permutation of ``range(n)`` for ``epoch``.

    The permutation depends only on (seed, epoch), so a resumed run replays the same order; it is
    padded by wrapping around so that every rank gets the same number of examples (as
    ``DistributedSampler`` does).
    """
    rng = np.random.Generator(np.random.PCG64([seed, epoch, 0x5EED]))
    perm = rng.permutation(n)
    if world_size > 1:
        total = -(-n // world_size) * world_size
        if total > n:
            perm = np.concatenate([perm, perm[: total - n]])
        perm = perm[rank::world_size]
    return perm


def length_bucketed(
    order: np.ndarray, lengths: np.ndarray, *, batch_size: int, window: int, seed: int, epoch: int
) -> np.ndarray:
    """``order`` rearranged so that each batch holds histories of similar length.

    A batch is padded to its longest history, so on a catalogue of short sequences (Amazon
    Beauty: most histories hold a few items, a few hold ``max_history``) random batches pay for
    the longest one. Within consecutive windows of ``window`` batches of the shuffled order,
    examples are sorted by length and cut into batches; the batches are then shuffled, so each
    still mixes users and the epoch still visits every example once. Depends only on (order,
    lengths, seed, epoch): a resumed run replays it. The final partial batch stays last.
    """
    order = np.asarray(order)
    if batch_size <= 0 or window <= 1 or len(order) <= batch_size:
        return order
    n_full = len(order) // batch_size * batch_size
    span = batch_size * window
    rng = np.random.Generator(np.random.PCG64([seed, epoch, 0xB0C7]))
    batches = []
    for lo in range(0, n_full, span):
        chunk = order[lo : min(lo + span, n_full)]
        # Stable sort on length keeps the shuffled order among equal lengths.
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk.reshape(-1, batch_size))
    shuffled = [batches[i] for i in rng.permutation(len(batches))]
    return np.concatenate(shuffled + [order[n_full:]])


def load_sid_codes(run_dir: Path) -> tuple[np.ndarray, list[int]]:
    """SID codes ``[N, L]`` (row = item_idx) and codebook sizes from ``run_dir/tokenizer``."""
    from tokenizer.sid import SemanticIds

    sids = SemanticIds.from_run_dir(run_dir)
    codes = np.asarray(sids.codes, dtype=np.int64)
    sizes = [int(s) for s in sids.codebook_sizes]
    if codes.ndim != 2 or codes.shape[1] != len(sizes):
        raise DataError(
            f"semantic IDs have shape {codes.shape} but {len(sizes)} codebook sizes",
            path=layout(run_dir).tokenizer_dir,
        )
    if len(np.unique(codes, axis=0)) != len(codes):
        raise DataError(
            "semantic IDs are not unique per item (collisions unresolved)",
            path=layout(run_dir).tokenizer_dir,
        )
    return codes, sizes
