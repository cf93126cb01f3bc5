"""Variants: extra systems trained on the main run's data and embeddings.

Each variant lives in ``RUN_DIR/variants/<name>/`` with ``data`` and ``embeddings`` linked to the
main run's, its own config (the main config plus the variant's section overrides) and its own
manifest, so it is skipped when up to date exactly like the main stages. The report shows each
variant's retriever as a row named after the variant (e.g. ``rqvae_tiger``) and, when the
variant trains BBQRec, a ``bbqrec`` row.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pipeline.config import RunConfig
from pipeline.manifest import Manifest
from recdata.errors import DataError
from recdata.io import write_json
from recdata.faults import kill_point
from recdata.layout import layout

log = logging.getLogger("mmqrec")

DEFAULT_VARIANT_STAGES = ("tokenize", "train-retriever")
SHARED = ("data", "embeddings")


def _link_shared(run_dir: Path, variant_dir: Path) -> None:
    variant_dir.mkdir(parents=True, exist_ok=True)
    for name in SHARED:
        link = variant_dir / name
        target = Path("..") / ".." / name
        if link.is_symlink() and os.readlink(link) == str(target):
            continue
        if link.exists() or link.is_symlink():
            if link.is_symlink() or link.is_file():
                link.unlink()
            else:
                raise DataError(f"{link} exists and is not a link to the main run's {name}")
        link.symlink_to(target, target_is_directory=True)


def run(*, cfg: RunConfig, run_dir: Path, seed: int = 0, device: str = "auto") -> dict:
    from pipeline.stages import ALL_STAGE_NAMES, is_up_to_date, run_stage, stage_by_name, stage_hashes, write_resolved_config

    run_dir = Path(run_dir)
    status: dict[str, dict] = {}
    for name in cfg.variants:
        entry = cfg.variants[name]
        stages = tuple(entry.get("stages", DEFAULT_VARIANT_STAGES))
        bad = [s for s in stages if s not in ALL_STAGE_NAMES or s in ("data", "encode", "variants", "evaluate")]
        if bad:
            raise DataError(f"variant {name!r}: stages {bad} cannot run in a variant")
        vcfg = cfg.variant(name)
        vdir = layout(run_dir).variant(name)
        _link_shared(run_dir, vdir)
        write_resolved_config(vcfg, vdir)
        manifest = Manifest(vdir)
        hashes = stage_hashes(vcfg, ("data", "encode", *stages))
        ran = []
        for stage_name in stages:
            stage = stage_by_name(stage_name)
            if is_up_to_date(stage, run_dir=vdir, manifest=manifest, expected_hash=hashes[stage_name]) and not ran:
                log.info("variant %s, stage %s: up to date, skipped", name, stage_name)
                continue
            log.info("variant %s, stage %s", name, stage_name)
            run_stage(stage, cfg=vcfg, run_dir=vdir, manifest=manifest, config_hash=hashes[stage_name])
            ran.append(stage_name)
        status[name] = {"stages": list(stages), "ran": ran, "dir": str(vdir.relative_to(run_dir))}
        kill_point("variants.variant")
    write_json(layout(run_dir).variants_dir / "status.json", status)
    return {"variants": len(status)}
