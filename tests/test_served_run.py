"""A whole tiny run (retriever, ranker, encoders) served as a user would: `mmqrec serve` over real
HTTP with `mmqrec add-items` beside it, `mmqrec recommend --all`, and what the lists say about
how they were made."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import polars as pl

from mmqrec import Recommender
from tests.conftest import REPO_ROOT
# The same tiny trained run as the add-items tests, and the same HTTP helpers as the server's.
from tests.test_add_items import trained  # noqa: F401  (a module-scoped fixture)
from tests.test_server import _call, _free_port


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_calls_from_many_threads_give_the_lists_of_calls_one_at_a_time(trained: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    rec = Recommender.load(trained, device="cpu")
    users = rec.user_ids
    # Batches of different sizes: concurrent searches must not see each other's inputs.
    batches = [users[i: i + size] for i, size in zip(range(0, 40, 5), (1, 5, 2, 4, 3, 5, 1, 2))]

    def lists(batch: list[str]) -> list[list[str]]:
        return [[it["item_id"] for it in r.items] for r in rec.recommend(batch, k=5)]

    want = [lists(b) for b in batches]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lists, batches * 3))
    assert got == want * 3


def test_lists_say_the_retriever_reads_only_the_recent_history(trained: Path) -> None:
    rec = Recommender.load(trained, device="cpu")
    max_history = 5  # the fixture config's retriever.history.max_length
    recent = [it["item_id"] for it in rec.history(rec.user_ids[0])][-max_history:]
    older_a = [i for i in rec.item_ids if i not in recent][:3]
    older_b = [i for i in rec.item_ids if i not in recent and i not in older_a][:3]
    a = rec.recommend_history(older_a + recent, k=5, exclude_seen=False)
    b = rec.recommend_history(older_b + recent, k=5, exclude_seen=False)
    # Older items do not change the candidates, and the message says which items were read.
    assert [it["item_id"] for it in a.items] == [it["item_id"] for it in b.items]
    assert f"last {max_history} items" in a.message and "full history" not in a.message


def test_a_history_covering_the_catalogue_says_why_the_list_is_empty(trained: Path) -> None:
    rec = Recommender.load(trained, device="cpu")
    result = rec.recommend_history(list(rec.item_ids), k=10)
    assert result.items == []
    assert "0 of the" in result.message and "not in the history" in result.message, result.message


def test_batch_export_logs_progress_and_its_result(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "recs.parquet"
    proc = _cli("recommend", str(trained), "--all", "--out", str(out), "-k", "3", "--chunk-size", "7",
                env={"MMQREC_NO_PROGRESS": "", "MMQREC_PROGRESS_INTERVAL": "0"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    users = Recommender.load(trained, device="cpu").user_ids
    assert pl.read_parquet(out).height == 3 * len(users)
    assert "recommend export:" in proc.stderr, proc.stderr[-2000:]
    assert f"wrote {3 * len(users)} rows for {len(users)} users" in proc.stderr, proc.stderr[-2000:]


def test_added_items_reach_every_route_of_a_running_server(trained: Path, tmp_path: Path) -> None:
    from PIL import Image

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    # Progress bars forced on, as on a terminal: a request must not draw one.
    env = {k: v for k, v in os.environ.items() if k != "MMQREC_NO_PROGRESS"}
    env["MMQREC_PROGRESS"] = "1"
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "serve", str(trained), "--port", str(port),
             "--device", "cpu"], cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 90
            while True:
                assert proc.poll() is None and time.time() < deadline, log_path.read_text()[-3000:]
                try:
                    if _call(base, "/health")[0] == 200:
                        break
                except OSError:
                    time.sleep(0.3)
            before = _call(base, "/health")[1]
            user = Recommender.load(trained, device="cpu").user_ids[0]
            assert _call(base, f"/users/{user}/recommendations?k=5")[0] == 200

            folder = tmp_path / "new"
            folder.mkdir()
            Image.new("RGB", (4, 6), (10, 200, 30)).save(folder / "poster.png")
            pl.DataFrame([{"item_id": "http-new", "title": "The galaxy robot 999",
                           "genres": "space", "plot": "A story about laser and alien.",
                           "image": "poster.png"}]).write_csv(folder / "new_items.csv")
            added = _cli("add-items", str(trained), str(folder / "new_items.csv"))
            assert added.returncode == 0, added.stderr[-3000:]
            assert "Loading weights" not in added.stderr + added.stdout

            health = _call(base, "/health")[1]
            assert health["items"] == before["items"] + 1
            assert health["catalogue_version"] == before["catalogue_version"] + 1
            with urllib.request.urlopen(f"{base}/items/http-new/image", timeout=30) as response:
                assert response.status == 200 and response.read()[:4] == b"\x89PNG"
            assert _call(base, "/items/http-new")[1]["title"] == "The galaxy robot 999"
            assert _call(base, f"/users/{user}/history?last=2")[0] == 200
            status, posted = _call(base, "/recommendations", {"items": ["http-new"], "k": 3})
            assert status == 200 and len(posted["items"]) == 3
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    log = log_path.read_text()
    assert "docs at /docs" in log
    assert "decode:" not in log, log[-2000:]
