"""MMQ and baseline tokenizers: soft indexing, losses, missing modalities, ablation switches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from recdata.errors import DataError
from recdata.overrides import deep_merge
from tokenizer import TokenizerConfig, build_tokenizer, make_inputs
from tokenizer.mmq import latent_correlation_loss, orthogonality_loss
from tokenizer.quantizer import Codebook, kmeans, similarity
from tokenizer.train import fit_tokenizer

D_T, D_V = 12, 10


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny matrices: thread hand-offs cost more than they save on a shared CI machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def clustered(n: int = 80, *, seed: int = 0, image: bool = True, missing: float = 0.0):
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, 8, n)
    text = rng.normal(size=(8, D_T))[lab] + 0.3 * rng.normal(size=(n, D_T))
    img = rng.normal(size=(8, D_V))[lab] + 0.3 * rng.normal(size=(n, D_V)) if image else None
    t_mask = rng.random(n) >= missing
    i_mask = rng.random(n) >= missing if image else None
    return make_inputs(text=text, text_mask=t_mask, image=img, image_mask=i_mask)


def small_cfg(name: str = "mmq", **kw) -> TokenizerConfig:
    """A tiny config; ``kw`` is merged in (sections as mappings: ``mmq={"n_text": 3}``)."""
    base = dict(name=name, codebook_size=8, epochs=3, warmup_epochs=1, batch_size=32, kmeans_iters=5,
                mmq=dict(latent_dim=8, expert_hidden=16, decoder_hidden=16, gate_hidden=8),
                rq=dict(hidden=[16], latent_dim=6))
    return TokenizerConfig.from_dict(deep_merge(base, kw))


def fitted(name: str = "mmq", inputs=None, **kw):
    inputs = inputs if inputs is not None else clustered()
    torch.manual_seed(0)
    model = build_tokenizer(small_cfg(name, **kw), d_text=inputs.d_text, d_image=inputs.d_image)
    fit_tokenizer(model, inputs, seed=0)
    return model, inputs


@pytest.mark.parametrize("name", ["mmq", "rqvae"])
def test_soft_codes_equal_hard_codes_and_carry_gradient(name):
    model, inputs = fitted(name)
    model.train()
    batch = inputs.rows(torch.arange(24))
    hard = model.encode(*batch)
    soft = model.soft_codes(*batch, tau=0.5)
    assert len(soft) == model.n_positions
    for p, ind in enumerate(soft):
        expected = torch.nn.functional.one_hot(hard[:, p], model.codebook_sizes[p]).float()
        assert torch.equal(ind, expected)  # bit-exact, not approximately
    # A downstream loss on `ind @ E` reaches the tokenizer's encoder parameters.
    emb = torch.randn(model.codebook_sizes[0], 5)
    loss = sum((ind @ emb).pow(2).sum() * (i + 1) for i, ind in enumerate(soft))
    loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "expert" in n or "encoder" in n]
    assert any(g is not None and float(g.abs().sum()) > 0 for g in grads)


def test_reconstruction_losses_give_the_stage_two_terms_and_gradient():
    model, inputs = fitted("mmq")
    model.train()
    losses = model.reconstruction_losses(*inputs.rows(torch.arange(16)))
    assert {"recon", "aux", "ortho", "codebook", "total"} <= set(losses)
    assert float(losses["recon"].detach()) > 0 and float(losses["aux"].detach()) > 0
    (0.5 * losses["recon"] + 0.5 * losses["aux"]).backward()
    assert model.text_experts[0][0].weight.grad is not None


def test_latent_correlation_loss_is_one_for_copies_and_near_zero_for_independent_experts():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4096, 6, generator=g)
    b = torch.randn(4096, 6, generator=g)
    assert float(latent_correlation_loss([a, a.clone()])) == pytest.approx(1.0, rel=1e-2)
    assert float(latent_correlation_loss([a, b])) < 0.01
    # A linear function of another expert's latent is as redundant as a copy.
    mixed = a @ torch.linalg.qr(torch.randn(6, 6, generator=g))[0]
    assert float(latent_correlation_loss([a, mixed])) == pytest.approx(1.0, rel=1e-2)
    z = a.clone().requires_grad_(True)
    latent_correlation_loss([z, a + 0.5 * b]).backward()
    assert z.grad is not None and float(z.grad.norm()) > 0
    assert float(latent_correlation_loss([a])) == 0.0


def test_orthogonality_loss_zero_for_orthogonal_experts_positive_otherwise():
    experts = [nn.Sequential(nn.Linear(2, 2, bias=False)) for _ in range(3)]
    eye = torch.eye(4)
    with torch.no_grad():
        for i, e in enumerate(experts):
            e[0].weight.copy_(eye[i].reshape(2, 2))
    assert float(orthogonality_loss(experts).detach()) == pytest.approx(0.0, abs=1e-12)
    with torch.no_grad():
        experts[2][0].weight.copy_((eye[0] + eye[2]).reshape(2, 2))
    # cos(e0, (e0 + e2)/sqrt2) = 1/sqrt2 appears twice in the Gram matrix: 2 * 0.5 = 1.
    assert float(orthogonality_loss(experts).detach()) == pytest.approx(1.0, rel=1e-6)
    # Scaling a weight does not change it (vectors are normalised first).
    with torch.no_grad():
        experts[1][0].weight.mul_(7.0)
    assert float(orthogonality_loss(experts).detach()) == pytest.approx(1.0, rel=1e-6)
    assert float(orthogonality_loss(experts[:1]).detach()) == 0.0


def test_gate_balance_loss_zero_when_balanced_and_maximal_when_one_expert_wins():
    from tokenizer.mmq import gate_balance_loss

    mask = torch.ones(4, dtype=torch.bool)
    # Per-item choices may be sharp; only the total weight per expert must be even.
    sharp_but_even = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    assert float(gate_balance_loss(sharp_but_even, mask)) == pytest.approx(0.0)
    one_wins = torch.tensor([[1.0, 0.0]] * 4)
    assert float(gate_balance_loss(one_wins, mask)) == pytest.approx(1.0)  # n - 1
    assert 0 < float(gate_balance_loss(torch.tensor([[0.7, 0.3]] * 4), mask)) < 1
    # Rows without the modality do not count.
    assert float(gate_balance_loss(one_wins, torch.zeros(4, dtype=torch.bool))) == 0.0


def test_same_seed_same_ids_and_different_seed_differs():
    inputs = clustered()

    def codes(seed):
        torch.manual_seed(seed)
        m = build_tokenizer(small_cfg(), d_text=D_T, d_image=D_V)
        fit_tokenizer(m, inputs, seed=seed)
        return m.encode_inputs(inputs), m.state_dict()

    a, sa = codes(0)
    b, sb = codes(0)
    assert torch.equal(a, b)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    c, _ = codes(1)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("name", ["mmq", "rqvae", "rqkmeans"])
def test_missing_modalities_never_produce_nan(name):
    inputs = clustered(60, missing=0.3)
    # Some items lack both modalities, some have NaN garbage in their absent rows.
    inputs.text_mask[:3] = False
    inputs.image_mask[:3] = False
    inputs.text[~inputs.text_mask] = float("nan")
    inputs.image[~inputs.image_mask] = float("nan")
    model, _ = fitted(name, inputs)
    codes = model.encode_inputs(inputs)
    assert codes.shape == (60, model.n_positions) and (codes >= 0).all()
    model.train()
    batch = inputs.rows(torch.arange(60))
    for value in model.reconstruction_losses(*batch).values():
        assert torch.isfinite(value)
    for ind in model.soft_codes(*batch):
        assert torch.isfinite(ind).all()
    # Without any image tensor at all (image-less batch for a multimodal model).
    text_only = model.encode(batch[0], None, batch[2], None)
    assert text_only.shape == (60, model.n_positions)


def test_missing_image_gates_the_vision_experts_off():
    model, inputs = fitted("mmq", clustered(40, missing=0.0))
    x = inputs.rows(torch.arange(4))
    no_img = torch.zeros(4, dtype=torch.bool)
    _, weights, _ = model._latents((x[0], x[1], x[2], no_img))
    assert torch.equal(weights[:, -model.n_vision:], torch.zeros(4, model.n_vision))
    assert torch.allclose(weights[:, model.n_shared: model.n_shared + model.n_text].sum(1), torch.ones(4))


def test_text_only_dataset_gets_the_vision_experts_as_text_experts():
    inputs = clustered(50, image=False)
    model, _ = fitted("mmq", inputs)
    assert model.position_names == ["shared0", "shared1", "text0", "text1", "text2", "text3"]
    assert len(model.vision_experts) == 0 and model.vision_gate is None
    assert model.encode_inputs(inputs).shape == (50, 6)
    gates = model.gate_stats(inputs)["text"]
    assert len(gates["importance"]) == 4 and abs(sum(gates["importance"]) - 1) < 1e-3
    assert 0.0 <= gates["hard_share"] <= 1.0 and 0.0 <= gates["entropy"] <= np.log(4) + 1e-6


def test_sid_length_scales_with_experts_and_ablations_switch_parts_off():
    def build(**kw):
        return build_tokenizer(small_cfg(**kw), d_text=D_T, d_image=D_V)

    assert build().n_positions == 6
    assert build(mmq=dict(n_shared=3, n_text=3, n_vision=3)).n_positions == 9
    spec = build(mmq=dict(specific_only=True))
    assert spec.position_names == ["text0", "text1", "vision0", "vision1"]
    assert build(mmq=dict(aux_loss=False)).text_aux is None
    l2 = build(mmq=dict(assignment="l2"))
    assert all(cb.metric == "l2" for cb in l2.codebooks)
    inputs = clustered()
    no_ortho, _ = fitted("mmq", inputs, mmq=dict(ortho_loss=False))
    assert float(no_ortho.reconstruction_losses(*inputs.rows(torch.arange(8)))["ortho"]) == 0.0
    no_aux, _ = fitted("mmq", inputs, mmq=dict(aux_loss=False))
    assert float(no_aux.reconstruction_losses(*inputs.rows(torch.arange(8)))["aux"]) == 0.0
    rq = build_tokenizer(small_cfg("rqvae", rq=dict(levels=4)), d_text=D_T, d_image=D_V)
    assert rq.n_positions == 4
    with pytest.raises(DataError):
        build(mmq=dict(n_shared=0, n_text=0, n_vision=0))
    with pytest.raises(DataError):
        small_cfg(mmq=dict(assignment="dot"))


def test_kmeans_assigns_every_point_to_its_nearest_centre_and_fills_all_clusters():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5)
    for spherical in (False, True):
        centers, assign = kmeans(x, 16, iters=10, generator=g, spherical=spherical)
        xs = torch.nn.functional.normalize(x, dim=-1) if spherical else x
        ref = torch.tensor([
            int(np.argmax([(float(xs[i] @ c) if spherical else -float((xs[i] - c).pow(2).sum()))
                           for c in centers]))
            for i in range(len(x))
        ])
        assert torch.equal(assign, ref)
        assert len(torch.unique(assign)) == 16


def test_codebook_similarity_matches_a_direct_distance():
    x, c = torch.randn(7, 4), torch.randn(5, 4)
    ref = -torch.cdist(x, c).pow(2)
    assert torch.allclose(similarity(x, c, spherical=False), ref, atol=1e-5)
    cb = Codebook(5, 4, metric="cosine", update="ema")
    cos = torch.nn.functional.cosine_similarity(x[:, None, :], cb.embed[None], dim=-1)
    assert torch.allclose(cb.scores(x), cos, atol=1e-6)


def test_mmq_reaches_full_utilisation_on_clustered_data():
    rng = np.random.default_rng(3)
    n = 400
    lab = rng.integers(0, 40, n)
    inputs = make_inputs(text=rng.normal(size=(40, D_T))[lab] + 0.5 * rng.normal(size=(n, D_T)),
                         image=rng.normal(size=(40, D_V))[lab] + 0.5 * rng.normal(size=(n, D_V)))
    model, _ = fitted("mmq", inputs, codebook_size=16, epochs=6)
    codes = model.encode_inputs(inputs).numpy()
    util = [len(np.unique(codes[:, p])) / 16 for p in range(codes.shape[1])]
    assert min(util) >= 0.9, util


def test_collapse_is_reported_and_can_stop_training(caplog):
    # Every item has the same embeddings: each codebook can only ever use one of its 64 codes.
    same = make_inputs(text=np.ones((80, D_T)), image=np.ones((80, D_V)))
    cfg = small_cfg(codebook_size=64, epochs=5, warmup_epochs=0, stop_on_collapse=True)
    model = build_tokenizer(cfg, d_text=D_T, d_image=D_V)
    with caplog.at_level("WARNING"):
        history = fit_tokenizer(model, same, seed=0)
    assert len(history["epochs"]) == 1 and "collapse" in history["stopped_early"]
    assert "codebook collapse" in caplog.text
    # Without the stop switch it warns and keeps going.
    model = build_tokenizer(small_cfg(codebook_size=64, epochs=3, warmup_epochs=0), d_text=D_T, d_image=D_V)
    history = fit_tokenizer(model, same, seed=0)
    assert len(history["epochs"]) == 3 and history["stopped_early"] is None
    assert history["epochs"][-1]["collapsed"]


def test_dead_code_reset_revives_unused_codes_without_killing_live_ones():
    from tokenizer.train import reset_dead_codes

    inputs = clustered(120)
    model, _ = fitted("mmq", inputs, codebook_size=32, epochs=2)
    cb = model.codebooks[0]
    with torch.no_grad():  # squeeze every codeword but two onto one point: 30 dead codes
        cb.set_codewords(torch.arange(2, 32), cb.codewords()[:1].expand(30, -1).clone())
    before = model.encode_inputs(inputs)[:, 0]
    used_before = set(before.tolist())
    assert reset_dead_codes(model, inputs, torch.Generator().manual_seed(0)) > 0
    after = model.encode_inputs(inputs)[:, 0]
    assert len(set(after.tolist())) > len(used_before)
    assert used_before <= set(after.tolist())  # no code that owned items lost all of them


def test_balanced_assignment_respects_capacity_and_matches_argmax_when_unconstrained():
    from tokenizer.quantizer import balanced_assign

    scores = torch.randn(50, 7, generator=torch.Generator().manual_seed(1))
    out = balanced_assign(scores, 8)
    assert out.shape == (50,) and int(torch.bincount(out, minlength=7).max()) <= 8
    assert torch.equal(balanced_assign(scores, 50), scores.argmax(1))
    with pytest.raises(ValueError):
        balanced_assign(scores, 7)


def test_balanced_rqkmeans_uses_codes_evenly():
    # Few heavy-tailed points in many dimensions: plain k-means piles most of them into one
    # cluster at every residual level; the capped version spreads them.
    inputs = make_inputs(text=np.random.default_rng(0).standard_t(3, size=(160, 300)))
    largest = {}
    for balanced in (False, True):
        model, _ = fitted("rqkmeans", inputs, codebook_size=16, rq=dict(balanced=balanced), kmeans_iters=10)
        codes = model.encode_inputs(inputs).numpy()
        largest[balanced] = max(int(np.bincount(codes[:, p]).max()) for p in range(codes.shape[1]))
    assert largest[True] <= 20 < largest[False]
