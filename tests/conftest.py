"""Shared fixtures: where the real data lives, and small synthetic run directories."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MMQREC_DATA", REPO_ROOT.parent / "shared" / "data"))

os.environ.setdefault("MMQREC_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Commands the tests start choose their thread count from the cores free at that moment; a fixed
# count keeps runs that are compared bit for bit (a resumed run against a straight one) equal
# whatever else the machine is doing.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# Tests use tiny tensors, for which one thread is much faster than several on a busy 2-core box.
import torch  # noqa: E402

torch.set_num_threads(1)


def require_shared(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set MMQREC_DATA or place shared/data beside the repo)")
    return path


@pytest.fixture
def shared_data() -> Path:
    return require_shared()


@pytest.fixture
def synthetic_run(tmp_path: Path) -> Path:
    from recdata.synthetic import write_synthetic_run_data

    run_dir = tmp_path / "run"
    write_synthetic_run_data(run_dir, n_users=50, n_items=60, seed=0, with_images=True)
    return run_dir
