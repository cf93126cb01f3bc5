"""Seeding, device selection and progress bars shared by every stage."""

from __future__ import annotations

import os
import random
import sys
from typing import Any, Iterable

import numpy as np


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so that CPU runs are reproducible."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def resolve_device(device: str = "auto") -> str:
    """Map "auto" to "cuda" when a GPU is visible, else "cpu"; validate explicit choices."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        from recdata.errors import DataError

        raise DataError(f"device {device!r} requested but no CUDA GPU is visible; use device=cpu")
    return device


def progress_enabled() -> bool:
    if os.environ.get("MMQREC_NO_PROGRESS") == "1":
        return False
    return sys.stderr.isatty() or os.environ.get("MMQREC_PROGRESS") == "1"


def progress(iterable: Iterable[Any] | None = None, **kwargs: Any) -> Any:
    """A tqdm progress bar that stays quiet in CI logs and pipes."""
    from tqdm.auto import tqdm

    kwargs.setdefault("disable", not progress_enabled())
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)
