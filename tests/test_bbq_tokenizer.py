"""BBQ tokenizer: CLUB bound, history pairs, artefacts, uniqueness and no use of held-out items."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from recdata.io import load_tensors, read_json, save_tensors
from tokenizer.bbq.model import BBQTokenizer
from tokenizer.bbq.club import CLUB, club_reference
from tokenizer.bbq.config import BBQConfig
from tokenizer.bbq.train import PairSampler, behaviour_agreement, pair_reference
from tokenizer.config import TokenizerConfig
from tokenizer.inputs import load_inputs
from tokenizer.sid import SemanticIds

TINY = dict(levels=2, latent_dim=8, hidden=16, decoder_hidden=16, club_hidden=8, seq_window=5,
            steps=40, warmup_steps=10, pair_batch=32, item_batch=16, reset_every=10)


# ---------------------------------------------------------------------------- CLUB
def _fit_club(x: torch.Tensor, y: torch.Tensor, steps: int = 200) -> CLUB:
    torch.set_num_threads(1)  # tiny matrices: extra threads only contend
    torch.manual_seed(0)
    club = CLUB(x.shape[1], y.shape[1], hidden=32)
    opt = torch.optim.Adam(club.parameters(), lr=5e-3)
    for _ in range(steps):
        opt.zero_grad()
        (-club.log_likelihood(x, y)).backward()
        opt.step()
    return club


def test_club_fast_estimate_matches_pairwise_reference():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(7, 3, generator=g), torch.randn(7, 4, generator=g)
    club = CLUB(3, 4, hidden=5)
    assert float(club(x, y).detach()) == pytest.approx(club_reference(club, x, y), rel=1e-5, abs=1e-6)


def test_club_bound_positive_on_dependent_and_near_zero_on_independent_inputs():
    g = torch.Generator().manual_seed(0)
    n, d = 512, 4
    mix = torch.randn(d, d, generator=g)

    def dependent(x: torch.Tensor) -> torch.Tensor:
        return x @ mix + 0.3 * torch.randn(x.shape, generator=g)

    x = torch.randn(n, d, generator=g)
    club_dep = _fit_club(x, dependent(x))
    club_ind = _fit_club(x, torch.randn(n, d, generator=g))
    # Fresh samples from the same distributions: the bound generalises, it is not memorised.
    with torch.no_grad():
        est_dep, est_ind = [], []
        for _ in range(4):
            x2 = torch.randn(n, d, generator=g)
            est_dep.append(float(club_dep(x2, dependent(x2))))
            est_ind.append(float(club_ind(x2, torch.randn(n, d, generator=g))))
    assert min(est_dep) > 1.0
    assert abs(float(np.mean(est_ind))) < 0.1


def test_club_estimator_does_not_move_under_the_encoder_loss():
    """The bound steps only the encoders; the estimator's weights get no gradient from it."""
    torch.manual_seed(0)
    model = BBQTokenizer(TokenizerConfig(codebook_size=4), d_text=6, d_image=3, bbq=BBQConfig(**TINY))
    model.bind_items(10)
    text, image = torch.randn(10, 6), torch.randn(10, 3)
    out = model.item_forward((text, image, torch.ones(10, dtype=torch.bool), torch.ones(10, dtype=torch.bool)),
                             torch.arange(10))
    out["mi"].backward(inputs=model.main_parameters())
    assert all(p.grad is None for p in model.estimator_parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.behaviour_encoders.parameters())


# ---------------------------------------------------------------------------- history pairs
def test_pair_sampler_matches_reference():
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, 20, size=n) for n in (1, 2, 5, 9)]
    sampler = PairSampler(seqs, window=4, n_items=20)
    hist, tgt = sampler.pairs(np.arange(len(sampler)))
    ref = pair_reference(seqs, 4)
    assert len(sampler) == len(ref) == 0 + 1 + 4 + 8
    assert hist.tolist() == [h for h, _ in ref]
    assert tgt.tolist() == [t for _, t in ref]


def test_behaviour_agreement_lift():
    codes = np.array([[0], [0], [1], [1]])
    together = behaviour_agreement(codes, [np.array([0, 1, 2, 3])])
    assert together["same_code_next"] == pytest.approx(2 / 3)
    assert together["lift"] > 1.0
    apart = behaviour_agreement(codes, [np.array([0, 2, 1, 3])])
    assert apart["same_code_next"] == 0.0


# ---------------------------------------------------------------------------- stage
def _write_embeddings(run_dir: Path) -> None:
    items = pl.read_parquet(run_dir / "data" / "items.parquet").sort("item_idx")
    genres = items["genres"].to_list()
    names = sorted(set(genres))
    cluster = np.array([names.index(g) for g in genres])
    rng = np.random.default_rng(0)
    n = len(cluster)
    text = 3 * np.eye(12)[cluster] + rng.normal(size=(n, 12))
    image = rng.normal(size=(len(names), 5))[cluster] + 0.3 * rng.normal(size=(n, 5))
    image_mask = np.ones(n, dtype=np.uint8)
    image_mask[:4] = 0  # a few items without an image must still get IDs
    save_tensors(run_dir / "embeddings" / "text.safetensors",
                 {"embeddings": text.astype(np.float32), "mask": np.ones(n, dtype=np.uint8)})
    save_tensors(run_dir / "embeddings" / "image.safetensors",
                 {"embeddings": image.astype(np.float32), "mask": image_mask})


def _run(run_dir: Path) -> dict:
    from tokenizer.bbq import stage as bbq_stage

    torch.set_num_threads(1)
    return bbq_stage.run(cfg=TokenizerConfig(name="bbq", codebook_size=6), run_dir=run_dir, seed=0,
                         device="cpu", bbq=BBQConfig(**TINY))


@pytest.fixture(scope="module")
def bbq_run(tmp_path_factory) -> Path:
    from recdata.synthetic import write_synthetic_run_data

    run_dir = tmp_path_factory.mktemp("bbq") / "run"
    write_synthetic_run_data(run_dir, n_users=40, n_items=48, seed=0, with_images=False)
    _write_embeddings(run_dir)
    _run(run_dir)
    return run_dir


def test_stage_writes_unique_ids_and_the_shared_metrics(bbq_run: Path):
    sids = SemanticIds.from_run_dir(bbq_run)  # validates uniqueness and code ranges
    assert sids.n_items == 48
    assert len({tuple(r) for r in sids.codes.tolist()}) == 48
    assert sids.position_names == ["level0", "level1", "collision"]
    metrics = read_json(bbq_run / "tokenizer" / "metrics.json")
    for key in ("reconstruction", "entropy", "utilization", "collision_rate", "max_collision_group",
                "sid_length", "per_position"):
        assert key in metrics
    assert metrics["sid_length"] == 3
    assert 0 < metrics["utilization"] <= 1
    assert np.isfinite(metrics["reconstruction"])
    assert metrics["behaviour"]["level0"]["same_code_chance"] > 0
    assert read_json(bbq_run / "tokenizer" / "config.json")["config"]["bbq"]["levels"] == 2


def test_saved_weights_reproduce_the_codes(bbq_run: Path):
    state = load_tensors(bbq_run / "tokenizer" / "model.safetensors")
    model = BBQTokenizer(TokenizerConfig(codebook_size=6), d_text=12, d_image=5, bbq=BBQConfig(**TINY))
    model.load_state_dict(state)
    assert model.item_vectors.shape == (48, TINY["latent_dim"])
    inputs = load_inputs(bbq_run)
    raw = model.encode_inputs(inputs).numpy()
    assert np.array_equal(raw, SemanticIds.from_run_dir(bbq_run).codes[:, :-1])
    # Stage-2 hook: soft codes are exactly the hard codes in the forward pass.
    soft = model.soft_codes(*inputs.rows(torch.arange(10)), tau=0.5)
    assert all(torch.equal(s.argmax(-1), torch.from_numpy(raw[:10, p])) for p, s in enumerate(soft))
    assert all(bool((s.sum(-1) == 1).all()) for s in soft)


def test_validation_and_test_items_never_influence_the_ids(bbq_run: Path, tmp_path: Path):
    """Same seed, same training sequences, different held-out items -> identical IDs."""
    import shutil

    other = tmp_path / "run"
    shutil.copytree(bbq_run / "data", other / "data")
    shutil.copytree(bbq_run / "embeddings", other / "embeddings")
    path = other / "data" / "sequences.parquet"
    seqs = pl.read_parquet(path)
    rng = np.random.default_rng(5)
    changed = [s[:-2] + rng.integers(0, 48, size=2).tolist() for s in seqs["items"].to_list()]
    seqs.with_columns(pl.Series("items", changed)).write_parquet(path)
    _run(other)
    assert np.array_equal(SemanticIds.from_run_dir(other).codes, SemanticIds.from_run_dir(bbq_run).codes)


def test_text_only_run_and_items_without_any_modality_still_get_codes():
    torch.manual_seed(0)
    model = BBQTokenizer(TokenizerConfig(codebook_size=4), d_text=6, d_image=0, bbq=BBQConfig(**TINY))
    model.bind_items(5)
    assert model.modalities == ["text"]
    text = torch.randn(5, 6)
    text_mask = torch.tensor([True, True, False, True, True])
    h, _, _, _ = model._encode((text, None, text_mask, None))
    assert torch.equal(h[2], model.empty_latent.detach())
    out = model.item_forward((text, None, text_mask, None), torch.arange(5))
    assert all(torch.isfinite(v).all() for v in out.values())
    assert model.encode(text, None, text_mask, None).shape == (5, TINY["levels"])
