"""The tokenize stage end to end on a small synthetic run directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from recdata.errors import DataError
from recdata.io import load_tensors, read_json, save_tensors, write_json
from tokenizer import SemanticIds, TokenizerConfig, load_inputs, load_tokenizer, reassign_ids
from tokenizer.mmq_config import MMQConfig
from tokenizer.rq_config import RQConfig
from tokenizer.stage import run

D_T, D_V, N = 16, 12, 90


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny matrices: thread hand-offs cost more than they save on a shared CI machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_run(run_dir: Path, *, image: bool = True, seed: int = 0, missing_image: float = 0.2) -> Path:
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, 10, N)
    text = rng.normal(size=(10, D_T))[lab] + 0.4 * rng.normal(size=(N, D_T))
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    (run_dir / "data").mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"item_idx": np.arange(N), "item_id": [f"i{i}" for i in range(N)],
                  "title": [f"item {i}" for i in range(N)]}).write_parquet(run_dir / "data" / "items.parquet")
    save_tensors(run_dir / "embeddings" / "text.safetensors",
                 {"embeddings": text.astype(np.float32), "mask": np.ones(N, dtype=np.uint8)})
    if image:
        img = rng.normal(size=(10, D_V))[lab] + 0.4 * rng.normal(size=(N, D_V))
        mask = (rng.random(N) >= missing_image).astype(np.uint8)
        img[mask == 0] = 0.0
        save_tensors(run_dir / "embeddings" / "image.safetensors",
                     {"embeddings": img.astype(np.float32), "mask": mask})
    return run_dir


def cfg(name: str = "mmq", **kw) -> TokenizerConfig:
    base = dict(name=name, codebook_size=16, epochs=4, warmup_epochs=1, batch_size=32, kmeans_iters=5,
                mmq=MMQConfig(latent_dim=8, expert_hidden=16, decoder_hidden=16, gate_hidden=8),
                rq=RQConfig(hidden=[16], latent_dim=6))
    base.update(kw)
    return TokenizerConfig(**base)


@pytest.mark.parametrize("name", ["mmq", "rqvae", "rqkmeans"])
def test_stage_writes_every_artefact(tmp_path, name):
    run_dir = write_run(tmp_path)
    summary = run(cfg=cfg(name), run_dir=run_dir, seed=0, device="cpu")
    out = run_dir / "tokenizer"
    for f in ("model.safetensors", "config.json", "semantic_ids.parquet", "metrics.json"):
        assert (out / f).exists(), f
    metrics = read_json(out / "metrics.json")
    for key in ("reconstruction", "entropy", "utilization", "collision_rate", "max_collision_group",
                "sid_length", "codebook_sizes", "per_position", "train_seconds"):
        assert key in metrics, key
    expected_len = 7 if name == "mmq" else 4
    assert metrics["sid_length"] == expected_len == len(metrics["codebook_sizes"])
    assert len(metrics["per_position"]) == expected_len
    assert metrics["codebook_sizes"][-1] == max(1, metrics["max_collision_group"])
    assert summary["utilization"] == metrics["utilization"]
    assert np.isfinite(metrics["reconstruction"])

    frame = pl.read_parquet(out / "semantic_ids.parquet")
    assert frame.columns == ["item_idx", "item_id"] + [f"t{i}" for i in range(expected_len)]
    sids = SemanticIds.from_run_dir(run_dir)
    assert sids.codes.shape == (N, expected_len)
    assert len({tuple(r) for r in sids.codes.tolist()}) == N
    assert sids.item_ids[5] == "i5"

    # The saved weights reproduce the raw codes of the table.
    model = load_tokenizer(run_dir)
    codes = model.encode_inputs(load_inputs(run_dir)).numpy()
    np.testing.assert_array_equal(codes, sids.codes[:, :-1])


def test_mmq_token_order_and_text_only_run(tmp_path):
    run_dir = write_run(tmp_path / "mm")
    run(cfg=cfg(), run_dir=run_dir)
    names = SemanticIds.from_run_dir(run_dir).position_names
    assert names == ["shared0", "shared1", "text0", "text1", "vision0", "vision1", "collision"]

    text_only = write_run(tmp_path / "t", image=False)
    summary = run(cfg=cfg(), run_dir=text_only)
    # Without images the vision experts read the text: the SID keeps its length.
    assert summary["sid_length"] == 7
    assert SemanticIds.from_run_dir(text_only).position_names[-3:] == ["text2", "text3", "collision"]


def test_a_tokenizer_reading_one_modality_sees_only_it(tmp_path):
    run_dir = write_run(tmp_path / "mm", missing_image=0.0)
    text, image = (load_tensors(run_dir / "embeddings" / f"{m}.safetensors")["embeddings"]
                   for m in ("text", "image"))
    run(cfg=cfg(modalities=["image"]), run_dir=run_dir)
    # the image takes the text's place and every expert reads it; the ID keeps its length
    inputs = load_inputs(run_dir)  # the fitted tokenizer's modalities
    assert torch.equal(inputs.text, image) and inputs.image is None
    assert SemanticIds.from_run_dir(run_dir).length == 7
    image_ids = SemanticIds.from_run_dir(run_dir).codes
    run(cfg=cfg(modalities=["text"]), run_dir=run_dir)
    assert torch.equal(load_inputs(run_dir).text, text) and load_inputs(run_dir).image is None
    assert not np.array_equal(SemanticIds.from_run_dir(run_dir).codes, image_ids)
    assert load_inputs(run_dir, ["text", "image"]).image is not None
    with pytest.raises(DataError, match="no image embeddings"):
        run(cfg=cfg(modalities=["image"]), run_dir=write_run(tmp_path / "t", image=False))
    with pytest.raises(DataError, match="tokenizer.modalities"):
        cfg(modalities=["audio"]).validate()


def test_same_seed_same_table(tmp_path):
    a = write_run(tmp_path / "a")
    b = write_run(tmp_path / "b")
    run(cfg=cfg(), run_dir=a, seed=3)
    run(cfg=cfg(), run_dir=b, seed=3)
    np.testing.assert_array_equal(SemanticIds.from_run_dir(a).codes, SemanticIds.from_run_dir(b).codes)


def test_a_tokenizer_saved_by_an_earlier_version_still_loads(tmp_path):
    """``tokenizer/config.json`` with the flat keys it had before the per-tokenizer sections."""
    run_dir = write_run(tmp_path)
    run(cfg=cfg(mmq=MMQConfig(latent_dim=8, expert_hidden=16, decoder_hidden=16, gate_hidden=8,
                              n_text=3)), run_dir=run_dir)
    path = run_dir / "tokenizer" / "config.json"
    info = read_json(path)
    flat = dict(info["config"])
    flat.update(flat.pop("mmq"))
    flat.update({("rqkmeans_" if k == "balanced" else "rqvae_") + k: v for k, v in flat.pop("rq").items()})
    write_json(path, {**info, "config": flat})
    model = load_tokenizer(run_dir)
    assert model.cfg.mmq.n_text == 3 and model.n_text == 3
    codes = model.encode_inputs(load_inputs(run_dir)).numpy()
    np.testing.assert_array_equal(codes, SemanticIds.from_run_dir(run_dir).codes[:, :-1])


def test_reassign_ids_rewrites_the_table_after_fine_tuning(tmp_path):
    run_dir = write_run(tmp_path)
    run(cfg=cfg(), run_dir=run_dir)
    before = SemanticIds.from_run_dir(run_dir)
    model = load_tokenizer(run_dir).train()
    inputs = load_inputs(run_dir)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.05)
    target = torch.randn(16, 4)
    for _ in range(5):  # a stand-in downstream loss through the soft codes
        batch = inputs.rows(torch.arange(N))
        ind = model.soft_codes(*batch, tau=0.5)
        losses = model.reconstruction_losses(*batch)
        loss = (ind[0] @ target).pow(2).mean() + 0.5 * losses["recon"] + 0.5 * losses["aux"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = run_dir / "stage2"
    metrics = reassign_ids(model=model.eval(), run_dir=run_dir, out_dir=out,
                           collision_strategy="reassign")
    after = SemanticIds.from_file(out / "semantic_ids.parquet")
    assert len({tuple(r) for r in after.codes.tolist()}) == N
    assert not np.array_equal(before.codes, after.codes)
    assert metrics["sid_length"] == after.length
    assert read_json(out / "config.json")["config"]["collision_strategy"] == "reassign"
    # The tokenize stage's own table is not rewritten.
    np.testing.assert_array_equal(SemanticIds.from_run_dir(run_dir).codes, before.codes)


def test_warm_fit_gives_cold_items_ids_from_a_tokenizer_that_never_saw_them(tmp_path):
    """fit_items=warm: items without training interactions neither shape the codebooks nor the
    other items' IDs (as items added after training), yet get unique valid IDs."""
    warm = np.arange(N) < 70

    def tokenized(folder: Path, scramble: bool) -> SemanticIds:
        run_dir = write_run(folder)
        pl.DataFrame({"item_idx": np.arange(N), "train_count": np.where(warm, 3, 0),
                      "stratum": np.where(warm, "middle", "cold")}).write_parquet(
            run_dir / "data" / "strata.parquet")
        if scramble:  # entirely different content for the cold items
            emb = {k: v.numpy() for k, v in load_tensors(run_dir / "embeddings" / "text.safetensors").items()}
            text = emb["embeddings"].copy()
            text[~warm] = np.random.default_rng(9).normal(size=(int((~warm).sum()), D_T))
            save_tensors(run_dir / "embeddings" / "text.safetensors",
                         {"embeddings": text.astype(np.float32), "mask": emb["mask"]})
        run(cfg=cfg(fit_items="warm"), run_dir=run_dir, seed=0, device="cpu")
        return SemanticIds.from_run_dir(run_dir)

    a, b = tokenized(tmp_path / "a", False), tokenized(tmp_path / "b", True)
    raw = slice(0, -1)  # the collision token may renumber a group that a cold item joins
    np.testing.assert_array_equal(a.codes[warm, raw], b.codes[warm, raw])
    assert not np.array_equal(a.codes[~warm, raw], b.codes[~warm, raw])
    assert a.n_items == b.n_items == N and len({tuple(r) for r in b.codes.tolist()}) == N
    with pytest.raises(DataError, match="fit_items"):
        cfg(fit_items="cold").validate()


def test_bad_inputs_are_one_line_data_errors(tmp_path):
    run_dir = write_run(tmp_path)
    emb = np.random.default_rng(0).normal(size=(N, D_T)).astype(np.float32)
    emb[7, 3] = np.nan
    save_tensors(run_dir / "embeddings" / "text.safetensors", {"embeddings": emb, "mask": np.ones(N, np.uint8)})
    with pytest.raises(DataError, match="row 7"):
        run(cfg=cfg(), run_dir=run_dir)
    save_tensors(run_dir / "embeddings" / "text.safetensors",
                 {"embeddings": emb[:10], "mask": np.ones(10, np.uint8)})
    with pytest.raises(DataError, match="10 embedding rows"):
        run(cfg=cfg(), run_dir=run_dir)
    (run_dir / "embeddings" / "text.safetensors").unlink()
    with pytest.raises(DataError, match="missing artefact"):
        run(cfg=cfg(), run_dir=run_dir)
    with pytest.raises(DataError, match="tokenizer.name"):
        run(cfg=cfg("vqgan"), run_dir=run_dir)
    with pytest.raises(DataError, match="unknown tokenizer config keys"):
        TokenizerConfig.from_dict({"name": "mmq", "codebooksize": 3})
