"""The item head's learned signals (``item_head.signals``): successor counts, content similarity
to the recent items and popularity, weighted by a gate of the head's query."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from generative_rec.content import ContentVectors
from generative_rec.signals import ItemSignals, recent_from_inputs
from generative_rec.transitions import TransitionCounts, recent_items
from recdata.errors import DataError
from recdata.io import save_tensors
from recdata.layout import layout
from tests.test_retriever import tiny_cfg, write_run

torch.set_num_threads(1)
N, D = 30, 8


def _tables(seed: int = 0):
    rng = np.random.default_rng(seed)
    sequences = [rng.integers(0, N, size=rng.integers(2, 12)) for _ in range(40)]
    transitions = TransitionCounts.from_sequences(sequences, n_items=N)
    emb = rng.normal(size=(N, 6)).astype(np.float32)
    mask = np.ones(N, bool)
    mask[[4, 11]] = False  # items without content: nobody's neighbour, no neighbours
    content = ContentVectors.from_embeddings([(emb, mask)], n_neighbours=5)
    popularity = np.bincount(np.concatenate(sequences), minlength=N)
    return sequences, transitions, content, popularity


def _signals(seed: int = 0) -> tuple[ItemSignals, list, TransitionCounts, ContentVectors, np.ndarray]:
    sequences, transitions, content, popularity = _tables(seed)
    torch.manual_seed(seed)
    signals = ItemSignals(D)
    with torch.no_grad():  # a gate that weighs every signal differently per history
        signals.gate.weight.normal_(0, 1.0)
        signals.gate.bias.normal_(0, 1.0)
    signals.set_tables(transitions=transitions, content=content, popularity=popularity)
    return signals, sequences, transitions, content, popularity


def _reference(signals: ItemSignals, query, recent, transitions, content, popularity,
               *, targets=None) -> torch.Tensor:
    """The term by its definition, one history and one item at a time."""
    w = signals.gate(query)
    rows = []
    for b in range(len(recent)):
        last = int(recent[b, 0])
        row = []
        for j in range(N):
            count = int(transitions.lookup(last=np.array([last]), items=np.array([[j]]))[0, 0])
            pop = int(popularity[j])
            if targets is not None and j == int(targets[b]):
                count, pop = max(count - 1, 0), max(pop - 1, 0)
            feats = [np.log1p(count)]
            for h in range(signals.history):
                r = int(recent[b, h]) if h < recent.shape[1] else -1
                cos = float(content.vectors[r] @ content.vectors[j]) if r >= 0 else 0.0
                feats.append(cos if r >= 0 and r != j else 0.0)  # every item but the recent one
            feats.append(np.log1p(pop))
            row.append((w[b] * torch.tensor(feats, dtype=torch.float32)).sum())
        rows.append(torch.stack(row))
    return torch.stack(rows)


def _histories(seed: int = 1, b: int = 6):
    rng = np.random.default_rng(seed)
    recent = rng.integers(0, N, size=(b, 5))
    recent[1, 2:] = -1  # a short history
    recent[2, 0] = 4  # the last item has no content
    return torch.as_tensor(recent), torch.as_tensor(rng.normal(size=(b, D)), dtype=torch.float32)


def test_catalogue_and_candidate_terms_match_the_definition():
    signals, _, transitions, content, popularity = _signals()
    recent, query = _histories()
    slow = _reference(signals, query, recent.numpy(), transitions, content, popularity)
    fast = signals.catalogue_term(query, recent)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    items = torch.as_tensor(np.random.default_rng(2).integers(-1, N, size=(len(recent), 9)))
    cand = signals.candidate_term(query, recent, items)
    torch.testing.assert_close(cand, torch.where(items >= 0, slow.gather(1, items.clamp(min=0)), 0.0),
                               rtol=1e-5, atol=1e-5)
    # Items the tables do not know (added after training) get no signal.
    assert signals.candidate_term(query, recent, torch.full((len(recent), 2), N + 3)).abs().max() == 0


def test_training_examples_leave_their_own_transition_out_and_gradients_match():
    signals, sequences, transitions, content, popularity = _signals(3)
    # Training examples: a history's last item and the item that followed it.
    pairs = [(s[t - 4 : t + 1][::-1], s[t + 1]) for s in sequences for t in range(4, len(s) - 1)][:8]
    recent = torch.as_tensor(np.stack([p[0] for p in pairs]))
    targets = torch.as_tensor([int(p[1]) for p in pairs])
    query = torch.as_tensor(np.random.default_rng(4).normal(size=(len(pairs), D)), dtype=torch.float32)
    fast = signals.catalogue_term(query, recent, targets=targets)
    slow = _reference(signals, query, recent.numpy(), transitions, content, popularity,
                      targets=targets.numpy())
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    # The gate learns through the scatter exactly as through the definition.
    loss_fast = torch.nn.functional.cross_entropy(fast, targets)
    grads_fast = torch.autograd.grad(loss_fast, list(signals.gate.parameters()))
    loss_slow = torch.nn.functional.cross_entropy(slow, targets)
    grads_slow = torch.autograd.grad(loss_slow, list(signals.gate.parameters()))
    for a, b in zip(grads_fast, grads_slow):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_recent_items_are_read_from_the_encoder_inputs():
    offset = 100
    history = np.array([[3, 7, 9, -1, -1], [5, -1, -1, -1, -1], [1, 2, 3, 4, 6]])
    lengths = (history >= 0).sum(1)
    ids = np.zeros((3, 7), np.int64)
    ids[:, 0] = 42  # the user token
    for b, n in enumerate(lengths):
        ids[b, 1 : 1 + n] = offset + history[b, :n]
        ids[b, 1 + n] = 1  # eos
    mask = (np.arange(7)[None, :] <= (1 + lengths)[:, None]).astype(np.int64)
    got = recent_from_inputs(torch.as_tensor(ids), torch.as_tensor(mask), item_offset=offset, n=4)
    assert got.tolist() == recent_items(history, 4).tolist()


def test_signals_need_an_item_head():
    from generative_rec.config import RetrieverConfig

    with pytest.raises(DataError, match="signals needs an item head"):
        RetrieverConfig.from_dict({"item_head": {"signals": True, "loss_weight": 0.0}})
    on = RetrieverConfig.from_dict({"history": {"encoding": "item"}, "output_softmax": "children",
                                    "item_head": {"signals": True, "loss_weight": 0.2}})
    off = RetrieverConfig.from_dict({"history": {"encoding": "item"}, "output_softmax": "children",
                                     "item_head": {"loss_weight": 0.2}})
    assert on.fingerprint() != off.fingerprint()  # a checkpoint of one never resumes the other


def test_stage_trains_the_gate_and_serving_reproduces_its_lists(tmp_path):
    from generative_rec import inference

    run, split, cfg, model, vocab, trie = _trained_tiny(tmp_path)
    assert model.item_signals.gate.weight.abs().sum() > 0  # training moved the gate
    test = pl.read_parquet(run / "retriever" / "candidates.parquet").filter(
        pl.col("split") == "test").sort("user_idx")
    common = dict(model=model, vocab=vocab, trie=trie,
                  histories=[s.tolist() for s in split.test_inputs], user_ids=split.user_ids,
                  top_k=20, num_beams=cfg.decode_beams, max_history=cfg.history.max_length,
                  normalize=cfg.normalize, item_score_weight=cfg.rerank_weight)
    items, _ = inference.recommend_for_histories(**common)
    assert items.tolist() == test["items"].to_list()
    # The signals take part in the order: with the gate zeroed the lists change.
    with torch.no_grad():
        model.item_signals.gate.weight.zero_()
        model.item_signals.gate.bias.zero_()
    plain, _ = inference.recommend_for_histories(**common)
    assert plain.tolist() != items.tolist()


def test_signals_without_embeddings_are_a_one_line_error(tmp_path):
    from generative_rec import stage

    run = write_run(tmp_path)
    cfg = tiny_cfg(history={"encoding": "item"}, output_softmax="children",
                   item_head={"loss_weight": 0.5, "signals": True},
                   schedule=dict(max_steps=5, eval_every=5))
    with pytest.raises(DataError, match="signals needs the run's embeddings"):
        stage.run(cfg=cfg, run_dir=run, seed=0, device="cpu")


def test_offers_are_the_top_successors_then_the_nearest_items():
    signals, _, transitions, content, _ = _signals(5)
    last = torch.tensor([0, 7, 4, -1, N - 1])
    got = signals.offers(last, 3).tolist()
    for row, item in zip(got, last.tolist()):
        succ = transitions.successors(item)[:3].tolist() if item >= 0 else []
        near = content.nearest(item)[:3].tolist() if item >= 0 else []
        assert row == succ + [-1] * (3 - len(succ)) + near + [-1] * (3 - len(near))


def _trained_tiny(tmp_path, **head):
    from generative_rec import inference, stage
    from recdata.split import SequentialSplit

    run = write_run(tmp_path)
    split = SequentialSplit.from_run_dir(run)
    rng = np.random.default_rng(0)
    save_tensors(layout(run).embeddings("text"), {
        "embeddings": rng.normal(size=(split.n_items, 8)).astype(np.float32),
        "mask": np.ones(split.n_items, dtype=bool)})
    cfg = tiny_cfg(history={"encoding": "item"}, output_softmax="children",
                   item_head={"loss_weight": 0.5, "signals": True, **head},
                   priors={"fit": False}, schedule=dict(max_steps=15, eval_every=15, lr=5e-3),
                   decoding=dict(candidates_n=20))
    stage.run(cfg=cfg, run_dir=run, seed=0, device="cpu")
    model, vocab, trie = inference.load_retriever(run, device="cpu")
    return run, split, cfg, model, vocab, trie


def test_offered_items_are_scored_as_the_search_scores_them(tmp_path):
    from generative_rec.data import Collator, histories_to_examples
    from generative_rec.decoding import add_signal_candidates, constrained_beam_search, score_items
    from generative_rec.model import item_token_offset
    from generative_rec.reference_decoding import exhaustive_scores

    run, split, cfg, model, vocab, trie = _trained_tiny(tmp_path)
    codes = trie.codes.numpy()
    collator = Collator(item_tokens=vocab.encode_sids(codes), user_tokens=vocab.user_tokens(split.user_ids),
                        pad_id=vocab.pad_id, eos_id=vocab.eos_id, item_offset=item_token_offset(model))
    batch = collator(histories_to_examples([s.tolist() for s in split.test_inputs[:4]], 10))
    items = torch.tensor([[0, 5, -1, 9], [3, 3, 1, -1], [2, 8, 6, 4], [-1, -1, -1, -1]])
    got = score_items(model=model, input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                      items=items, trie=trie, vocab=vocab, normalize="children")
    oracle = exhaustive_scores(model=model, input_ids=batch.input_ids,
                               attention_mask=batch.attention_mask, codes=codes, vocab=vocab,
                               normalize="children", items=items)
    torch.testing.assert_close(got, oracle.float(), rtol=1e-4, atol=1e-4)
    # The beam's own scores agree with the teacher-forced ones.
    beam_items, beam_scores = constrained_beam_search(
        model=model, input_ids=batch.input_ids, attention_mask=batch.attention_mask, trie=trie,
        vocab=vocab, num_beams=20, top_k=5, normalize="children")
    again = score_items(model=model, input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                        items=beam_items, trie=trie, vocab=vocab, normalize="children")
    torch.testing.assert_close(again, beam_scores.float(), rtol=1e-4, atol=1e-4)
    # Offers join once each, never twice, never what the beam holds.
    more, _ = add_signal_candidates(model=model, input_ids=batch.input_ids,
                                    attention_mask=batch.attention_mask, items=beam_items,
                                    scores=beam_scores, trie=trie, vocab=vocab,
                                    normalize="children", m=3)
    assert more.shape == (4, 5 + 6)
    for row in more.tolist():
        real = [i for i in row if i >= 0]
        assert len(real) == len(set(real))


def test_stage2_keeps_the_signals_when_the_vocabulary_changes(tmp_path):
    """Stage 2 rebuilds the model for a new vocabulary; the signals' tables (keyed by item, not
    by ID) come along, so continued training and decoding still read them."""
    from generative_rec.model import build_model, item_signals
    from generative_rec.stage2 import carry_over_embeddings
    from generative_rec.vocab import SidVocab

    _, transitions, content, popularity = _tables()
    cfg = tiny_cfg(history={"encoding": "item"}, output_softmax="children",
                   item_head={"loss_weight": 0.5, "signals": True})
    old, new = SidVocab(codebook_sizes=[4, 4, 2], n_user_buckets=16), \
        SidVocab(codebook_sizes=[5, 4, 2], n_user_buckets=16)
    codes = np.stack([np.arange(N) % 4, (np.arange(N) // 4) % 4, np.arange(N) // 16], 1)
    model = build_model(cfg=cfg, vocab_size=old.vocab_size, item_tokens=old.encode_sids(codes))
    item_signals(model).set_tables(transitions=transitions, content=content, popularity=popularity)
    fresh = carry_over_embeddings(model=model, old=old, new=new, cfg=cfg,
                                  item_tokens=new.encode_sids(codes))
    assert fresh is not model and item_signals(fresh).ready
    assert torch.equal(item_signals(fresh).keys, item_signals(model).keys)


def test_retrievers_with_the_removed_nearest_items_signal_are_refused(tmp_path):
    """The content signal among each recent item's nearest items was removed (experiment 70):
    a run trained with it must be retrained, not served through a gate fed other cosines."""
    import json

    from generative_rec import inference
    from generative_rec.config import RetrieverConfig

    run, *_ = _trained_tiny(tmp_path)
    path = layout(run).retriever_config
    meta = json.loads(path.read_text())
    assert meta["version"] == 2
    # Saved by the version that had both signals, with the dense one on: still served.
    meta.pop("version")
    meta["retriever"]["item_head"]["dense_content"] = True
    path.write_text(json.dumps(meta))
    assert inference.retriever_config(run).item_head.signals
    # Saved before the dense signal existed (no key) or with it off: one line, retrain.
    for head in ({}, {"dense_content": False}):
        meta["retriever"]["item_head"].pop("dense_content", None)
        meta["retriever"]["item_head"].update(head)
        path.write_text(json.dumps(meta))
        with pytest.raises(DataError, match="re-run train-retriever"):
            inference.load_retriever(run, device="cpu")
    with pytest.raises(DataError, match="dense_content: false .* was removed"):
        RetrieverConfig.from_dict({"history": {"encoding": "item"}, "output_softmax": "children",
                                   "item_head": {"signals": True, "loss_weight": 0.2,
                                                 "dense_content": False}})
