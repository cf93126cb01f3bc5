"""The fit routine of the content tokenizers (MMQ, RQ-VAE, RQ-k-means): fitted on the catalogue
embeddings of a run directory alone, writing ``run_dir/tokenizer/`` (weights, config,
semantic_ids.parquet, metrics).

:func:`content_fit` binds it to a model class; :data:`tokenizer.registry.TOKENIZERS` holds the
result as each content tokenizer's ``fit`` (BBQ's is :func:`tokenizer.bbq.stage.run`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from recdata.errors import DataError
from recdata.io import read_parquet
from recdata.layout import layout
from recdata.runtime import resolve_device, seed_everything
from tokenizer.base import SemanticTokenizer
from tokenizer.config import TokenizerConfig
from tokenizer.export import write_artefacts
from tokenizer.inputs import load_inputs
from tokenizer.train import fit_tokenizer

log = logging.getLogger(__name__)

SUMMARY_KEYS = ("reconstruction", "entropy", "utilization", "collision_rate",
                "max_collision_group", "sid_length", "train_seconds")

FitRoutine = Callable[..., dict]
"""``fit(*, cfg: TokenizerConfig, run_dir: Path, seed: int, device: str) -> dict``: fit the
configured tokenizer, write ``run_dir/tokenizer/`` and return the headline metrics."""


def warm_items(run_dir: Path) -> np.ndarray:
    """Indices of the items with at least one training interaction (``data/strata.parquet``)."""
    strata = read_parquet(layout(run_dir).strata).sort("item_idx")
    warm = np.flatnonzero(strata["train_count"].to_numpy() > 0)
    if len(warm) < 2:
        raise DataError("tokenizer.fit_items=warm needs at least two items seen in training",
                        path=layout(run_dir).strata)
    return warm


def fit_content(
    *,
    cfg: TokenizerConfig,
    run_dir: Path,
    seed: int = 0,
    device: str = "auto",
    model_class: type[SemanticTokenizer],
) -> dict:
    """Train ``model_class`` configured by ``cfg`` and write its artefacts; returns the headline
    metrics.

    Reads ``run_dir/data/items.parquet`` and ``run_dir/embeddings/{text,image}.safetensors``;
    standardisation and weights are fitted on every catalogue item that has the modality (on
    the items seen in training with ``fit_items="warm"``), and every item gets an ID.
    """
    cfg.validate()
    seed_everything(seed)
    dev = resolve_device(device)
    run_dir = Path(run_dir)
    inputs = load_inputs(run_dir, cfg.modalities).to(dev)
    model = model_class(cfg, d_text=inputs.d_text, d_image=inputs.d_image).to(dev)
    log.info("tokenizer %s: %d items, text dim %d, image dim %d, %d raw positions x %d codes",
             cfg.name, inputs.n_items, inputs.d_text, inputs.d_image, model.n_positions, cfg.codebook_size)
    fit_inputs = inputs
    if cfg.fit_items == "warm":
        warm = warm_items(run_dir)
        fit_inputs = inputs.subset(torch.as_tensor(warm, device=inputs.text.device))
        log.info("tokenizer %s: fitted on the %d items seen in training; the other %d get IDs "
                 "from it as new items would", cfg.name, len(warm), inputs.n_items - len(warm))
    start = time.perf_counter()
    history = fit_tokenizer(model, fit_inputs, seed=seed)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        metrics = write_artefacts(model=model, inputs=inputs, run_dir=run_dir,
                                  train_seconds=seconds, history=history)
    summary = {k: metrics[k] for k in SUMMARY_KEYS}
    summary["stopped_early"] = history.get("stopped_early")
    log.info("tokenizer %s done: %s", cfg.name, summary)
    return summary


def content_fit(model_class: type[SemanticTokenizer]) -> FitRoutine:
    """:func:`fit_content` for ``model_class``, with the stage signature
    ``fit(*, cfg, run_dir, seed, device)``."""

    def fit(*, cfg: TokenizerConfig, run_dir: Path, seed: int = 0, device: str = "auto") -> dict:
        return fit_content(cfg=cfg, run_dir=run_dir, seed=seed, device=device, model_class=model_class)

    fit.__name__ = fit.__qualname__ = f"fit_{model_class.__name__}"
    fit.__doc__ = f"Fit a {model_class.__name__} on the run's catalogue embeddings (tokenizer.fit.fit_content)."
    return fit
