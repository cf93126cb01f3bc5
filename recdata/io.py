"""Atomic artefact I/O: JSON, parquet and safetensors.

Every artefact is written to a temporary file in the destination directory, flushed to disk and
then renamed over the destination, so a killed run never leaves a half-written file behind that a
later stage would trust.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from recdata.errors import DataError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        # mkstemp creates 0600 files; artefacts are meant to be shared like any other output.
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")
    return Path(path)


def read_json(path: str | os.PathLike[str]) -> Any:
    path = Path(path)
    if not path.exists():
        raise DataError("missing artefact (run the stage that writes it first)", path=path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"corrupt JSON ({exc.msg} at line {exc.lineno})", path=path) from None


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_parquet(path: str | os.PathLike[str], frame: Any) -> Path:
    """Write a polars DataFrame atomically."""
    with atomic_path(path) as tmp:
        frame.write_parquet(tmp)
    return Path(path)


def read_parquet(path: str | os.PathLike[str]) -> Any:
    import polars as pl

    path = Path(path)
    if not path.exists():
        raise DataError("missing artefact (run the stage that writes it first)", path=path)
    try:
        return pl.read_parquet(path)
    except Exception as exc:  # polars raises several exception types for corrupt files
        raise DataError(f"corrupt parquet file ({type(exc).__name__})", path=path) from None


def save_tensors(
    path: str | os.PathLike[str],
    tensors: Mapping[str, Any],
    *,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Save a mapping of name → torch.Tensor or numpy array as safetensors, atomically."""
    import torch
    from safetensors.torch import save_file

    prepared = {}
    for name, value in tensors.items():
        tensor = torch.as_tensor(value) if not isinstance(value, torch.Tensor) else value
        prepared[name] = tensor.detach().cpu().contiguous()
    with atomic_path(path) as tmp:
        save_file(prepared, str(tmp), metadata=dict(metadata) if metadata else None)
    return Path(path)


def load_tensors(path: str | os.PathLike[str], *, device: str = "cpu") -> dict[str, Any]:
    """Load a safetensors file into a dict of torch tensors (never unpickles anything)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise DataError("missing artefact (run the stage that writes it first)", path=path)
    try:
        return load_file(str(path), device=device)
    except Exception as exc:
        raise DataError(f"corrupt safetensors file ({exc})", path=path) from None


def load_tensor_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})
