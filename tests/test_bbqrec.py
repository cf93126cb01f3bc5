"""BBQRec: the reweighting is exactly neutral at zero, similarity and windows match their oracles,
and the stage trains, ranks and writes its artefacts."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import torch.nn.functional as F

from generative_rec.bbqrec.config import BBQRecConfig
from generative_rec.bbqrec.data import left_pad, training_windows
from generative_rec.bbqrec.model import BBQRec, SelfAttention, pairwise_similarity, similarity_reference
from recdata.errors import DataError
from recdata.io import read_json
from tokenizer.sid import SemanticIds, resolve_collisions

SMALL = dict(hidden=16, inner=32, layers=2, heads=2, max_len=8, epochs=6, patience=3, batch_size=16)


def _codes(n: int, length: int = 3, k: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, k, size=(n, length)))


# ---------------------------------------------------------------------------- similarity
@pytest.mark.parametrize("mode", ["shared", "prefix"])
def test_pairwise_similarity_matches_reference(mode):
    codes = _codes(6, length=4, k=2).view(2, 3, 4)
    sim = pairwise_similarity(codes, mode=mode)
    for b, i, j in itertools.product(range(2), range(3), range(3)):
        assert int(sim[b, i, j]) == similarity_reference(codes[b, i].tolist(), codes[b, j].tolist(), mode=mode)
    assert similarity_reference([1, 2, 3], [1, 0, 3], mode="shared") == 2
    assert similarity_reference([1, 2, 3], [1, 0, 3], mode="prefix") == 1


# ---------------------------------------------------------------------------- attention
def test_self_attention_matches_reference_with_and_without_bias():
    torch.manual_seed(0)
    attn = SelfAttention(8, 2, dropout=0.0).eval()
    x = torch.randn(3, 5, 8)
    mask = torch.ones(5, 5, dtype=torch.bool).tril()[None, None].expand(3, 1, 5, 5)
    bias = torch.randn(3, 2, 5, 5)

    def reference(b: torch.Tensor | None) -> torch.Tensor:
        q, k, v = (m(x).view(3, 5, 2, 4).transpose(1, 2) for m in (attn.q, attn.k, attn.v))
        logits = q @ k.transpose(-1, -2) / math.sqrt(4) + (0 if b is None else b)
        p = torch.softmax(logits.masked_fill(~mask, float("-inf")), -1)
        return attn.out((p @ v).transpose(1, 2).reshape(3, 5, 8))

    with torch.no_grad():
        assert torch.allclose(attn(x, mask), reference(None), atol=1e-6)
        assert torch.allclose(attn(x, mask, bias), reference(bias), atol=1e-6)
        q, k, v = (m(x).view(3, 5, 2, 4).transpose(1, 2) for m in (attn.q, attn.k, attn.v))
        sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        assert torch.allclose(attn(x, mask), attn.out(sdpa.transpose(1, 2).reshape(3, 5, 8)), atol=1e-6)


def _pair(table_init: float = 0.0) -> tuple[BBQRec, BBQRec]:
    torch.manual_seed(0)
    codes = _codes(20)
    with_rw = BBQRec(BBQRecConfig(**SMALL, table_init=table_init), n_items=20, codes=codes).eval()
    plain = BBQRec(BBQRecConfig(**SMALL, reweight=False), n_items=20, codes=None).eval()
    state = {k: v for k, v in with_rw.state_dict().items() if not k.startswith(("bias.", "codes"))}
    plain.load_state_dict(state)
    return with_rw, plain


def test_zero_similarity_table_leaves_the_model_unchanged():
    with_rw, plain = _pair()
    tokens = torch.from_numpy(left_pad([np.array([1, 4, 4, 7, 2]), np.array([3, 3]), np.arange(12) % 20], 8))
    with torch.no_grad():
        assert torch.equal(with_rw(tokens), plain(tokens))


def test_nonzero_table_reweights_towards_similar_items():
    with_rw, plain = _pair()
    tokens = torch.from_numpy(left_pad([np.array([1, 4, 4, 7, 2])], 8))
    with torch.no_grad():
        with_rw.bias.table[:, :, -1] = 5.0  # strongly favour keys with an identical SID
        assert not torch.allclose(with_rw(tokens), plain(tokens))
        # The bias lands exactly on the pairs with full similarity.
        sim = with_rw.similarity(tokens)
        bias = with_rw.bias(sim, 0)
        assert torch.equal(bias == 5.0, (sim == 3)[:, None].expand_as(bias))
        # Only pairs of distinct positions are reweighted: a sequence of distinct items whose
        # SIDs all differ (sim < 3 off the diagonal) is unaffected by that entry.
        codes = _codes(20).tolist()
        picked: list[int] = []
        for item, row in enumerate(codes):
            if all(row != codes[other] for other in picked):
                picked.append(item)
        distinct = torch.from_numpy(left_pad([np.array(picked[:3])], 8))
        assert int((with_rw.similarity(distinct)[0, -3:, -3:] == 3).sum()) == 3  # diagonal only
        assert torch.equal(with_rw(distinct), plain(distinct))


def test_fresh_models_with_and_without_reweighting_start_from_identical_weights():
    """The ablation differs only by the table: the same seed gives the same backbone."""
    torch.manual_seed(3)
    a = BBQRec(BBQRecConfig(**SMALL), n_items=20, codes=_codes(20))
    torch.manual_seed(3)
    b = BBQRec(BBQRecConfig(**SMALL, reweight=False), n_items=20, codes=None)
    sb = b.state_dict()
    assert all(torch.equal(v, sb[k]) for k, v in a.state_dict().items() if k in sb)


# ---------------------------------------------------------------------------- data
def test_training_windows_cover_every_transition_once():
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, 30, size=n) for n in (1, 2, 7, 8, 9, 20)]
    inputs, targets = training_windows(seqs, 8)
    got = sorted((int(inputs[r, c]) - 1, int(targets[r, c])) for r, c in zip(*np.nonzero(targets >= 0)))
    want = sorted((int(s[k - 1]), int(s[k])) for s in seqs for k in range(1, len(s)))
    assert got == want
    assert ((inputs == 0) == (targets < 0)).all()  # padding aligned, nothing else hidden


# ---------------------------------------------------------------------------- stage
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from recdata.synthetic import write_synthetic_run_data

    run = tmp_path_factory.mktemp("bbqrec") / "run"
    write_synthetic_run_data(run, n_users=50, n_items=60, seed=0, with_images=False)
    items = pl.read_parquet(run / "data" / "items.parquet").sort("item_idx")
    genres = items["genres"].to_list()
    cluster = np.array([sorted(set(genres)).index(g) for g in genres])
    raw = np.stack([cluster, np.arange(60) % 2], 1)
    codes, stats = resolve_collisions(raw)
    SemanticIds(codes=codes, codebook_sizes=[6, 2, stats["collision_codebook_size"]],
                item_ids=items["item_id"].to_list()).save(run)
    return run


def _stage(run: Path, **kw) -> dict:
    from generative_rec.bbqrec import stage

    torch.set_num_threads(1)
    return stage.run(cfg=BBQRecConfig(**{**SMALL, **kw}), run_dir=run, seed=0, device="cpu")


def test_stage_trains_ranks_and_writes_artefacts(run_dir: Path):
    summary = _stage(run_dir)
    metrics = read_json(run_dir / "bbqrec" / "metrics.json")
    assert metrics["model"] == "bbqrec" and summary["ndcg@10"] == metrics["overall"]["ndcg@10"]
    assert set(metrics["strata"]) == {"popular", "middle", "long_tail", "cold"}
    assert metrics["overall"]["users"] == 50 and metrics["overall"]["invalid@10"] == 0.0
    # Users prefer clusters: far better than the 10/60 hit rate of a random ranking.
    assert metrics["overall"]["recall@10"] > 0.3
    assert np.array(metrics["similarity_bias"]["table[layer][head][similarity]"]).shape == (2, 2, 3)
    ranked = pl.read_parquet(run_dir / "bbqrec" / "ranked.parquet")
    assert ranked["user_idx"].to_list() == list(range(50))
    assert all(len(r) == 20 and len(set(r)) == 20 for r in ranked["items"].to_list())
    assert (run_dir / "bbqrec" / "model.safetensors").exists()
    # Deterministic on CPU: a second run gives the same lists.
    _stage(run_dir, name="bbqrec_again")
    again = pl.read_parquet(run_dir / "bbqrec_again" / "ranked.parquet")
    assert again["items"].to_list() == ranked["items"].to_list()


def test_ablation_runs_without_semantic_ids_and_reweighting_needs_them(run_dir: Path, tmp_path: Path):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(run_dir / "data", bare / "data")
    _stage(bare, reweight=False, name="bbqrec_noreweight", epochs=1)
    assert read_json(bare / "bbqrec_noreweight" / "metrics.json")["similarity_bias"]["mode"] is None
    with pytest.raises(DataError):
        _stage(bare, epochs=1)
