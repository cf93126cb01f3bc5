"""Seeding, device selection and progress bars shared by every stage."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import random
import sys
from typing import Any, Iterable, Iterator

import numpy as np

_log = logging.getLogger("mmqrec.progress")
_quiet = contextvars.ContextVar("mmqrec_quiet_progress", default=False)


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """No progress bars or progress lines inside the block (in this thread or task only):
    a server answers many short requests, each of which would draw its own bar."""
    token = _quiet.set(True)
    try:
        yield
    finally:
        _quiet.reset(token)


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
    """Interactive bars: on a terminal (or with MMQREC_PROGRESS=1), never with MMQREC_NO_PROGRESS=1."""
    if os.environ.get("MMQREC_NO_PROGRESS") == "1":
        return False
    return sys.stderr.isatty() or os.environ.get("MMQREC_PROGRESS") == "1"


class _LogLines:
    """A file for tqdm that turns each refresh into one log record (no carriage returns)."""

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line:
            _log.info(line)

    def flush(self) -> None:
        pass


LOG_BAR_FORMAT = ("{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%), {rate_fmt}, elapsed {elapsed}, "
                  "left {remaining}{postfix}")


def _log_bar(tqdm_class: Any) -> Any:
    """``tqdm_class`` whose postfix waits for the next timed log line: tqdm redraws on every
    ``set_postfix``, which in a log would be one line per epoch or step, however short."""

    class LogBar(tqdm_class):  # type: ignore[misc, valid-type]
        def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
            super().set_postfix(ordered_dict, refresh=False, **kwargs)

        def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
            super().set_postfix_str(s, refresh=False)

    return LogBar


def progress(iterable: Iterable[Any] | None = None, **kwargs: Any) -> Any:
    """A progress bar: tqdm on a terminal; in a log file or pipe, one log line (items done,
    rate, time left) every ``$MMQREC_PROGRESS_INTERVAL`` seconds (default 30), starting once a
    loop has run that long; nothing with MMQREC_NO_PROGRESS=1."""
    from tqdm.auto import tqdm

    if _quiet.get():
        return tqdm(iterable, disable=True, **{k: v for k, v in kwargs.items() if k != "disable"})
    if progress_enabled():
        kwargs.setdefault("dynamic_ncols", True)
        return tqdm(iterable, **kwargs)
    if os.environ.get("MMQREC_NO_PROGRESS") == "1":
        return tqdm(iterable, disable=True, **{k: v for k, v in kwargs.items() if k != "disable"})
    interval = float(os.environ.get("MMQREC_PROGRESS_INTERVAL", "30"))
    kwargs.update(file=_LogLines(), mininterval=interval, maxinterval=max(interval, 1.0),
                  delay=interval, bar_format=LOG_BAR_FORMAT, ascii=True)
    kwargs.pop("dynamic_ncols", None)
    return _log_bar(tqdm)(iterable, **kwargs)
