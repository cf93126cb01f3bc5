"""Thread settings for a shared machine (recdata.threads): what a command and ``import mmqrec``
choose, and that an explicit setting always wins."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from recdata.errors import DataError
from recdata.threads import choose_threads, free_cores, usable_cores
from tests.conftest import REPO_ROOT


def _env_after_import(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run(
        [sys.executable, "-c", "import mmqrec, os; print(os.environ.get('OMP_WAIT_POLICY'))"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, env={**clean, **env})
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def test_importing_mmqrec_makes_waiting_threads_sleep_unless_the_user_said_otherwise() -> None:
    assert _env_after_import() == "PASSIVE"
    assert _env_after_import(OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"


def test_serving_takes_one_thread_and_an_explicit_count_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert choose_threads(requested=None, role="serve") == 1
    assert choose_threads(requested=3, role="serve") == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert choose_threads(requested=None, role="train") == 2
    assert choose_threads(requested=1, role="train") == 1
    with pytest.raises(DataError, match="--threads must be a positive integer"):
        choose_threads(requested=0, role="train")


def test_training_leaves_out_a_core_another_process_keeps_busy() -> None:
    cores = usable_cores()
    if cores < 2:
        pytest.skip("one usable core: nothing to leave out")
    burn = subprocess.Popen([sys.executable, "-c",
                             "import time\nend = time.time() + 20\nwhile time.time() < end: pass"])
    try:
        time.sleep(0.5)
        assert 1 <= free_cores(sample_s=1.0) <= cores - 1
    finally:
        burn.kill()
        burn.wait()
