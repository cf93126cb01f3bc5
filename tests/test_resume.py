"""A run killed with SIGKILL part-way through any stage, then rerun, ends with the same artefacts
and metrics as a run that was never interrupted.

The kill happens at a point the test names (``MMQREC_KILL_AT``, see ``recdata/faults.py``), not
at a moment a timer hits. Each case starts from a copy of the finished reference run, redoes one
stage onward with the kill armed (``--from STAGE``), then runs ``mmqrec run`` again unarmed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tests.conftest import REPO_ROOT

CONFIG = """
seed: 0
device: cpu
data:
  dataset: synthetic
  synthetic_users: 60
  synthetic_items: 48
encoders:
  batch_size: 16
  shard_size: 16
tokenizer:
  name: mmq
  codebook_size: 8
  epochs: 4
  warmup_epochs: 1
  batch_size: 32
  mmq: {latent_dim: 8, expert_hidden: 16, decoder_hidden: 16}
retriever:
  d_model: 16
  num_layers: 1
  num_decoder_layers: 1
  num_heads: 2
  d_kv: 8
  d_ff: 32
  history:
    max_length: 5
  schedule:
    batch_size: 32
    lr: 0.003
    warmup_steps: 2
    max_steps: 12
    eval_every: 4
    patience: 0
    eval_batch_size: 64
  decoding:
    num_beams: 20
    candidates_n: 20
ranker:
  epochs: 2
  patience: 2
  batch_size: 128
  candidates_n: 20
  variants: [sid]
eval:
  baselines: [pop]
  bootstrap_samples: 20
  report: false
variants:
  rqk_a:
    stages: [tokenize]
    tokenizer: {name: rqkmeans, codebook_size: 8, rq: {levels: 2}}
  rqk_b:
    stages: [tokenize]
    tokenizer: {name: rqkmeans, codebook_size: 6, rq: {levels: 2}}
"""

# (stage redone with the kill armed, kill point): every stage part-way through its work.
CASES = [
    ("encode", "encode.shard:2"),
    ("tokenize", "tokenize.epoch:2"),
    ("train-retriever", "train-retriever.checkpoint:2"),
    ("train-ranker", "train-ranker.epoch:1"),
    ("variants", "variants.variant:1"),
    ("evaluate", "evaluate.baseline:1"),
]
# What each stage writes: removed from the copy so that the armed run does the work for real
# instead of reusing it.
OUTPUTS = {"encode": "embeddings", "tokenize": "tokenizer", "train-retriever": "retriever",
           "train-ranker": "ranker", "variants": "variants", "evaluate": "baselines"}
SKIP_DIRS = {"logs", "checkpoint", "report"}
# Provenance, not results: timings, paths, and what one invocation did or resumed from.
VOLATILE = {"time", "started", "finished", "date", "elapsed", "code_version", "run_dir",
            "resumed_from", "ran"}


def _mmqrec(args: list[str], **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "MMQREC_KILL_AT"}
    full_env.update({"MMQREC_NO_PROGRESS": "1", **env})
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=REPO_ROOT, env=full_env,
                          capture_output=True, text=True, timeout=600)


def _stable(value):
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in sorted(value.items())
                if k not in VOLATILE and not k.endswith("seconds") and not k.endswith("_s")}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    if isinstance(value, float):
        return round(value, 10)
    return value


def _fingerprint(run_dir: Path) -> dict[str, str]:
    """Content hash of every artefact (tensors, tables, JSON without timings)."""
    from recdata.io import load_tensors

    out = {}
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(run_dir)
        if set(rel.parts) & SKIP_DIRS or rel.name in ("manifest.json", "config.yaml") \
                or ".tmp" in rel.name or ".part" in rel.name:
            continue
        digest = hashlib.sha256()
        if path.suffix == ".safetensors":
            tensors = load_tensors(path)
            for key in sorted(tensors):
                digest.update(key.encode())
                digest.update(np.ascontiguousarray(tensors[key].numpy()).tobytes())
        elif path.suffix == ".parquet":
            digest.update(json.dumps(pl.read_parquet(path).to_dicts(), default=str).encode())
        elif path.suffix == ".json":
            digest.update(json.dumps(_stable(json.loads(path.read_text())), sort_keys=True).encode())
        elif path.suffix == ".jsonl":
            rows = [_stable(json.loads(line)) for line in path.read_text().splitlines() if line]
            digest.update(json.dumps(rows, sort_keys=True).encode())
        else:
            digest.update(path.read_bytes())
        out[str(rel)] = digest.hexdigest()
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("resume")
    config = root / "tiny.yaml"
    config.write_text(CONFIG)
    run_dir = root / "reference"
    out = _mmqrec(["run", str(config), "--out", str(run_dir)])
    assert out.returncode == 0, out.stderr[-3000:]
    return config, run_dir, _fingerprint(run_dir)


@pytest.mark.parametrize(("stage", "point"), CASES, ids=[c[0] for c in CASES])
def test_kill_then_rerun_equals_an_uninterrupted_run(reference, tmp_path, stage, point):
    config, ref_dir, want = reference
    run_dir = tmp_path / "run"
    shutil.copytree(ref_dir, run_dir, symlinks=True)
    shutil.rmtree(run_dir / OUTPUTS[stage])
    killed = _mmqrec(["run", str(config), "--out", str(run_dir), "--from", stage],
                     MMQREC_KILL_AT=point)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-3000:])
    again = _mmqrec(["run", str(config), "--out", str(run_dir)])
    assert again.returncode == 0, again.stderr[-3000:]
    got = _fingerprint(run_dir)
    assert set(got) == set(want), sorted(set(got) ^ set(want))
    differ = sorted(k for k in want if got[k] != want[k])
    assert not differ, [(k, _json_diff(ref_dir / k, run_dir / k)) for k in differ]


def _json_diff(a: Path, b: Path, limit: int = 5) -> list[str]:
    if a.suffix != ".json":
        return []
    out: list[str] = []

    def walk(x, y, where):
        if len(out) >= limit:
            return
        if isinstance(x, dict) and isinstance(y, dict):
            for k in sorted(set(x) | set(y)):
                walk(x.get(k), y.get(k), f"{where}.{k}")
        elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
            for i, (u, v) in enumerate(zip(x, y)):
                walk(u, v, f"{where}[{i}]")
        elif x != y:
            out.append(f"{where}: {str(x)[:60]} != {str(y)[:60]}")

    walk(_stable(json.loads(a.read_text())), _stable(json.loads(b.read_text())), "")
    return out
