"""The ``tokenize`` stage for ``tokenizer.name = "bbq"``: like the content tokenizers' fit
routine (:func:`tokenizer.fit.fit_content`), but the tokenizer also reads the run's user
histories (``run_dir/data``, TRAINING sequences only).

Writes the same artefacts as every tokenizer (``run_dir/tokenizer/{model.safetensors,
config.json, semantic_ids.parquet, metrics.json}``, collision token last, via
:func:`tokenizer.export.write_artefacts`) and adds a ``behaviour`` section to ``metrics.json``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import torch

from recdata.errors import DataError
from recdata.io import write_json
from recdata.runtime import resolve_device, seed_everything
from recdata.split import SequentialSplit
from tokenizer.bbq.model import BBQTokenizer, bbq_config_of
from tokenizer.bbq.config import BBQConfig
from tokenizer.bbq.train import behaviour_agreement, fit_bbq
from tokenizer.config import TokenizerConfig
from tokenizer.export import METRICS_FILE, tokenizer_dir, write_artefacts
from tokenizer.fit import SUMMARY_KEYS
from tokenizer.inputs import load_inputs

log = logging.getLogger(__name__)


def _check_shared_fields(cfg: TokenizerConfig) -> None:
    """Validate the TokenizerConfig fields BBQ reads (the name check is the registry's)."""
    if cfg.codebook_size < 2:
        raise DataError(f"tokenizer.codebook_size must be >= 2, got {cfg.codebook_size}")
    if cfg.codebook_update not in ("ema", "loss"):
        raise DataError(f"tokenizer.codebook_update must be 'ema' or 'loss', got {cfg.codebook_update!r}")
    if cfg.collision_strategy not in ("append", "reassign"):
        raise DataError(f"tokenizer.collision_strategy must be 'append' or 'reassign', got {cfg.collision_strategy!r}")
    if cfg.lr <= 0 or not 0.0 < cfg.ema_decay < 1.0 or not 0.0 <= cfg.reset_stop_fraction <= 1.0:
        raise DataError("tokenizer.lr must be > 0, ema_decay in (0, 1), reset_stop_fraction in [0, 1]")


def run(
    *,
    cfg: TokenizerConfig,
    run_dir: Path,
    seed: int = 0,
    device: str = "auto",
    bbq: BBQConfig | None = None,
) -> dict:
    """Train the BBQ tokenizer on ``run_dir`` and write its artefacts; returns headline metrics.

    ``bbq`` overrides ``cfg.bbq`` (and is what ``tokenizer/config.json`` records). Reads
    ``data/{items,sequences,strata}.parquet`` and ``embeddings/``. This is BBQ's fit routine in
    :data:`tokenizer.registry.TOKENIZERS`.
    """
    _check_shared_fields(cfg)
    bbq_cfg = bbq.validate() if bbq is not None else bbq_config_of(cfg)
    cfg = dataclasses.replace(cfg, bbq=bbq_cfg)
    seed_everything(seed)
    dev = resolve_device(device)
    run_dir = Path(run_dir)
    inputs = load_inputs(run_dir, cfg.modalities).to(dev)
    split = SequentialSplit.from_run_dir(run_dir)
    if split.n_items != inputs.n_items:
        raise DataError(f"{split.n_items} items in data/ but {inputs.n_items} embedding rows", path=run_dir)
    train_sequences = split.train_sequences
    model = BBQTokenizer(cfg, d_text=inputs.d_text, d_image=inputs.d_image, bbq=bbq_cfg).to(dev)
    log.info("tokenizer bbq: %d items, %d users, %d levels x %d codes, modalities %s",
             inputs.n_items, split.n_users, bbq_cfg.levels, cfg.codebook_size, model.modalities)
    start = time.perf_counter()
    history = fit_bbq(model, inputs, train_sequences=train_sequences, seed=seed)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        metrics = write_artefacts(model=model, inputs=inputs, run_dir=run_dir,
                                  train_seconds=seconds, history=history)
        codes = model.encode_inputs(inputs).cpu().numpy()
    out = tokenizer_dir(run_dir)
    last = history["epochs"][-1] if history["epochs"] else {}
    metrics["behaviour"] = {
        "level0": behaviour_agreement(codes, train_sequences, level=0),
        "final_contrastive": last.get("contrastive"),
        "final_club_mi": last.get("mi"),
        "steps": bbq_cfg.steps,
    }
    write_json(out / METRICS_FILE, metrics)
    summary = {k: metrics[k] for k in SUMMARY_KEYS}
    summary["behaviour_lift"] = metrics["behaviour"]["level0"]["lift"]
    log.info("tokenizer bbq done: %s", summary)
    return summary
