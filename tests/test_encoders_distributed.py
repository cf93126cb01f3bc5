"""Two torchrun processes on CPU (gloo) split the items and rank 0 merges the same artefacts.

Only the image encoder runs here to keep the test short; both modalities share the sharding code.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

import encoders.stage as stage
from encoders.config import EncoderConfig
from recdata.io import load_tensors, read_json
from recdata.synthetic import write_synthetic_run_data

N_ITEMS = 10


def test_torchrun_two_cpu_ranks_match_a_single_process(tmp_path: Path) -> None:
    shared = tmp_path / "run"
    write_synthetic_run_data(shared, n_users=10, n_items=N_ITEMS, seed=3, with_images=True)
    single = tmp_path / "single"
    single.mkdir()
    for name in ("data",):
        (single / name).symlink_to(shared / name, target_is_directory=True)

    env = dict(os.environ, MMQREC_NO_PROGRESS="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "encoders", str(shared), "--device", "cpu", "--set", "batch_size=4", "--set", "shard_size=3",
        "--set", "text=false",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    # Each rank logs its own summary: both took half of the items (item_idx % 2 == rank).
    summaries = [json.loads(m) for m in re.findall(r"encode: (\{.*\})", done.stderr)]
    assert len(summaries) == 2
    for summary in summaries:
        assert summary["world_size"] == 2
        assert summary["image"]["encoded_here"] == N_ITEMS // 2
    printed = json.loads(done.stdout[done.stdout.index("{"):])
    assert printed["n_items"] == N_ITEMS and printed["world_size"] == 2
    assert not (shared / "embeddings" / "shards").exists()

    import torch

    torch.set_num_threads(1)
    stage.run(cfg=EncoderConfig(text=False, batch_size=4, shard_size=3), run_dir=single, device="cpu")
    for modality in ("image",):
        two = load_tensors(shared / "embeddings" / f"{modality}.safetensors")
        one = load_tensors(single / "embeddings" / f"{modality}.safetensors")
        np.testing.assert_array_equal(two["mask"].numpy(), one["mask"].numpy())
        # Batches are composed differently, so allow float rounding, nothing more.
        np.testing.assert_allclose(two["embeddings"].numpy(), one["embeddings"].numpy(), atol=1e-4, rtol=0)
    assert read_json(shared / "embeddings" / "meta.json")["cache_key"] == read_json(
        single / "embeddings" / "meta.json"
    )["cache_key"]

