"""A busy neighbour for benchmarks: one CPU-burning process, started and stopped by the benchmark.

The neighbour is another torch job (matrix products on one thread, its own default OpenMP
settings), as on a machine shared with someone's training. It stops by itself after
``seconds`` even if the benchmark dies, so it never outlives the measurement for long.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from typing import Iterator

_BURN = """
import sys, time, torch
torch.set_num_threads(int(sys.argv[2]))
end = time.time() + float(sys.argv[1])
a = torch.randn(384, 384)
while time.time() < end:
    a = torch.tanh(a @ a)
"""

# The neighbour keeps torch's own defaults, whatever this process chose for itself.
_OURS = ("OMP_WAIT_POLICY", "KMP_BLOCKTIME", "OMP_NUM_THREADS")

DESCRIPTION = "one other process running torch matrix products on one thread"


@contextlib.contextmanager
def busy_neighbour(*, seconds: float = 900.0, threads: int = 1) -> Iterator[subprocess.Popen]:
    """Run the block beside a process that keeps ``threads`` cores busy (for ``seconds`` at
    most); the process is stopped when the block ends."""
    env = {k: v for k, v in os.environ.items() if k not in _OURS}
    proc = subprocess.Popen([sys.executable, "-c", _BURN, str(seconds), str(threads)], env=env)
    time.sleep(1.5)  # past its start-up, into the busy loop
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
