"""Long loops report progress in non-interactive logs (a file or pipe gets lines, not bars)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO_ROOT

LOOP = """
import logging, time
logging.basicConfig(level=logging.INFO, format="%(message)s")
from recdata.runtime import progress
bar = progress(range(12), desc="scoring", unit="user")
for i in bar:
    time.sleep(0.05)
    bar.set_postfix(loss=f"{1.0 / (i + 1):.3f}")
bar = progress(total=4, desc="training", leave=False)
for _ in range(4):
    time.sleep(0.1)
    bar.update(1)
bar.close()
"""


def _run(**env: str) -> str:
    out = subprocess.run([sys.executable, "-c", LOOP], cwd=REPO_ROOT, capture_output=True,
                         text=True, env={**os.environ, **env}, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stderr


def test_log_lines_say_done_rate_and_time_left_without_carriage_returns():
    env = {"MMQREC_PROGRESS_INTERVAL": "0.15", "MMQREC_NO_PROGRESS": "0", "MMQREC_PROGRESS": "0"}
    err = _run(**env)
    lines = [line for line in err.splitlines() if line.startswith("scoring:")]
    assert lines, err
    assert "\r" not in err
    assert lines[-1].startswith("scoring: 12/12 (100%)") and "user/s" in lines[-1]
    assert all("left" in line and "elapsed" in line for line in lines)
    # A postfix set every iteration rides on the timed lines instead of adding one per call.
    assert len(lines) < 12 and "loss=0.083" in lines[-1]
    assert any(line.startswith("training: ") for line in err.splitlines())


def test_short_loops_and_opt_out_stay_quiet():
    assert "scoring" not in _run(MMQREC_PROGRESS_INTERVAL="30", MMQREC_NO_PROGRESS="0")
    assert "scoring" not in _run(MMQREC_PROGRESS_INTERVAL="0.1", MMQREC_NO_PROGRESS="1")
