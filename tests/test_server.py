"""``mmqrec serve``: real HTTP against a server started on 127.0.0.1, and the page in a browser."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from mmqrec import Recommender
from test_ranker_stage import build_run, tiny_config
from tests.conftest import REPO_ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _call(base: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    from ranking.stage import run

    run_dir = build_run(tmp_path_factory.mktemp("serve"), seed=3)
    run(cfg=tiny_config(variants=["sid"], epochs=1), run_dir=run_dir, seed=0, device="cpu")
    # One catalogue image, so that the image route has something to serve.
    import polars as pl
    from PIL import Image

    poster = run_dir / "poster0.png"
    Image.new("RGB", (4, 6), (200, 30, 30)).save(poster)
    items = pl.read_parquet(run_dir / "data" / "items.parquet")
    items = items.with_columns(
        pl.when(pl.col("item_idx") == 0).then(pl.lit(str(poster))).otherwise(None)
        .cast(pl.String).alias("image_path"))
    items.write_parquet(run_dir / "data" / "items.parquet")

    port = _free_port()
    env = dict(os.environ, MMQREC_NO_PROGRESS="1")
    # The server's output goes to a file: a pipe nobody reads would block it once full.
    log_path = run_dir / "serve.log"
    log_file = open(log_path, "w")  # noqa: SIM115 - open while the server runs
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "serve", str(run_dir), "--port", str(port),
         "--device", "cpu", "--max-wait-ms", "20"],
        cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited: " + log_path.read_text()[-3000:])
        try:
            if _call(base, "/health")[0] == 200:
                break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        raise RuntimeError("server did not start within 90 s")
    yield base, run_dir
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log_file.close()


def test_health_users_history_and_items(server) -> None:
    base, run_dir = server
    rec = Recommender.load(run_dir, device="cpu")
    status, health = _call(base, "/health")
    assert status == 200 and health["status"] == "ok"
    assert health["users"] == len(rec.user_ids) and health["items"] == rec.n_items
    status, users = _call(base, "/users?limit=5")
    assert status == 200 and users["users"] == rec.user_ids[:5] and users["total"] == len(rec.user_ids)
    status, history = _call(base, "/users/4/history?last=3")
    assert status == 200 and history["items"] == rec.history("4", last=3)
    item_id = rec.item_ids[7]
    assert _call(base, f"/items/{item_id}") == (200, rec.item(item_id))
    status, docs = _call(base, "/openapi.json")
    assert status == 200 and "/users/{user_id}/recommendations" in docs["paths"]


def test_recommendations_match_the_python_api(server) -> None:
    base, run_dir = server
    rec = Recommender.load(run_dir, device="cpu")
    status, body = _call(base, "/users/5/recommendations?k=4")
    want = rec.recommend(["5"], k=4)[0]
    assert status == 200
    assert [it["item_id"] for it in body["items"]] == [it["item_id"] for it in want.items]
    history = [it["item_id"] for it in rec.history("6", last=4)]
    status, posted = _call(base, "/recommendations", {"items": history, "k": 3})
    assert status == 200 and len(posted["items"]) == 3 and posted["user_id"] is None
    assert not {it["item_id"] for it in posted["items"]} & set(history)


def test_user_errors_are_404_or_422_with_one_line(server) -> None:
    base, _ = server
    cases = [
        ("/users/nobody/recommendations", None, 404, "unknown user 'nobody'"),
        ("/users/nobody/history", None, 404, "unknown user"),
        ("/items/nothing", None, 404, "unknown item"),
        ("/users/5/recommendations?k=0", None, 422, "k"),
        ("/users/5/recommendations?k=abc", None, 422, "k"),
        ("/users/5/recommendations?k=100000", None, 422, "catalogue size"),
        ("/recommendations", {"items": ["no-such-item"]}, 404, "unknown item"),
        ("/recommendations", {"items": "not-a-list"}, 422, "items"),
        ("/recommendations", {"k": 3}, 422, "items"),
    ]
    for path, body, code, text in cases:
        status, answer = _call(base, path, body)
        assert status == code, (path, answer)
        assert text in answer["detail"] and "\n" not in answer["detail"], (path, answer)


def test_images_come_only_from_the_catalogue(server) -> None:
    base, run_dir = server
    rec = Recommender.load(run_dir, device="cpu")
    with urllib.request.urlopen(f"{base}/items/{rec.item_ids[0]}/image", timeout=30) as response:
        assert response.status == 200 and response.headers["content-type"] == "image/png"
        assert response.read()[:4] == b"\x89PNG"
    assert _call(base, f"/items/{rec.item_ids[1]}/image")[0] == 404
    for sneaky in ("..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd"):
        assert _call(base, f"/items/{sneaky}/image")[0] == 404


def test_concurrent_requests_are_batched(server) -> None:
    base, run_dir = server
    before = _call(base, "/health")[1]
    users = Recommender.load(run_dir, device="cpu").user_ids[:24]
    results: dict[str, list[str]] = {}

    def ask(user: str) -> None:
        status, body = _call(base, f"/users/{user}/recommendations?k=5")
        assert status == 200
        results[user] = [it["item_id"] for it in body["items"]]

    threads = [threading.Thread(target=ask, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = _call(base, "/health")[1]
    served = after["requests_served"] - before["requests_served"]
    batches = after["batches_served"] - before["batches_served"]
    assert served == len(users) and batches < served
    rec = Recommender.load(run_dir, device="cpu")
    for user, got in results.items():
        assert got == [it["item_id"] for it in rec.recommend([user], k=5)[0].items]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_page_renders_history_and_recommendations_in_a_browser(server, tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium on this machine (`make browser` installs Debian's package as root)")
    base, run_dir = server
    rec = Recommender.load(run_dir, device="cpu")
    out = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000", "--dump-dom",
         f"{base}/?user=4"],
        capture_output=True, text=True, timeout=120)
    dom = out.stdout
    assert 'data-user="4"' in dom, out.stderr[-2000:]
    want = rec.recommend(["4"], k=10)[0]
    assert dom.count('class="item rec"') == len(want.items)
    for item in want.items[:3]:
        assert f'data-item-id="{item["item_id"]}"' in dom
        assert "SID " + "-".join(str(c) for c in item["semantic_id"]) in dom
    recent = rec.history("4", last=10)
    assert dom.count('class="item"') >= len(recent)
    assert f'data-item-id="{recent[-1]["item_id"]}"' in dom


def _raw(base: str, path: str, body: bytes | object, headers: dict[str, str] | None = None
         ) -> tuple[int, dict]:
    """POST raw bytes (or an iterable of chunks, sent chunked) and read the JSON answer."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        chunked = not isinstance(body, bytes)
        conn.request("POST", path, body=body, encode_chunked=chunked,
                     headers={"Content-Type": "application/json", **(headers or {})})
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may answer and close before the whole body is sent
    response = conn.getresponse()
    answer = response.status, json.loads(response.read())
    conn.close()
    return answer


def test_request_bodies_histories_and_ids_are_bounded(server) -> None:
    base, run_dir = server
    huge = json.dumps({"items": ["x" * (3 << 20)], "k": 3}).encode()
    status, answer = _raw(base, "/recommendations", huge)
    assert status == 413 and "request body over" in answer["detail"]
    status, answer = _raw(base, "/recommendations", (huge[i: i + 65536] for i in range(0, len(huge), 65536)))
    assert status == 413 and "request body over" in answer["detail"]  # chunked: no length announced

    rec = Recommender.load(run_dir, device="cpu")
    status, answer = _call(base, "/recommendations", {"items": rec.item_ids[:1] * 1001, "k": 3})
    assert status == 422 and answer["detail"].startswith("items:") and "1000" in answer["detail"]
    long_id = "7" * 5000
    for path, body in ((f"/users/{long_id}/recommendations", None), (f"/users/{long_id}/history", None),
                       (f"/items/{long_id}", None), (f"/items/{long_id}/image", None),
                       ("/recommendations", {"items": [long_id]}),
                       ("/recommendations", {"items": rec.item_ids[:2], "user_id": long_id})):
        status, answer = _call(base, path, body)
        assert status == 422 and "at most 256 characters" in answer["detail"], (path, answer)
    # Within the limits an unknown id answers 404, and the detail shows only its start.
    unknown = "q" * 250
    for path, body in ((f"/users/{unknown}/recommendations", None), (f"/items/{unknown}", None),
                       ("/recommendations", {"items": [unknown]})):
        status, answer = _call(base, path, body)
        assert status == 404 and unknown not in answer["detail"] and len(answer["detail"]) < 150
        assert "250 characters" in answer["detail"], answer


def test_malformed_json_gets_a_message_that_says_so(server) -> None:
    base, _ = server
    status, answer = _raw(base, "/recommendations", b'{"items": ["1", "2"], "k": ')
    assert status == 422 and answer["detail"].startswith("request body is not valid JSON"), answer


def test_integer_item_and_user_ids_are_accepted_as_in_the_python_api(server) -> None:
    base, run_dir = server
    rec = Recommender.load(run_dir, device="cpu")
    history = [it["item_id"] for it in rec.history("6", last=4)]
    want = rec.recommend_history([int(i) for i in history], k=3, user_id=6)
    status, got = _call(base, "/recommendations", {"items": [int(i) for i in history], "k": 3, "user_id": 6})
    assert status == 200, got
    assert [it["item_id"] for it in got["items"]] == [it["item_id"] for it in want.items]
    assert _call(base, "/recommendations", {"items": [True]})[0] == 422  # a boolean is no id


def test_server_logs_where_it_serves(server) -> None:
    _, run_dir = server
    log = (run_dir / "serve.log").read_text()
    assert "serving " in log and "docs at /docs" in log and "torch thread" in log, log[-2000:]


def _dump_dom(browser: str, url: str, profile: Path) -> subprocess.CompletedProcess:
    # Every host but the server's resolves to nothing: the page and the docs must not need
    # the internet.
    return subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--user-data-dir={profile}", "--virtual-time-budget=15000",
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--dump-dom", url],
        capture_output=True, text=True, timeout=120)


def test_page_honours_k_in_its_address(server, tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium on this machine (`make browser` installs Debian's package as root)")
    base, run_dir = server
    out = _dump_dom(browser, f"{base}/?user=4&k=3", tmp_path / "profile")
    dom = out.stdout
    assert 'data-user="4"' in dom, out.stderr[-2000:]
    want = Recommender.load(run_dir, device="cpu").recommend(["4"], k=3)[0]
    assert dom.count('class="item rec"') == 3
    assert [f'data-item-id="{it["item_id"]}"' in dom for it in want.items] == [True] * 3


def test_api_docs_render_without_the_internet(server, tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium on this machine (`make browser` installs Debian's package as root)")
    base, _ = server
    out = _dump_dom(browser, f"{base}/docs", tmp_path / "profile")
    # Swagger UI builds one block per operation once its script has run.
    assert "opblock" in out.stdout and "/users/{user_id}/recommendations" in out.stdout, \
        out.stdout[-2000:] + out.stderr[-2000:]
