"""``RetrieverConfig.content_embedding``: each item's frozen content vector, projected, joins
its SID embedding in the history and in the item head's keys."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from generative_rec.model import build_model, model_state, set_item_tokens, unwrap
from recdata.errors import DataError
from recdata.io import save_tensors
from recdata.layout import layout
from tests.test_retriever import cyclic_problem, tiny_cfg, write_run

torch.set_num_threads(1)


def _models(content: np.ndarray, collator, vocab, **cfg):
    plain_cfg = tiny_cfg(item_loss_weight=0.5, **cfg)
    with_cfg = tiny_cfg(item_loss_weight=0.5, content_embedding=True, **cfg)
    torch.manual_seed(0)
    plain = build_model(cfg=plain_cfg, vocab_size=vocab.vocab_size, item_tokens=collator.item_tokens)
    torch.manual_seed(0)
    model = build_model(cfg=with_cfg, vocab_size=vocab.vocab_size,
                        item_tokens=collator.item_tokens, content=content)
    return plain, model


def test_the_projection_starts_at_zero_and_learns_from_the_item_loss():
    ex, vocab, collator, trie = cyclic_problem()
    content = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    plain, model = _models(content, collator, vocab)
    emb, plain_emb = unwrap(model).encoder.embed_tokens, unwrap(plain).encoder.embed_tokens
    # At initialisation the model is the plain one: same item vectors, same rows.
    torch.testing.assert_close(emb.item_vectors(), plain_emb.item_vectors())
    items = torch.tensor([[0, 5, 39]])
    torch.testing.assert_close(emb.item_rows(items), plain_emb.item_rows(items))
    # Rows and the whole-table product agree, and both carry the projection once it moves.
    with torch.no_grad():
        emb.content_proj.weight.normal_()
    want = plain_emb.item_vectors() + torch.from_numpy(content) @ emb.content_proj.weight.T
    torch.testing.assert_close(emb.item_vectors(), want)
    torch.testing.assert_close(emb.item_rows(items)[0], want[items[0]])
    # The item head's loss reaches the projection.
    from generative_rec.train import step_loss, training_scorer

    cfg = tiny_cfg(item_loss_weight=0.5, content_embedding=True)
    batch = collator(ex["train"], np.arange(8))
    loss = step_loss(training_scorer(model, cfg=cfg, vocab=vocab), batch=batch, cfg=cfg,
                     plain=False, offsets=torch.tensor(vocab.offsets), trie=trie,
                     device="cpu", amp=None)
    loss.backward()
    assert emb.content_proj.weight.grad is not None and emb.content_proj.weight.grad.abs().sum() > 0
    # The content vectors are frozen inputs, saved with the weights.
    assert "encoder.embed_tokens.content" in model_state(model)
    assert not emb.content.requires_grad


def test_needs_the_vectors_and_new_items_read_as_their_sid_until_given_theirs():
    ex, vocab, collator, trie = cyclic_problem()
    with pytest.raises(DataError, match="content_embedding needs"):
        build_model(cfg=tiny_cfg(content_embedding=True), vocab_size=vocab.vocab_size,
                    item_tokens=collator.item_tokens)
    content = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    _, model = _models(content, collator, vocab)
    emb = unwrap(model).encoder.embed_tokens
    with torch.no_grad():
        emb.content_proj.weight.normal_()
    grown = np.concatenate([collator.item_tokens, collator.item_tokens[:1]])
    set_item_tokens(model, grown)
    assert emb.content.shape[0] == 41 and emb.content[40].abs().sum() == 0
    emb.set_content(torch.tensor([40]), torch.from_numpy(content[:1]))
    torch.testing.assert_close(emb.item_vectors()[40], emb.item_vectors()[0])


def test_stage_trains_with_the_run_embeddings_and_serving_reloads_the_same_lists(tmp_path):
    from generative_rec import inference, stage
    from recdata.split import SequentialSplit

    run = write_run(tmp_path)
    split = SequentialSplit.from_run_dir(run)
    rng = np.random.default_rng(0)
    save_tensors(layout(run).embeddings("text"),
                 {"embeddings": rng.normal(size=(split.n_items, 8)).astype(np.float32),
                  "mask": np.ones(split.n_items, dtype=bool)})
    cfg = tiny_cfg(max_steps=15, eval_every=15, lr=5e-3, candidates_n=20, item_loss_weight=0.5,
                   content_embedding=True, priors={"fit": False})
    stage.run(cfg=cfg, run_dir=run, seed=0, device="cpu")
    model, vocab, trie = inference.load_retriever(run, device="cpu")
    assert unwrap(model).encoder.embed_tokens.content_proj.weight.abs().sum() > 0
    items, _ = inference.recommend_for_histories(
        model=model, vocab=vocab, trie=trie, histories=[s.tolist() for s in split.test_inputs],
        user_ids=split.user_ids, top_k=20, num_beams=cfg.decode_beams,
        max_history=cfg.max_history, normalize=cfg.normalize,
        item_score_weight=cfg.rerank_weight)
    saved = pl.read_parquet(layout(run).candidates).filter(pl.col("split") == "test").sort("user_idx")
    assert items.tolist() == saved["items"].to_list()
