"""``manifest.json``: which stage ran with which config, when, and what it wrote."""

from __future__ import annotations

import os
import subprocess
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

from recdata.io import read_json, write_json

MANIFEST_VERSION = 1


@lru_cache(maxsize=1)
def code_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        base = version("mmqrec")
    except PackageNotFoundError:
        base = "unknown"
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parents[1],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{base}+{sha}" if sha else base


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Manifest:
    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / "manifest.json"
        if self.path.exists():
            self.data: dict[str, Any] = read_json(self.path)
        else:
            self.data = {"version": MANIFEST_VERSION, "stages": {}}

    def stage(self, name: str) -> dict[str, Any] | None:
        return self.data["stages"].get(name)

    def record(self, name: str, entry: dict[str, Any]) -> None:
        self.data["stages"][name] = entry
        # Under torchrun every rank runs the stage; only rank 0 owns the run directory's files.
        if os.environ.get("RANK", "0") == "0":
            write_json(self.path, self.data)

    def forget(self, name: str) -> None:
        if self.data["stages"].pop(name, None) is not None:
            write_json(self.path, self.data)
