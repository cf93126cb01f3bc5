"""New items without retraining: ``mmqrec add-items`` gives them IDs from their content and the
retriever, the SID ranker and a running Recommender serve them at once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from mmqrec import Recommender
from mmqrec.catalogue import assign_ids, current_version
from recdata.errors import DataError
from tests.conftest import REPO_ROOT
from tests.test_resume import CONFIG

import numpy as np


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("add")
    config = root / "tiny.yaml"
    config.write_text(CONFIG.split("variants:")[0])
    run_dir = root / "run"
    out = subprocess.run([sys.executable, "-m", "pipeline", "run", str(config), "--out", str(run_dir)],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
                         env={"MMQREC_NO_PROGRESS": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-3000:]
    return run_dir


def _items_file(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "new_items.csv"
    pl.DataFrame(rows).write_csv(path)
    return path


def test_added_items_get_content_ids_and_are_served_without_a_restart(trained: Path, tmp_path: Path) -> None:
    from mmqrec.catalogue import add_items
    from tokenizer.sid import SemanticIds

    rec = Recommender.load(trained, device="cpu")  # loaded before: stands for a running server
    base = pl.read_parquet(trained / "data" / "items.parquet").sort("item_idx")
    first = base.row(0, named=True)
    twin = {"item_id": "twin-of-0", "title": first["title"], "genres": first["genres"], "plot": first["plot"]}
    novel = {"item_id": "brand-new", "title": "The galaxy robot 999", "genres": "space",
             "plot": "A story about laser and alien."}
    summary = add_items(run_dir=trained, items_file=_items_file(tmp_path / "a", [twin, novel]))
    assert summary["added"] == 2 and summary["version"] == 1 and current_version(trained) == 1
    sids = SemanticIds.from_run_dir(trained)

    assert rec.refresh() and not rec.refresh()
    assert rec.n_items == sids.n_items + 2
    twin_sid = rec.item("twin-of-0")["semantic_id"]
    # The same content gives the same codes; the collision token tells the two apart.
    assert twin_sid[:-1] == sids.codes[0, :-1].tolist()
    same = [row for row in sids.codes.tolist() if row[:-1] == twin_sid[:-1]]
    assert twin_sid[-1] == len(same) and twin_sid not in sids.codes.tolist()
    assert len({tuple(rec.codes[i]) for i in range(rec.n_items)}) == rec.n_items

    # With every item a candidate, the constrained search reaches the new IDs like any other.
    wide = Recommender.load(trained, device="cpu", candidates_n=rec.n_items)
    history = [it["item_id"] for it in rec.history(rec.user_ids[0], last=3)]
    full = wide.recommend_history(history, k=rec.n_items - len(set(history)))
    assert "popular items appended" not in full.message
    assert {"twin-of-0", "brand-new"} <= {it["item_id"] for it in full.items}
    ranked = wide.recommend_history(history, k=rec.n_items - len(set(history)), user_id=rec.user_ids[0])
    scored = {it["item_id"]: it["p_like"] for it in ranked.items}
    assert scored["brand-new"] is not None  # the SID ranker reads the new item's codes

    fresh = Recommender.load(trained, device="cpu")
    assert fresh.item("brand-new") == rec.item("brand-new")


def test_bad_new_items_are_one_line_errors_and_leave_the_catalogue_as_it_was(trained: Path, tmp_path: Path) -> None:
    from mmqrec.catalogue import add_items

    version = current_version(trained)
    existing = pl.read_parquet(trained / "data" / "items.parquet")["item_id"][3]
    with pytest.raises(DataError, match="line 3: item_id .* is already in the catalogue"):
        add_items(run_dir=trained, items_file=_items_file(
            tmp_path / "b", [{"item_id": "ok-1", "title": "x"}, {"item_id": existing, "title": "y"}]))
    with pytest.raises(DataError, match="duplicate item_id"):
        add_items(run_dir=trained, items_file=_items_file(
            tmp_path / "c", [{"item_id": "dup", "title": "x"}, {"item_id": "dup", "title": "y"}]))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "new_items.csv").write_text("item_id,title,image\nz,Z,../../etc/passwd\n")
    with pytest.raises(DataError, match="leaves the dataset folder"):
        add_items(run_dir=trained, items_file=tmp_path / "d" / "new_items.csv")
    assert current_version(trained) == version
    out = subprocess.run([sys.executable, "-m", "pipeline", "add-items", str(trained), str(tmp_path / "nope.csv")],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "nope.csv" in out.stderr


def test_assign_ids_numbers_collisions_and_moves_when_the_position_is_full() -> None:
    existing = np.array([[1, 2, 0], [1, 2, 1], [3, 4, 0]])
    raw = np.array([[3, 4], [1, 2], [5, 6]])
    alternatives = np.array([[4, 0, 1], [2, 7, 3], [6, 1, 2]])
    ids, moved = assign_ids(raw=raw, alternatives=alternatives, existing=existing, collision_size=2)
    assert ids.tolist() == [[3, 4, 1], [1, 7, 0], [5, 6, 0]]  # (1, 2) holds 2 already: next code
    assert moved == 1
    with pytest.raises(DataError, match="no free semantic ID"):
        assign_ids(raw=np.array([[1, 2]]), alternatives=np.array([[2]]), existing=existing,
                   collision_size=2)


def test_messages_name_the_command_option_and_never_print_binary_bytes(trained: Path, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    outside = tmp_path / "out" / "new_items.csv"
    outside.write_text("item_id,title,image\nz,Z,../poster.png\n")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"it\x00em\x00_id,\x00\x01title\nx\x00,y\n")
    for path, expected in ((outside, "pass --images-outside-folder to allow it"),
                           (binary, "missing required column 'item_id'")):
        out = subprocess.run([sys.executable, "-m", "pipeline", "add-items", str(trained), str(path)],
                             cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert expected in out.stderr, out.stderr
        assert "\x00" not in out.stderr and "\x01" not in out.stderr


def test_an_added_item_is_recommended_to_a_history_of_its_content_neighbours(trained: Path, tmp_path: Path) -> None:
    """The retriever never trained on an added item; the untrained items' channel offers it to
    histories that resemble it, with the score of its nearest listed trained item."""
    import shutil

    from mmqrec.catalogue import add_items

    run = tmp_path / "run"
    shutil.copytree(trained, run, ignore=shutil.ignore_patterns("additions"))
    base = pl.read_parquet(run / "data" / "items.parquet").sort("item_idx")
    sequels = []
    for i in (3, 10, 17):
        row = base.row(i, named=True)
        sequels.append({"item_id": f"sequel-{i}", "title": row["title"] + " returns",
                        "genres": row["genres"], "plot": row["plot"]})
    add_items(run_dir=run, items_file=_items_file(tmp_path / "a", sequels))
    rec = Recommender.load(run, device="cpu")
    vectors = rec._retriever.priors.content.vectors
    assert len(vectors) == rec.n_items  # the priors read the added items' content
    found = 0
    for sequel in sequels:
        new = rec.item_idx(sequel["item_id"])
        nearest = np.argsort(-(vectors[: base.height] @ vectors[new]), kind="stable")[:5]
        history = [rec.item_ids[j] for j in nearest[::-1]]  # the most similar last
        listed = [it["item_id"] for it in rec.recommend_history(history, k=10).items]
        found += sequel["item_id"] in listed
    assert found >= 2
