"""Soft indexing through the CTR loss (optional stage-2 variant)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from recdata.errors import DataError
from recdata.io import read_json
from test_ranker_stage import build_run, tiny_config


def _tokenizer_config():
    from tokenizer.config import TokenizerConfig
    from tokenizer.mmq_config import MMQConfig

    return TokenizerConfig(
        name="mmq", codebook_size=8, epochs=4, warmup_epochs=1, kmeans_iters=3, batch_size=64,
        mmq=MMQConfig(latent_dim=8, expert_hidden=16, decoder_hidden=16, gate_hidden=8),
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic run with cluster-shaped text/image embeddings and a small trained MMQ tokenizer."""
    from recdata.io import save_tensors
    from tokenizer.stage import run as tokenize

    run = build_run(tmp_path_factory.mktemp("soft"), seed=2)
    rng = np.random.default_rng(0)
    n = 48
    cluster = np.arange(n) % 6
    centres_t, centres_v = rng.normal(size=(6, 16)), rng.normal(size=(6, 8))
    text = centres_t[cluster] + 0.3 * rng.normal(size=(n, 16))
    image = centres_v[cluster] + 0.3 * rng.normal(size=(n, 8))
    save_tensors(run / "embeddings" / "text.safetensors", {"embeddings": text.astype(np.float32), "mask": np.ones(n, np.uint8)})
    save_tensors(run / "embeddings" / "image.safetensors", {"embeddings": image.astype(np.float32), "mask": np.ones(n, np.uint8)})
    tokenize(cfg=_tokenizer_config(), run_dir=run, seed=0, device="cpu")
    return run


def _trained_sid_ranker(run_dir: Path):
    from ranking.features import build_ctr_data
    from ranking.stage import load_sid_codes
    from ranking.train import train_model

    data = build_ctr_data(run_dir=run_dir)
    codes, sizes = load_sid_codes(run_dir)
    result = train_model(cfg=tiny_config(epochs=1), item_repr="sid", data=data, sid_codes=codes,
                         codebook_sizes=sizes, device="cpu", seed=0)
    return result, data


def test_soft_forward_is_the_hard_forward_and_its_gradient_reaches_the_tokenizer(run_dir: Path) -> None:
    from ranking.soft_index import soft_item_table
    from ranking.train import make_batch
    from tokenizer.registry import load_tokenizer
    from tokenizer.inputs import load_inputs

    result, data = _trained_sid_ranker(run_dir)
    model = result.model
    tokenizer = load_tokenizer(run_dir)
    inputs = load_inputs(run_dir)
    rows = inputs.rows(torch.arange(inputs.n_items))
    table = soft_item_table(model.item_repr, tokenizer.soft_codes(*rows, tau=1.0))
    # straight-through: the forward value equals the hard lookup of the tokenizer's own IDs
    torch.testing.assert_close(table, model.item_repr.all_items(), rtol=1e-5, atol=1e-6)

    batch = make_batch(data, data.examples.rows("train")[:32], 8, "cpu")
    logits = model(**batch, item_table=table)
    torch.testing.assert_close(logits, model(**batch), rtol=1e-5, atol=1e-6)
    logits.sum().backward()
    grads = [p.grad for p in tokenizer.parameters() if p.requires_grad]
    assert any(g is not None and float(g.abs().sum()) > 0 for g in grads)


def test_stage_adds_a_soft_variant_with_its_own_ids_and_leaves_the_tokenizer_alone(run_dir: Path) -> None:
    import polars as pl

    from ranking.checkpoint import load_model
    from ranking.stage import run

    sid_file = run_dir / "tokenizer" / "semantic_ids.parquet"
    before = sid_file.read_bytes()
    run(cfg=tiny_config(epochs=1, soft_indexing=True, soft_epochs=1), run_dir=run_dir, seed=0, device="cpu")
    assert sid_file.read_bytes() == before
    metrics = read_json(run_dir / "ranker" / "metrics.json")
    assert {"ranker_itemid", "ranker_sid", "ranker_sid_soft"} <= set(metrics)
    assert set(metrics["ranker_sid_soft"]["strata"]) == {"popular", "middle", "long_tail", "cold"}
    assert "ranker_sid_soft" in metrics["two_stage"]
    info = metrics["training"]["ranker_sid_soft"]
    assert 0.0 <= info["items_with_changed_codes"] <= 1.0

    new = pl.read_parquet(run_dir / "ranker" / "semantic_ids_sid_soft.parquet").sort("item_idx")
    codes = np.stack([new[f"t{p}"].to_numpy() for p in range(new.width - 2)], axis=1)
    assert len(np.unique(codes, axis=0)) == len(codes)  # still one unique SID per item
    model, spec, _, _ = load_model(run_dir=run_dir, variant="sid_soft")
    offsets = np.concatenate([[0], np.cumsum(spec["field_sizes"])[:-1]])
    np.testing.assert_array_equal(model.item_repr.field_ids.numpy() - offsets[None, :], codes)


def test_soft_indexing_config_is_checked() -> None:
    with pytest.raises(DataError, match="soft_from"):
        tiny_config(soft_indexing=True, soft_from="itemid")
    with pytest.raises(DataError, match="soft_from"):
        tiny_config(soft_indexing=True, soft_from="both")  # not among the trained variants
