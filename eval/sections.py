"""Readers for the sections of the merged metrics: what each earlier stage left in the run dir.

A missing stage is not an error here: its section becomes ``{"status": "not run", "reason":
...}`` and the report says so.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np

from eval.baselines import other_protocol_report
from eval.config import EvalConfig
from recdata.metrics import STRATA
from eval.stats import retrieval_report
from eval.ranked import drop_seen, read_ranked
from recdata.errors import DataError
from recdata.io import read_json
from recdata.split import SequentialSplit
from recdata.layout import layout

logger = logging.getLogger(__name__)

# How deep the retriever's stored candidates are read before history items are removed (its
# lists hold ``max(num_beams, candidates_n)`` items).
RETRIEVER_DEPTH = 1000

TOKENIZER_KEYS = (
    "reconstruction", "entropy", "utilization", "collision_rate", "max_collision_group",
    "sid_length",
)


def not_run(reason: str) -> dict[str, str]:
    return {"status": "not run", "reason": reason}


def is_run(section: Any) -> bool:
    return isinstance(section, dict) and section.get("status") != "not run"


def _read_optional(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    data = read_json(path)
    if not isinstance(data, dict):
        raise DataError("expected a JSON object", path=path)
    return data


def dataset_section(run_dir: Path, split: SequentialSplit) -> dict[str, Any]:
    """Counts of the data stage plus the split and strata as evaluated here."""
    info = _read_optional(layout(run_dir).dataset_info) or {}
    targets = split.test_targets
    section: dict[str, Any] = {
        "name": info.get("name"),
        "users": split.n_users,
        "items": split.n_items,
        "interactions": int(sum(len(s) for s in split.sequences)),
        "train_interactions": int(sum(len(s) - 2 for s in split.sequences)),
        "test_users": int(len(targets)),
        "mean_sequence_length": float(np.mean([len(s) for s in split.sequences])),
        "items_per_stratum": {s: int((split.strata == s).sum()) for s in STRATA},
        "test_targets_per_stratum": {s: int((split.strata[targets] == s).sum()) for s in STRATA},
    }
    for key in ("counts", "skipped", "warnings", "protocol", "items_with_text",
                "items_with_image"):
        if key in info:
            section[key] = info[key]
    return section


def tokenizer_section(run_dir: Path) -> dict[str, Any]:
    metrics = _read_optional(layout(run_dir).tokenizer_metrics)
    if metrics is None:
        return not_run("tokenizer/metrics.json not found")
    section = {k: metrics.get(k) for k in TOKENIZER_KEYS}
    for key, value in metrics.items():
        section.setdefault(key, value)
    return section


def other_protocol(
    path: Path, split: SequentialSplit, cfg: EvalConfig, seed: int, *, filtered_at_source: bool
) -> dict[str, Any] | None:
    """Metrics of a stored list under the protocol that is not the headline, or None when the
    list cannot show it.

    With history items kept as the headline, they are removed from the stored list (as deep as
    it was stored; rows left shorter than the cut-off are counted as ``short_lists``). With
    them removed as the headline, only a list that was not filtered when it was made (the
    generative retriever's beam output) can show the kept protocol.
    """
    if not cfg.exclude_history:
        deep, _ = read_ranked(path, n_users=split.n_users, depth=RETRIEVER_DEPTH)
        lists, short = drop_seen(deep, split.test_inputs, depth=cfg.depth)
        return other_protocol_report(ranked=lists, split=split, cfg=cfg, seed=seed,
                                     short_lists=short)
    if filtered_at_source:
        return None
    lists, _ = read_ranked(path, n_users=split.n_users, depth=cfg.depth)
    return other_protocol_report(ranked=lists, split=split, cfg=cfg, seed=seed, short_lists=None)


def retriever_name(run_dir: Path, cfg: EvalConfig) -> str:
    if cfg.retriever_name:
        return cfg.retriever_name
    metrics = _read_optional(layout(run_dir).retriever_metrics) or {}
    if isinstance(metrics.get("model"), str):
        return metrics["model"]
    tok = _read_optional(layout(run_dir).tokenizer_metrics) or {}
    if isinstance(tok.get("tokenizer"), str):
        return f"{tok['tokenizer']}_tiger"
    return "generative"


def _beams(run_dir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("config.json", "metrics.json"):
        data = _read_optional(layout(run_dir).retriever_dir / name) or {}
        history = (data.get("retriever") or {}).get("history")
        if isinstance(history, dict) and "max_length" in history:
            out["max_history"] = history["max_length"]  # the nested config's name for it
        stack = [data]
        while stack:
            node = stack.pop()
            for key, value in node.items():
                if isinstance(value, dict):
                    stack.append(value)
                elif key in ("num_beams", "decode_beams", "candidates_n", "max_history",
                             "constrained") and key not in out:
                    out[key] = value
    return out


MODEL_ONLY = "_model_only"
"""Suffix of a generative system's name for its model's own lists, before the priors."""


def retriever_system(
    run_dir: Path, split: SequentialSplit, cfg: EvalConfig, seed: int, *,
    model_only: bool = False,
) -> tuple[str, dict[str, Any] | None, np.ndarray | None]:
    """Metrics of the generative retriever recomputed from its test candidates; with
    ``model_only``, from the model's own lists before the priors re-ordered them (named
    ``<name>_model_only``).

    Falls back to the retriever's own metrics.json (without intervals) when there are no
    candidates; returns ``(name, section or None, ranked lists or None)``.
    """
    name = retriever_name(run_dir, cfg)
    path = layout(run_dir).candidates
    if model_only:
        name, path = name + MODEL_ONLY, layout(run_dir).candidates_model_only
        if not path.exists():
            return name, None, None
    if path.exists():
        if cfg.exclude_history:
            deep, missing = read_ranked(path, n_users=split.n_users, depth=RETRIEVER_DEPTH)
            ranked, short = drop_seen(deep, split.test_inputs, depth=cfg.depth)
        else:
            ranked, missing = read_ranked(path, n_users=split.n_users, depth=cfg.depth)
            short = None
        section = retrieval_report(
            ranked=ranked, targets=split.test_targets, strata=split.strata, ks=cfg.ks,
            valid_items=split.n_items, n_samples=cfg.bootstrap_samples,
            confidence=cfg.confidence, seed=seed,
        )
        section["source"] = ("retriever/%s (split=test, first %d items%s)"
                             % (path.name, cfg.depth,
                                ", history items removed" if short is not None else ""))
        section["missing_users"] = missing
        if short is not None:
            section["short_lists"] = short
        section["decoding"] = _beams(run_dir)
        section["other_protocol"] = other_protocol(path, split, cfg, seed,
                                                   filtered_at_source=False)
        return name, section, ranked
    own = _read_optional(layout(run_dir).retriever_metrics) or {}
    for candidate in (own.get("test"), own):
        if isinstance(candidate, dict) and "overall" in candidate and "strata" in candidate:
            section = {"overall": candidate["overall"], "strata": candidate["strata"],
                       "source": "retriever/metrics.json (no per-user lists: no intervals)",
                       "decoding": _beams(run_dir)}
            return name, section, None
    return name, None, None


def two_stage_system(
    run_dir: Path, split: SequentialSplit, cfg: EvalConfig, seed: int
) -> tuple[str | None, dict[str, Any] | None, np.ndarray | None]:
    """The ranker's re-ranked test lists (retriever candidates re-scored), when present."""
    path = layout(run_dir).two_stage_ranked
    metrics = _read_optional(layout(run_dir).ranker_metrics) or {}
    two_stage = metrics.get("two_stage") if isinstance(metrics.get("two_stage"), dict) else {}
    protocol = two_stage.get("protocol", {}) if isinstance(two_stage, dict) else {}
    if not path.exists():
        return None, None, None
    variant = protocol.get("ranked_file_variant", "ranker")
    ranked, missing = read_ranked(path, n_users=split.n_users, depth=cfg.depth)
    section = retrieval_report(
        ranked=ranked, targets=split.test_targets, strata=split.strata, ks=cfg.ks,
        valid_items=split.n_items, n_samples=cfg.bootstrap_samples, confidence=cfg.confidence,
        seed=seed,
    )
    section["source"] = "ranker/two_stage_ranked.parquet"
    section["missing_users"] = missing
    section["protocol"] = protocol
    section["other_protocol"] = other_protocol(path, split, cfg, seed,
                                               filtered_at_source=cfg.exclude_history)
    return f"two_stage_{variant}", section, ranked


def ranking_section(run_dir: Path) -> dict[str, Any]:
    """CTR models of ranker/metrics.json: every entry with overall AUC/GAUC/log-loss."""
    metrics = _read_optional(layout(run_dir).ranker_metrics)
    if metrics is None:
        return not_run("ranker/metrics.json not found")
    models = {}
    for name, value in metrics.items():
        if isinstance(value, dict) and isinstance(value.get("overall"), dict) \
                and "auc" in value["overall"]:
            models[name] = {"overall": value["overall"], "strata": value.get("strata", {})}
    if not models:
        return not_run("ranker/metrics.json holds no model with AUC metrics")
    return models


KNOWN_DIRS = {"data", "embeddings", "tokenizer", "retriever", "ranker", "baselines", "report",
              "variants", "logs"}


def other_systems(
    run_dir: Path, split: SequentialSplit, cfg: EvalConfig, seed: int
) -> list[tuple[str, dict[str, Any], np.ndarray]]:
    """Further systems a stage left as ``RUN_DIR/<name>/ranked.parquet`` + ``metrics.json``.

    A folder qualifies when its metrics.json has ``overall`` and ``strata`` (e.g. BBQRec and its
    ablations). Metrics are recomputed from the ranked lists like every other system's.
    """
    found = []
    for folder in sorted(p for p in Path(run_dir).iterdir() if p.is_dir()):
        if folder.name in KNOWN_DIRS:
            continue
        ranked_path, metrics_path = folder / "ranked.parquet", folder / "metrics.json"
        own = _read_optional(metrics_path) if ranked_path.exists() else None
        if not own or "overall" not in own or "strata" not in own:
            continue
        ranked, missing = read_ranked(ranked_path, n_users=split.n_users, depth=cfg.depth)
        section = retrieval_report(
            ranked=ranked, targets=split.test_targets, strata=split.strata, ks=cfg.ks,
            valid_items=split.n_items, n_samples=cfg.bootstrap_samples,
            confidence=cfg.confidence, seed=seed,
        )
        section["source"] = f"{folder.name}/ranked.parquet"
        section["missing_users"] = missing
        section["other_protocol"] = other_protocol(ranked_path, split, cfg, seed,
                                                   filtered_at_source=cfg.exclude_history)
        if isinstance(own.get("protocol"), dict):
            section["protocol"] = own["protocol"]
        name = own["model"] if isinstance(own.get("model"), str) else folder.name
        found.append((name, section, ranked))
    return found


def variant_systems(
    run_dir: Path, split: SequentialSplit, cfg: EvalConfig, seed: int
) -> tuple[list[tuple[str, dict[str, Any], np.ndarray | None]], dict[str, dict[str, Any]]]:
    """Systems trained in ``RUN_DIR/variants/<name>/`` on the same data and embeddings.

    Each variant's retriever is named ``<tokenizer>_tiger`` (the variant's name when that is
    taken), and any further system it holds (e.g. BBQRec) keeps its own name. Returns the
    systems and each variant's tokenizer metrics.
    """
    systems: list[tuple[str, dict[str, Any], np.ndarray | None]] = []
    tokenizers: dict[str, dict[str, Any]] = {}
    root = layout(run_dir).variants_dir
    if not root.is_dir():
        return systems, tokenizers
    plain = dataclasses.replace(cfg, retriever_name=None)
    for vdir in sorted(p for p in root.iterdir() if p.is_dir()):
        for model_only in (False, True):
            name, section, lists = retriever_system(vdir, split, plain, seed,
                                                    model_only=model_only)
            if section is not None:
                section["source"] = f"variants/{vdir.name}/" + section.get("source", "retriever")
                systems.append((name, section, lists))
        tok = tokenizer_section(vdir)
        if is_run(tok):
            tokenizers[vdir.name] = tok
        for other, osec, olists in other_systems(vdir, split, cfg, seed):
            osec["source"] = f"variants/{vdir.name}/" + osec["source"]
            systems.append((other, osec, olists))
    return systems, tokenizers
