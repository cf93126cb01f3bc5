"""`mmqrec run` end to end on a small catalogue the test writes itself (text + images).

Exercises every stage through the command line, the contract's metrics.json schema, the report,
stage skipping on a second run, a variant, and `mmqrec recommend`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from recdata.synthetic import make_synthetic_dataset
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

TINY_CONFIG = """
seed: 0
device: cpu
data:
  dataset: custom
  path: {folder}
encoders:
  batch_size: 32
tokenizer:
  name: mmq
  codebook_size: 16
  epochs: 8
  batch_size: 64
  mmq:
    latent_dim: 16
    expert_hidden: 32
    decoder_hidden: 32
retriever:
  d_model: 32
  num_layers: 1
  num_decoder_layers: 1
  num_heads: 2
  d_kv: 16
  d_ff: 64
  schedule:
    batch_size: 64
    lr: 0.003
    warmup_steps: 5
    max_steps: 40
    eval_every: 20
    patience: 2
    eval_batch_size: 64
  decoding:
    num_beams: 20
    candidates_n: 20
ranker:
  epochs: 1
  batch_size: 256
  candidates_n: 20
eval:
  baselines: [pop]
  bootstrap_samples: 50
bbqrec:
  hidden: 16
  inner: 32
  max_len: 10
  epochs: 2
  batch_size: 64
variants:
  rqkmeans_tiger:
    tokenizer:
      name: rqkmeans
      codebook_size: 16
"""


def _write_custom(folder: Path) -> None:
    ds = make_synthetic_dataset(n_users=60, n_items=48, seed=0, with_images=True, image_dir=folder / "img")
    folder.mkdir(parents=True, exist_ok=True)
    items = ds.items.with_columns(
        pl.col("image_path").map_elements(lambda p: "img/" + Path(p).name, return_dtype=pl.Utf8).alias("image")
    ).drop("image_path")
    # One poster is corrupt: it must be masked and counted, not fatal.
    (folder / "img" / "3.png").write_bytes(b"not an image")
    items.write_csv(folder / "items.csv")
    ds.interactions.write_csv(folder / "interactions.csv")
    ds.users.write_csv(folder / "users.csv")


def _mmqrec(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, cwd=REPO_ROOT, timeout=900
    )


def test_run_end_to_end(tmp_path):
    folder = tmp_path / "catalogue"
    _write_custom(folder)
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG.format(folder=folder))
    run_dir = tmp_path / "run"

    first = _mmqrec("run", str(config), "--out", str(run_dir))
    assert first.returncode == 0, first.stderr[-3000:]

    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("dataset", "tokenizer", "retrieval", "ranking"):
        assert key in metrics
    for key in ("reconstruction", "entropy", "utilization", "collision_rate", "max_collision_group", "sid_length"):
        assert key in metrics["tokenizer"], key
    systems = metrics["retrieval"]
    assert {"mmq_tiger", "pop", "rqkmeans_tiger", "two_stage_sid"} <= set(systems), sorted(systems)
    for name, section in systems.items():
        for key in ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20"):
            assert key in section["overall"], (name, key)
        assert set(section["strata"]) == {"popular", "middle", "long_tail", "cold"}
    assert systems["mmq_tiger"]["overall"]["invalid@10"] == 0.0
    assert {"ranker_itemid", "ranker_sid"} <= set(metrics["ranking"])
    for section in (metrics["ranking"]["ranker_itemid"], metrics["ranking"]["ranker_sid"]):
        assert {"auc", "gauc", "logloss"} <= set(section["overall"])

    report = (run_dir / "report" / "report.md").read_text()
    for word in ("popular", "middle", "long_tail", "cold", "mmq_tiger", "pop", "rqkmeans_tiger", "ranker_sid"):
        assert word in report, word
    html = (run_dir / "report" / "report.html").read_text()
    assert "data:image/png;base64," in html

    meta = json.loads((run_dir / "embeddings" / "meta.json").read_text())
    assert "image" in json.dumps(meta)

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert all(entry["status"] == "done" for entry in manifest["stages"].values())

    second = _mmqrec("run", str(config), "--out", str(run_dir))
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stdout.count("skipped") == 7, second.stdout

    user = pl.read_parquet(run_dir / "data" / "users.parquet")["user_id"][0]
    rec = _mmqrec("recommend", str(run_dir), "--user", str(user), "-k", "5", "--json")
    assert rec.returncode == 0, rec.stderr[-2000:]
    payload = json.loads(rec.stdout)
    items = [row["item_id"] for row in payload["items"]]
    assert 0 < len(items) <= 5 and len(set(items)) == len(items)

    # A stage outside the main chain runs when asked for by name (and only it: nothing else
    # is out of date).
    bbq = _mmqrec("train-bbqrec", str(config), str(run_dir))
    assert bbq.returncode == 0, bbq.stderr[-2000:]
    assert (run_dir / "bbqrec" / "metrics.json").exists()
    assert "train-bbqrec     ran" in bbq.stdout and bbq.stdout.count("ran") == 1, bbq.stdout

    unknown = _mmqrec("recommend", str(run_dir), "--user", "no-such-user")
    assert unknown.returncode == 2
    assert "Traceback" not in unknown.stderr and len(unknown.stderr.strip().splitlines()) == 1
