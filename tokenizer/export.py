"""Writing the tokenizer artefacts of a run directory.

``run_dir/tokenizer/``: ``model.safetensors`` (state dict), ``config.json`` (config + input
widths), ``semantic_ids.parquet`` (see :mod:`tokenizer.sid`) and ``metrics.json``. Reading a
fitted tokenizer back needs the name -> class registry: :func:`tokenizer.registry.load_tokenizer`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from recdata.io import read_json, save_tensors, write_json
from recdata.layout import layout
from tokenizer.base import SemanticTokenizer
from tokenizer.inputs import TokenizerInputs, load_inputs
from recdata.metrics import position_stats
from tokenizer.sid import SID_FILE, SemanticIds, resolve_collisions

log = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"


def tokenizer_dir(run_dir: Path) -> Path:
    return layout(run_dir).tokenizer_dir


@torch.no_grad()
def evaluate_reconstruction(model: SemanticTokenizer, inputs: TokenizerInputs) -> dict[str, float]:
    """Item-weighted mean of the reconstruction terms over the catalogue, in eval mode."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    seen = 0
    for batch in model.chunks(inputs):
        b = batch[0].shape[0]
        for key, value in model.reconstruction_losses(*batch).items():
            if key in ("recon", "aux"):
                sums[key] = sums.get(key, 0.0) + float(value) * b
        seen += b
    model.train(was_training)
    return {k: v / max(seen, 1) for k, v in sums.items()}


def build_semantic_ids(model: SemanticTokenizer, inputs: TokenizerInputs) -> tuple[SemanticIds, np.ndarray, dict]:
    """(final unique table, raw codes [N, L_raw], collision stats) for the current weights."""
    cfg = model.cfg
    raw = model.encode_inputs(inputs).cpu().numpy().astype(np.int64)
    scores = None
    if cfg.collision_strategy == "reassign":
        scores = [s.cpu().numpy() for s in model.scores_inputs(inputs)]
    unique, stats = resolve_collisions(raw, strategy=cfg.collision_strategy, scores=scores,
                                       min_collision_size=cfg.collision_min_size)
    sizes = list(model.codebook_sizes) + [stats["collision_codebook_size"]]
    names = list(model.position_names) + ["collision"]
    sids = SemanticIds(codes=unique, codebook_sizes=sizes, item_ids=list(inputs.item_ids), position_names=names)
    return sids, raw, stats


def save_model(model: SemanticTokenizer, out: Path) -> None:
    """Weights and config of ``model`` into the folder ``out``."""
    info = {
        "config": model.cfg.to_dict(),
        "d_text": model.d_text,
        "d_image": model.d_image,
        "position_names": model.position_names,
        "codebook_sizes": model.codebook_sizes,
    }
    state = {k: v for k, v in model.state_dict().items()}
    save_tensors(out / MODEL_FILE, state, metadata={"format": "mmqrec-tokenizer", "name": model.cfg.name})
    write_json(out / CONFIG_FILE, info)


def write_artefacts(
    *,
    model: SemanticTokenizer,
    inputs: TokenizerInputs,
    run_dir: Path,
    train_seconds: float,
    history: dict | None = None,
    out_dir: Path | None = None,
) -> dict:
    """Resolve collisions, write weights, config, ID table and metrics into ``out_dir``
    (default ``run_dir/tokenizer``); return the metrics."""
    sids, raw, stats = build_semantic_ids(model, inputs)
    recon = evaluate_reconstruction(model, inputs)
    per_position = position_stats(raw, model.codebook_sizes, model.position_names)
    per_position += position_stats(sids.codes[:, -1:], sids.codebook_sizes[-1:], ["collision"])
    raw_stats = per_position[:-1]
    metrics = {
        "tokenizer": model.cfg.name,
        "reconstruction": recon.get("recon", float("nan")),
        "aux_reconstruction": recon.get("aux", 0.0),
        "entropy": float(np.mean([p["entropy"] for p in raw_stats])),
        "utilization": float(np.mean([p["utilization"] for p in raw_stats])),
        "min_utilization": float(np.min([p["utilization"] for p in raw_stats])),
        "collision_rate": stats["collision_rate"],
        "colliding_items": stats["colliding_items"],
        "max_collision_group": stats["max_collision_group"],
        "reassigned": stats["reassigned"],
        "sid_length": sids.length,
        "codebook_sizes": [int(s) for s in sids.codebook_sizes],
        "position_names": sids.position_names,
        "per_position": per_position,
        "n_items": sids.n_items,
        "train_seconds": float(train_seconds),
        "gates": model.gate_stats(inputs),
    }
    if history is not None:
        metrics["stopped_early"] = history.get("stopped_early")
        metrics["final_codes_reset"] = int(history.get("final_codes_reset", 0))
        epochs = history.get("epochs", [])
        metrics["epochs_run"] = len(epochs)
        if epochs:
            metrics["final_train_loss"] = {k: v for k, v in epochs[-1].items()
                                           if isinstance(v, float)}
    out = Path(out_dir) if out_dir is not None else tokenizer_dir(run_dir)
    save_model(model, out)
    sids.save_file(out / SID_FILE)
    write_json(out / METRICS_FILE, metrics)
    return metrics


def reassign_ids(*, model: SemanticTokenizer, run_dir: Path, out_dir: Path,
                 collision_strategy: str | None = None) -> dict:
    """Stage 2 hand-back: re-assign hard IDs with the current (fine-tuned) weights, re-resolve
    collisions and write the tokenizer artefacts into ``out_dir``; returns the new metrics.

    ``collision_strategy`` overrides ``model.cfg.collision_strategy`` when given.
    """
    if collision_strategy is not None:
        model.cfg.collision_strategy = collision_strategy
        model.cfg.validate()
    device = next(iter(model.buffers())).device
    inputs = load_inputs(run_dir).to(device)
    previous = tokenizer_dir(run_dir) / METRICS_FILE
    seconds = float(read_json(previous).get("train_seconds", 0.0)) if previous.exists() else 0.0
    metrics = write_artefacts(model=model, inputs=inputs, run_dir=run_dir, train_seconds=seconds,
                              out_dir=out_dir)
    log.info("re-assigned semantic IDs: utilisation %.3f, collision rate %.4f",
             metrics["utilization"], metrics["collision_rate"])
    return metrics
