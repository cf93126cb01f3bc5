"""Each artefact of a run has exactly one writing stage: run the stages one at a time (stage 2
on, a variant, the baselines) and check which files each one created or changed, and that the
manifest credits every file of the run to one stage."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import yaml

from pipeline.config import config_from_dict
from pipeline.stages import STAGE_NAMES, run_pipeline, stage_by_name
from tests.test_resume import CONFIG

pytestmark = pytest.mark.slow

# Written by the pipeline or the command line around the stages, not by a stage.
NOT_A_STAGE = ("config.yaml", "manifest.json", "logs/")


def _files(run_dir: Path) -> dict[str, str]:
    out = {}
    for root, dirs, files in os.walk(run_dir):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
        for name in files:
            path = Path(root) / name
            if not path.is_symlink():
                out[path.relative_to(run_dir).as_posix()] = hashlib.sha256(
                    path.read_bytes()).hexdigest()
    return out


def _owned(stage: str, path: str) -> bool:
    return any(path == entry or path.startswith(entry + "/")
               for entry in stage_by_name(stage).owns)


def test_every_artefact_has_one_writing_stage(tmp_path):
    raw = yaml.safe_load(CONFIG)
    raw["retriever"]["stage2"] = {"enabled": True, "steps": 3, "continue_steps": 3}
    raw["variants"] = {"rqk_a": raw["variants"]["rqk_a"]}
    cfg = config_from_dict(raw)
    run_dir = tmp_path / "run"
    before: dict[str, str] = {}
    for stage in STAGE_NAMES:
        assert run_pipeline(cfg=cfg, run_dir=run_dir, only=(stage,)) == [(stage, "ran")]
        after = _files(run_dir)
        touched = {p for p in after if before.get(p) != after[p]} | (set(before) - set(after))
        foreign = sorted(p for p in touched
                         if not _owned(stage, p) and not p.startswith(NOT_A_STAGE))
        assert not foreign, f"{stage} wrote {foreign}"
        before = after
    assert any(p.startswith("stage2/") for p in before)  # stage 2 ran and wrote its own folder

    manifest = json.loads((run_dir / "manifest.json").read_text())["stages"]
    credited: dict[str, str] = {}
    for stage, entry in manifest.items():
        for path in entry["artefacts"]:
            assert path not in credited, f"{path}: {credited.get(path)} and {stage}"
            credited[path] = stage
    stage_files = {p for p in before if not p.startswith(NOT_A_STAGE)}
    assert stage_files == set(credited)
