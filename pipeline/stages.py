"""The stage table and the runner that skips up-to-date stages.

A stage's hash covers its own config section, the seed and the hashes of the stages before it,
so changing the tokenizer config re-runs the tokenizer and everything after it, but not the
encoders.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from pipeline.config import RunConfig
from pipeline.manifest import Manifest, code_version, now
from recdata.errors import DataError
from recdata.io import write_text

log = logging.getLogger("mmqrec")


@dataclass(frozen=True)
class Stage:
    name: str
    section: str
    runner: str  # "module:function"
    outputs: tuple[str, ...]
    description: str
    owns: tuple[str, ...] = ()
    """Run-directory entries (folders or files) this stage alone writes: the manifest lists
    every file under them as the stage's artefacts."""
    main: bool = True
    """Part of the main chain; False = only run inside variants that list it."""

    def function(self) -> Callable[..., dict]:
        module, func = self.runner.split(":")
        return getattr(importlib.import_module(module), func)


STAGES: tuple[Stage, ...] = (
    Stage("data", "data", "recdata.stage:run", ("data/dataset.json",),
          "load, clean and split the dataset", owns=("data",)),
    Stage("encode", "encoders", "encoders.stage:run", ("embeddings/meta.json",),
          "frozen text/image embeddings", owns=("embeddings",)),
    Stage("tokenize", "tokenizer", "tokenizer.stage:run", ("tokenizer/semantic_ids.parquet",),
          "semantic IDs", owns=("tokenizer",)),
    Stage("train-retriever", "retriever", "generative_rec.stage:run", ("retriever/metrics.json",),
          "generative retriever (+ stage 2)", owns=("retriever", "stage2")),
    Stage("train-ranker", "ranker", "ranking.stage:run", ("ranker/metrics.json",),
          "CTR ranker and two-stage lists", owns=("ranker",)),
    Stage("variants", "*", "pipeline.variants:run", ("variants/status.json",),
          "extra systems (other tokenizers, BBQRec)", owns=("variants",)),
    Stage("evaluate", "eval", "eval.stage:run", ("metrics.json", "report/report.md"),
          "baselines and report", owns=("baselines", "report", "metrics.json")),
    Stage("train-bbqrec", "bbqrec", "generative_rec.bbqrec.stage:run", ("bbqrec/metrics.json",),
          "BBQRec sequential recommender", owns=("bbqrec",), main=False),
)
STAGE_NAMES = tuple(s.name for s in STAGES if s.main)
ALL_STAGE_NAMES = tuple(s.name for s in STAGES)
# The last main stage a side stage (train-bbqrec) reads from when run by itself.
SIDE_STAGE_INPUTS = "tokenize"


def stage_by_name(name: str) -> Stage:
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise DataError(f"unknown stage {name!r}; stages: {', '.join(STAGE_NAMES)}")


def _section_hash(cfg: RunConfig, stage: Stage) -> str:
    return cfg.variants_hash() if stage.section == "*" else cfg.section_hash(stage.section)


def stage_hashes(cfg: RunConfig, stages: tuple[str, ...] | None = None) -> dict[str, str]:
    """Chained hashes: a stage's hash covers its own section and every earlier stage's hash.

    ``stages`` picks the chain (default: the main chain); a variant passes its own list.
    """
    names = stages if stages is not None else STAGE_NAMES
    hashes: dict[str, str] = {}
    chain = f"seed={cfg.seed}"
    for stage in STAGES:
        if stage.name not in names:
            continue
        chain = hashlib.sha256(f"{chain}|{stage.name}={_section_hash(cfg, stage)}".encode()).hexdigest()[:16]
        hashes[stage.name] = chain
    return hashes


def is_up_to_date(stage: Stage, *, run_dir: Path, manifest: Manifest, expected_hash: str) -> bool:
    entry = manifest.stage(stage.name)
    if not entry or entry.get("config_hash") != expected_hash or entry.get("status") != "done":
        return False
    return all((run_dir / out).exists() for out in stage.outputs)


def write_resolved_config(cfg: RunConfig, run_dir: Path) -> None:
    if os.environ.get("RANK", "0") != "0":
        return
    write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def run_stage(stage: Stage, *, cfg: RunConfig, run_dir: Path, manifest: Manifest, config_hash: str) -> dict[str, Any]:
    started = now()
    t0 = time.perf_counter()
    log.info("stage %s: %s", stage.name, stage.description)
    manifest.record(
        stage.name,
        {"status": "running", "config_hash": config_hash, "code_version": code_version(), "started": started},
    )
    section = cfg if stage.section == "*" else cfg.section(stage.section)
    summary = stage.function()(cfg=section, run_dir=run_dir, seed=cfg.seed, device=cfg.device)
    seconds = time.perf_counter() - t0
    manifest.record(
        stage.name,
        {
            "status": "done",
            "config_hash": config_hash,
            "code_version": code_version(),
            "started": started,
            "finished": now(),
            "seconds": round(seconds, 2),
            "artefacts": owned_files(run_dir, stage),
            "summary": _small(summary),
        },
    )
    log.info("stage %s done in %.1f s", stage.name, seconds)
    return summary or {}


def owned_files(run_dir: Path, stage: Stage) -> list[str]:
    """Every file under the entries ``stage`` owns, relative to ``run_dir`` (links to another
    run's folders, as variants hold, are not followed)."""
    run_dir = Path(run_dir)
    found: list[str] = []
    for entry in stage.owns:
        path = run_dir / entry
        if path.is_file():
            found.append(entry)
            continue
        for root, dirs, files in os.walk(path):
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
            for name in files:
                full = Path(root) / name
                if not full.is_symlink():
                    found.append(full.relative_to(run_dir).as_posix())
    return sorted(found)


def _small(summary: Any) -> Any:
    """Keep the manifest readable: scalars and short mappings only."""
    if not isinstance(summary, dict):
        return {}
    out = {}
    for key, value in summary.items():
        if isinstance(value, (int, float, str, bool)) or value is None:
            out[key] = value
        elif isinstance(value, dict) and len(value) <= 12 and all(
            isinstance(v, (int, float, str, bool)) or v is None for v in value.values()
        ):
            out[key] = value
    return out


def run_pipeline(
    *,
    cfg: RunConfig,
    run_dir: Path,
    from_stage: str | None = None,
    until_stage: str | None = None,
    only: tuple[str, ...] | None = None,
) -> list[tuple[str, str]]:
    """Run stages in order; skip up-to-date ones; ``from_stage`` forces it and the rest."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_resolved_config(cfg, run_dir)
    manifest = Manifest(run_dir)
    requested = stage_by_name(from_stage) if from_stage is not None else None
    hashes = stage_hashes(cfg)
    if requested is not None and not requested.main:
        inputs = STAGE_NAMES[: STAGE_NAMES.index(SIDE_STAGE_INPUTS) + 1]
        hashes.update(stage_hashes(cfg, inputs + (requested.name,)))
    forced = False
    outcome: list[tuple[str, str]] = []
    # A stage outside the main chain (train-bbqrec) runs when asked for by name, after the main
    # stages it reads (up to the semantic IDs); otherwise it runs only inside variants.
    side_stage = requested is not None and not requested.main
    for stage in STAGES:
        if side_stage and stage.main and STAGE_NAMES.index(stage.name) > STAGE_NAMES.index(
                SIDE_STAGE_INPUTS):
            continue
        if not stage.main and not (side_stage and stage.name == requested.name):
            continue
        if requested is not None and stage.name == requested.name:
            forced = True
        if only is not None and stage.name not in only:
            continue
        if not forced and is_up_to_date(stage, run_dir=run_dir, manifest=manifest, expected_hash=hashes[stage.name]):
            log.info("stage %s: up to date, skipped", stage.name)
            outcome.append((stage.name, "skipped"))
        else:
            run_stage(stage, cfg=cfg, run_dir=run_dir, manifest=manifest, config_hash=hashes[stage.name])
            outcome.append((stage.name, "ran"))
        if until_stage is not None and stage.name == until_stage:
            break
    return outcome
