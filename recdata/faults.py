"""Crash injection for the resume tests.

``MMQREC_KILL_AT=NAME`` (or ``NAME:N``) makes the process kill itself with SIGKILL the N-th time
(default: the first) it passes the point called NAME — a hard crash at a place the test chooses,
not at a moment a timer happens to hit. Unset, a kill point costs one dictionary lookup.

Points: ``encode.shard`` (after an embedding shard is written), ``tokenize.epoch``,
``train-retriever.checkpoint`` (after a checkpoint is written), ``train-ranker.epoch``,
``variants.variant`` (after one variant's stages), ``evaluate.baseline`` (after a baseline's
files are written).
"""

from __future__ import annotations

import os
import signal

_passed: dict[str, int] = {}


def kill_point(name: str) -> None:
    spec = os.environ.get("MMQREC_KILL_AT")
    if not spec:
        return
    target, _, nth = spec.partition(":")
    if target != name:
        return
    _passed[name] = _passed.get(name, 0) + 1
    if _passed[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
