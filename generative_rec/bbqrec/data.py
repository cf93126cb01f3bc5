"""Training windows and evaluation inputs for BBQRec (leave-one-out split, docs/architecture.md).

Tokens are ``item_idx + 1`` (0 = padding); every row is left-padded to ``max_len`` so the most
recent item sits in the last column.

Training (SASRec's shifted-sequence objective): a training sequence ``s = s_u[:-2]`` is cut into
windows from its end: window ``[a, e)`` feeds ``s[a:e]`` and predicts ``s[a+1:e+1]`` position by
position (causal attention), with ``e = n-1, n-1-T, ...`` and ``a = max(0, e-T)``. Every
transition ``s[:k] -> s[k]`` (k >= 1) is a target exactly once; within a window its context is
truncated to the window (at most T items, as at evaluation time).
"""

from __future__ import annotations

import numpy as np


def left_pad(sequences: list[np.ndarray], max_len: int) -> np.ndarray:
    """The last ``max_len`` items of each sequence as tokens, left-padded with 0: [U, max_len]."""
    out = np.zeros((len(sequences), max_len), dtype=np.int64)
    for row, seq in enumerate(sequences):
        recent = np.asarray(seq, dtype=np.int64)[-max_len:]
        if len(recent):
            out[row, max_len - len(recent):] = recent + 1
    return out


def training_windows(sequences: list[np.ndarray], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(inputs [M, T] tokens, targets [M, T] item_idx with -1 = no target) over all sequences."""
    inputs, targets = [], []
    for seq in sequences:
        s = np.asarray(seq, dtype=np.int64)
        e = len(s) - 1
        while e > 0:
            a = max(0, e - max_len)
            row_in = np.zeros(max_len, dtype=np.int64)
            row_tg = np.full(max_len, -1, dtype=np.int64)
            width = e - a
            row_in[max_len - width:] = s[a:e] + 1
            row_tg[max_len - width:] = s[a + 1:e + 1]
            inputs.append(row_in)
            targets.append(row_tg)
            e = a
    if not inputs:
        return np.zeros((0, max_len), dtype=np.int64), np.zeros((0, max_len), dtype=np.int64)
    return np.stack(inputs), np.stack(targets)
