"""Dataset registry and data-root resolution."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

from recdata.amazon import load_amazon_beauty
from recdata.custom import load_custom
from recdata.dataset import Dataset
from recdata.errors import DataError
from recdata.movielens import load_ml100k, load_ml1m

log = logging.getLogger(__name__)

DATASETS: dict[str, str] = {
    "ml-100k-mm": "MovieLens-100K ratings + posters + plots (falls back to RecBole's text-only copy)",
    "ml-1m-mm": "MovieLens-1M ratings + posters + plots",
    "amazon-beauty": "Amazon Beauty 5-core sequences, text only (TIGER benchmark)",
    "custom": "your own items / interactions tables (see README)",
    "synthetic": "a small generated catalogue with learnable structure (tests, demos)",
}

_REPO_ROOT = Path(__file__).resolve().parents[1]


def resolve_data_root(data_root: str | os.PathLike[str] | None = None) -> Path | None:
    """--data-root, else $MMQREC_DATA, else ../shared/data beside the project when it exists."""
    if data_root:
        return Path(data_root).expanduser().resolve()
    env = os.environ.get("MMQREC_DATA")
    if env:
        return Path(env).expanduser().resolve()
    for candidate in (_REPO_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"):
        if candidate.is_dir():
            return candidate.resolve()
    return None


def _recbole_ml100k() -> Path | None:
    try:
        import importlib.util

        spec = importlib.util.find_spec("recbole")
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "dataset_example" / "ml-100k"
    return path if (path / "ml-100k.inter").exists() else None


def load_dataset(
    *,
    name: str,
    data_root: str | os.PathLike[str] | None = None,
    path: str | os.PathLike[str] | None = None,
    images_outside_folder: bool = False,
    synthetic_users: int = 200,
    synthetic_items: int = 120,
    seed: int = 0,
) -> Dataset:
    """Load and clean a dataset by registry name."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    if name == "custom":
        if path is None:
            raise DataError("dataset 'custom' needs a folder: set data.path (or --path)")
        return load_custom(Path(path), images_outside_folder=images_outside_folder)
    if name == "synthetic":
        from recdata.synthetic import make_synthetic_dataset

        return make_synthetic_dataset(n_users=synthetic_users, n_items=synthetic_items, seed=seed, with_images=False)
    root = resolve_data_root(data_root)
    loaders: dict[str, Callable[[Path], Dataset]] = {
        "ml-100k-mm": load_ml100k,
        "ml-1m-mm": load_ml1m,
        "amazon-beauty": load_amazon_beauty,
    }
    if name == "ml-100k-mm" and (root is None or not (root / "movielens" / "ml-100k").is_dir()):
        fallback = _recbole_ml100k()
        if fallback is None:
            raise DataError("MovieLens-100K not found: pass --data-root or set $MMQREC_DATA")
        log.warning("data root not found: using the text-only MovieLens-100K copy inside recbole (%s)", fallback)
        ds = load_ml100k(fallback, multimodal=False)
        ds.warnings.append(f"data root not found; used recbole's text-only copy at {fallback}")
        return ds
    if root is None:
        raise DataError(f"dataset {name!r} needs a data root: pass --data-root or set $MMQREC_DATA")
    return loaders[name](root)
