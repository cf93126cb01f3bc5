"""``torchrun -m generative_rec.stage`` end to end: two CPU ranks (gloo), stage 2 on."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(300)
def test_torchrun_runs_the_stage_with_stage2(tmp_path):
    """The user-facing launch: ``torchrun -m generative_rec.stage`` with stage 2 on; rank 0
    writes every artefact and the re-assigned IDs stay unique."""
    from test_stage2 import _tokenized_run
    from tokenizer.sid import SemanticIds

    run = _tokenized_run(tmp_path, "mmq")
    overrides = ["d_model=32", "num_layers=1", "num_decoder_layers=1", "num_heads=2",
                 "d_kv=16", "d_ff=64", "schedule.batch_size=16", "schedule.max_steps=6",
                 "schedule.eval_every=3", "schedule.warmup_steps=2", "schedule.val_max_users=0",
                 "decoding.candidates_n=20",
                 "stage2.enabled=true", "stage2.steps=4", "stage2.continue_steps=4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MMQREC_NO_PROGRESS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", str(_free_port()), "-m", "generative_rec.stage", str(run),
         "--device", "cpu", *[arg for o in overrides for arg in ("--set", o)]],
        capture_output=True, text=True, env=env, timeout=280,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = run / "retriever"
    for name in ("model.safetensors", "metrics.json", "metrics_stage1.json", "candidates.parquet"):
        assert (out / name).exists(), name
    meta = json.loads((out / "config.json").read_text())
    assert meta["summary"]["world_size"] == 2
    sids = SemanticIds.from_run_dir(run)
    assert len(np.unique(sids.codes, axis=0)) == sids.n_items
    # Stage 2 wrote its own folder and its verdict; rank 0 alone wrote it.
    marker = json.loads((run / "stage2" / "stage2.json").read_text())
    assert marker["adopted"] == meta["summary"]["stage2"]["adopted"]
