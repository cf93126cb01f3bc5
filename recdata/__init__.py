"""Datasets, cleaning, filtering, splits and popularity strata."""

from recdata.config import DataConfig
from recdata.dataset import Dataset
from recdata.errors import DataError
from recdata.registry import DATASETS, load_dataset, resolve_data_root

__all__ = ["DATASETS", "DataConfig", "DataError", "Dataset", "load_dataset", "resolve_data_root"]
