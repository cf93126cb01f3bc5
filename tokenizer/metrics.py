"""Tokenizer quality figures: codebook utilisation and token entropy per position."""

from __future__ import annotations

import numpy as np


def position_stats(codes: np.ndarray, sizes: list[int], names: list[str]) -> list[dict]:
    """Per position: ``utilization`` = distinct codes used / codebook size; ``entropy`` = entropy
    of the code distribution over items in bits (maximum log2 K); ``perplexity`` = 2^entropy."""
    codes = np.asarray(codes)
    out = []
    for p, (size, name) in enumerate(zip(sizes, names)):
        counts = np.bincount(codes[:, p], minlength=size).astype(np.float64) if len(codes) else np.zeros(size)
        total = counts.sum()
        probs = counts[counts > 0] / total if total else np.zeros(0)
        entropy = float(-(probs * np.log2(probs)).sum()) if len(probs) else 0.0
        out.append({
            "name": name,
            "codebook_size": int(size),
            "utilization": float((counts > 0).sum() / size),
            "entropy": entropy,
            "perplexity": float(2.0 ** entropy),
        })
    return out


def utilization(codes: np.ndarray, sizes: list[int]) -> np.ndarray:
    """Utilisation of each position (fast path used every epoch)."""
    codes = np.asarray(codes)
    return np.array([len(np.unique(codes[:, p])) / s for p, s in enumerate(sizes)])
