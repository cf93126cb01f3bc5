"""CPU thread settings that hold up when the machine is shared with other busy processes.

torch's defaults (one intra-op thread per core, OpenMP threads that spin while they wait) are
tuned for a machine of one's own. Beside another busy process, a team of spinning threads waits
at every barrier for a member the scheduler has put aside, and small tensor operations, which
serving is made of, slow down 20 to 50 times. Two rules keep the slowdown to the share of the
cores actually lost:

* When serving, OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``). libgomp
  reads the variable once, when torch is first imported, so :func:`set_env_defaults` runs
  before that in the serving commands and in ``import mmqrec``; an explicit setting in the
  environment wins. Training keeps the spinning waits, faster on an idle machine, and takes
  one thread on a busy one, where the policy does not matter.
* Serving uses one intra-op thread per model worker and takes its parallelism across requests;
  training uses as many threads as there are cores not already busy when it starts
  (:func:`free_cores`). ``--threads`` (or ``OMP_NUM_THREADS``) overrides either.

Measured by ``benchmarks/serve.py`` and ``benchmarks/train_step.py --busy``.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Literal

log = logging.getLogger(__name__)

Role = Literal["serve", "train"]

# Environment defaults applied before torch loads OpenMP; never over an explicit setting.
ENV_DEFAULTS = {
    "OMP_WAIT_POLICY": "PASSIVE",
    # Intel's OpenMP (used by MKL builds that bring libiomp) has its own spin time.
    "KMP_BLOCKTIME": "0",
}


def set_env_defaults() -> None:
    """Make OpenMP threads sleep while they wait, unless the environment already says otherwise.

    Takes effect only when it runs before the first ``import torch`` of the process.
    """
    for key, value in ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _cpu_times() -> tuple[float, float] | None:
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = handle.readline().split()[1:]
    except OSError:
        return None
    values = [float(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0.0)  # idle + iowait
    return sum(values[:8]), idle


def free_cores(*, sample_s: float = 0.3) -> int:
    """Usable cores not kept busy by other processes, measured over ``sample_s`` seconds
    (at least 1). Falls back on the 1-minute load average where ``/proc/stat`` is missing."""
    cores = usable_cores()
    first = _cpu_times()
    if first is None:
        try:
            busy = os.getloadavg()[0]
        except OSError:
            return cores
    else:
        time.sleep(sample_s)
        second = _cpu_times()
        total = second[0] - first[0]
        if total <= 0:
            return cores
        machine = os.cpu_count() or cores
        busy = machine * (1.0 - (second[1] - first[1]) / total)
    return max(1, min(cores, int(round(cores - busy))))


def choose_threads(*, requested: int | None, role: Role) -> int:
    """Intra-op threads for a command: ``requested`` when given, else ``OMP_NUM_THREADS`` when
    the user set it, else 1 for serving and the free cores for training."""
    if requested is not None:
        if requested < 1:
            from recdata.errors import DataError

            raise DataError(f"--threads must be a positive integer, got {requested}")
        return int(requested)
    explicit = os.environ.get("OMP_NUM_THREADS", "").strip()
    if explicit.isdigit() and int(explicit) > 0:
        return int(explicit)
    return 1 if role == "serve" else free_cores()


def apply_threads(*, requested: int | None, role: Role) -> int:
    """Set torch's intra-op threads for ``role`` (see :func:`choose_threads`); returns the count."""
    import torch

    n = choose_threads(requested=requested, role=role)
    torch.set_num_threads(n)
    log.debug("%d torch thread%s (%s; OMP_WAIT_POLICY=%s)", n, "" if n == 1 else "s", role,
             os.environ.get("OMP_WAIT_POLICY", "unset"))
    return n
