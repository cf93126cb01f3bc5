"""Generative retriever: examples, batches, training, checkpoints and the stage's artefacts."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from generative_rec.config import RetrieverConfig
from generative_rec.data import (
    Collator,
    Examples,
    build_examples,
    epoch_order,
    length_bucketed,
    right_aligned_windows,
)
from generative_rec.model import build_model, model_state
from generative_rec.train import (decode_examples, lr_at, retrieval_metrics, schedule_steps,
                                  train_retriever)
from generative_rec.trie import SidTrie
from generative_rec.vocab import SidVocab
from recdata.errors import DataError
from recdata.overrides import deep_merge

torch.set_num_threads(1)

# The quick profile's shape (configs/ml-100k-mm.quick.yaml), shrunk to a test's size.
TINY = dict(d_model=32, num_layers=1, num_decoder_layers=1, num_heads=2, d_kv=16, d_ff=64,
            dropout=0.0, n_user_buckets=16, history=dict(max_length=10),
            schedule=dict(batch_size=16, lr=3e-3, warmup_steps=5, max_steps=2000, eval_every=500,
                          patience=0, val_max_users=0, eval_batch_size=64),
            decoding=dict(candidates_n=20), stage2=dict(steps=100, continue_steps=300))


def tiny_cfg(**overrides) -> RetrieverConfig:
    """A tiny retriever config: :data:`TINY` with ``overrides`` merged in, section by section."""
    return RetrieverConfig.from_dict(deep_merge(TINY, overrides))


def random_unique_codes(n: int, sizes: list[int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, sizes[:-1], size=(n, len(sizes) - 1))
    from tokenizer.sid import resolve_collisions

    codes, stats = resolve_collisions(raw)
    assert stats["collision_codebook_size"] <= sizes[-1]
    return codes


# --------------------------------------------------------------------------- data


def test_windows_match_slow_reference():
    rng = np.random.default_rng(1)
    for _ in range(20):
        seq = rng.integers(0, 50, size=rng.integers(1, 30))
        h = int(rng.integers(1, 8))
        ends = np.arange(len(seq) + 1)
        got = right_aligned_windows(seq, ends, h)
        for row, e in zip(got, ends):
            hist = list(seq[max(0, e - h) : e])
            assert row.tolist() == hist + [-1] * (h - len(hist))


def test_examples_cover_every_prefix_and_the_split():
    seqs = [np.array([5, 6, 7, 8, 9]), np.array([1, 2, 3])]
    ex = build_examples(
        train_sequences=[s[:-2] for s in seqs], valid_inputs=[s[:-2] for s in seqs],
        valid_targets=np.array([s[-2] for s in seqs]), test_inputs=[s[:-1] for s in seqs],
        test_targets=np.array([s[-1] for s in seqs]), max_history=2,
    )
    # User 0 trains on [5,6,7]: (5)->6, (5,6)->7; user 1's training sequence [1] has no prefix.
    assert ex["train"].users.tolist() == [0, 0]
    assert ex["train"].targets.tolist() == [6, 7]
    assert ex["train"].history.tolist() == [[5, -1], [5, 6]]
    assert ex["valid"].targets.tolist() == [8, 2]
    assert ex["valid"].history.tolist() == [[6, 7], [1, -1]]  # left-truncated to 2 items
    assert ex["test"].history.tolist() == [[7, 8], [1, 2]]
    assert ex["test"].targets.tolist() == [9, 3]

    # Only the most recent prefixes: user 0's last training target, user 1 has none.
    recent = build_examples(
        train_sequences=[np.array([5, 6, 7, 8])], valid_inputs=[], valid_targets=np.array([]),
        test_inputs=[], test_targets=np.array([]), max_history=2, max_train_prefixes=2,
    )["train"]
    assert recent.targets.tolist() == [7, 8]
    assert recent.history.tolist() == [[5, 6], [6, 7]]


def test_collator_layout():
    vocab = SidVocab(codebook_sizes=[4, 4, 2], n_user_buckets=8)
    codes = np.array([[0, 1, 0], [3, 2, 0], [3, 2, 1]])
    tokens = vocab.encode_sids(codes)
    col = Collator(item_tokens=tokens, user_tokens=np.array([vocab.user_token("a"), 3]),
                   pad_id=vocab.pad_id, eos_id=vocab.eos_id)
    ex = Examples(np.array([0, 1]), np.array([[0, 1, -1], [2, -1, -1]], np.int32), np.array([2, 0]))
    b = col(ex)
    ids = b.input_ids.tolist()
    assert ids[0] == [vocab.user_token("a"), *tokens[0], *tokens[1], vocab.eos_id]
    assert ids[1] == [3, *tokens[2], vocab.eos_id, 0, 0, 0]
    assert b.attention_mask.tolist() == [[1] * 8, [1] * 5 + [0] * 3]
    assert b.labels.tolist() == [tokens[2].tolist(), tokens[0].tolist()]
    assert b.hist_items.tolist() == [[0, 1], [2, -1]]

    # One encoder position per history item: item i is the token item_offset + i.
    off = vocab.vocab_size
    col = Collator(item_tokens=tokens, user_tokens=np.array([vocab.user_token("a"), 3]),
                   pad_id=vocab.pad_id, eos_id=vocab.eos_id, item_offset=off)
    b = col(ex)
    assert b.input_ids.tolist() == [[vocab.user_token("a"), off, off + 1, vocab.eos_id],
                                    [3, off + 2, vocab.eos_id, 0]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert b.labels.tolist() == [tokens[2].tolist(), tokens[0].tolist()]


def test_item_embedding_is_the_scaled_sum_of_its_sid_tokens():
    vocab = SidVocab(codebook_sizes=[4, 4, 2], n_user_buckets=8)
    codes = np.array([[0, 1, 0], [3, 2, 0], [3, 2, 1]])
    tokens = vocab.encode_sids(codes)
    torch.manual_seed(0)
    model = build_model(cfg=tiny_cfg(), vocab_size=vocab.vocab_size, item_tokens=tokens)
    table = model.shared.weight
    ids = torch.tensor([[vocab.user_token("a"), vocab.vocab_size + 2, vocab.eos_id, 0]])
    got = model.encoder.embed_tokens(ids)[0]
    assert torch.allclose(got[0], table[vocab.user_token("a")])
    assert torch.allclose(got[1], table[torch.as_tensor(tokens[2])].sum(0) / np.sqrt(3))
    assert torch.allclose(got[2], table[vocab.eos_id]) and torch.allclose(got[3], table[0])
    # The item embedding reads the shared table itself: a gradient reaches the SID rows.
    got[1].sum().backward()
    assert set(torch.nonzero(table.grad.abs().sum(1)).flatten().tolist()) == set(tokens[2].tolist())
    # Saved weights hold the table once; the item table is not a weight.
    assert "encoder.embed_tokens.item_tokens" not in model_state(model)
    with pytest.raises(DataError, match="item"):
        build_model(cfg=tiny_cfg(), vocab_size=vocab.vocab_size)


def test_epoch_order_is_seeded_and_shards_partition():
    a = epoch_order(103, epoch=3, seed=7)
    assert np.array_equal(a, epoch_order(103, epoch=3, seed=7))
    assert not np.array_equal(a, epoch_order(103, epoch=4, seed=7))
    assert sorted(a.tolist()) == list(range(103))
    shards = [epoch_order(103, epoch=3, seed=7, rank=r, world_size=2) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 52
    assert set(np.concatenate(shards).tolist()) == set(range(103))


def test_length_buckets_keep_the_epoch_and_cut_padding():
    rng = np.random.default_rng(0)
    lengths = np.minimum(rng.geometric(0.25, size=1003), 20)  # mostly short, a few long
    order = epoch_order(1003, epoch=2, seed=5)
    bucketed = length_bucketed(order, lengths, batch_size=32, window=8, seed=5, epoch=2)
    # Every example once per epoch, the final partial batch last, and replayable.
    assert sorted(bucketed.tolist()) == list(range(1003))
    assert np.array_equal(bucketed[-(1003 % 32):], order[-(1003 % 32):])
    assert np.array_equal(bucketed, length_bucketed(order, lengths, batch_size=32, window=8,
                                                    seed=5, epoch=2))

    def padded(o):  # encoder positions a batch pads to, summed over the epoch's full batches
        return sum(int(lengths[o[i:i + 32]].max()) * 32 for i in range(0, 992, 32))

    assert padded(bucketed) < 0.7 * padded(order)
    # Batches are still shuffled: not simply in order of length.
    maxima = [int(lengths[bucketed[i:i + 32]].max()) for i in range(0, 992, 32)]
    assert maxima != sorted(maxima)


def test_lr_schedule_warms_up_then_decays_to_zero():
    lrs = [lr_at(s, peak=1.0, warmup=10, total=100) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lr_at(100, peak=1.0, warmup=10, total=100) == 0.0


def test_config_validation_and_sections():
    default = RetrieverConfig()
    assert default.d_model == 128 and default.num_layers == 4  # the TIGER sizes
    assert default.num_heads == 6 and default.d_ff == 1024
    cfg = tiny_cfg(decoding=dict(candidates_n=50))
    assert cfg.decode_beams == 50
    with pytest.raises(DataError, match="num_beams"):
        RetrieverConfig(decoding=dict(num_beams=10))
    with pytest.raises(DataError, match="unknown"):
        RetrieverConfig.from_dict({"d_modle": 3})
    with pytest.raises(DataError, match="unknown schedule"):
        RetrieverConfig.from_dict({"schedule": {"max_step": 3}})
    assert RetrieverConfig.from_dict(cfg.to_dict()) == cfg


def test_flat_keys_of_earlier_versions_load_in_their_section_with_one_warning(caplog):
    """A config or a run's config.json from before the sections still loads, each old key in
    its section, with one warning; the checkpoints it wrote keep their fingerprint (resume)."""
    flat = {"max_history": 10, "lr": 3e-3, "item_loss_weight": 0.2, "candidates_n": 30,
            "num_beams": 25, "batch_size": 64}
    with caplog.at_level(logging.WARNING):
        cfg = RetrieverConfig.from_dict(flat)
    warnings = [r for r in caplog.records if "old flat key" in r.getMessage()]
    assert len(warnings) == 1 and "max_history -> history.max_length" in warnings[0].getMessage()
    assert cfg == RetrieverConfig(history=dict(max_length=10), item_head=dict(loss_weight=0.2),
                                  schedule=dict(lr=3e-3, batch_size=64),
                                  decoding=dict(candidates_n=30, num_beams=25))
    # The fingerprints these configs had before the sections existed.
    assert cfg.fingerprint() == "62a770b54f5c7d73"
    assert RetrieverConfig().fingerprint() == "9ad74fe3c1b69419"
    with pytest.raises(DataError, match="same setting given twice"):
        RetrieverConfig.from_dict({"lr": 1e-3, "schedule": {"lr": 2e-3}})


# --------------------------------------------------------------------------- training


def cyclic_problem(n_users: int = 12, n_items: int = 40, length: int = 14,
                   history_encoding: str = "item"):
    """Users walk through the catalogue in steps of one: the next item is a function of the last."""
    seqs = [np.array([(3 * u + t) % n_items for t in range(length)]) for u in range(n_users)]
    sizes = [8, 8, 4]
    codes = random_unique_codes(n_items, sizes, seed=3)
    vocab = SidVocab(codebook_sizes=sizes, n_user_buckets=16)
    collator = Collator(item_tokens=vocab.encode_sids(codes),
                        user_tokens=vocab.user_tokens([f"u{u}" for u in range(n_users)]),
                        pad_id=vocab.pad_id, eos_id=vocab.eos_id,
                        item_offset=vocab.vocab_size if history_encoding == "item" else None)
    ex = build_examples(
        train_sequences=[s[:-2] for s in seqs], valid_inputs=[s[:-2] for s in seqs],
        valid_targets=np.array([s[-2] for s in seqs]), test_inputs=[s[:-1] for s in seqs],
        test_targets=np.array([s[-1] for s in seqs]), max_history=5,
    )
    return ex, vocab, collator, SidTrie.from_codes(codes)


def _train(tmp: Path, cfg: RetrieverConfig, *, seed: int = 0, on_step=None):
    ex, vocab, collator, trie = cyclic_problem(history_encoding=cfg.history.encoding)
    torch.manual_seed(seed)
    model = build_model(cfg=cfg, vocab_size=vocab.vocab_size, item_tokens=collator.item_tokens)
    result = train_retriever(
        model=model, cfg=cfg, train=ex["train"], valid=ex["valid"], collator=collator, trie=trie,
        vocab=vocab, device="cpu", seed=seed, ckpt_path=tmp / "ckpt" / "train.safetensors",
        log_path=tmp / "train_log.jsonl", on_step=on_step,
    )
    return model, result, (ex, vocab, collator, trie)


@pytest.mark.parametrize("history_encoding, length_buckets",
                         [("item", 0), ("token", 0), ("item", 4)])
def test_tiny_model_overfits_tiny_data(tmp_path, history_encoding, length_buckets):
    cfg = tiny_cfg(d_model=48, d_ff=96, schedule=dict(lr=1e-2, max_steps=150, eval_every=50, length_buckets=length_buckets), history=dict(encoding=history_encoding))
    model, result, (ex, vocab, collator, trie) = _train(tmp_path, cfg)
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [50, 100, 150]
    assert log[-1]["train_loss"] < 0.5 * log[0]["train_loss"]
    items, _ = decode_examples(model=model, examples=ex["train"], collator=collator, trie=trie,
                               vocab=vocab, num_beams=20, top_k=20, batch_size=64, device="cpu",
                               normalize=cfg.normalize)
    metrics = retrieval_metrics(items, ex["train"].targets, n_items=trie.n_items)
    chance = 10 / trie.n_items
    assert metrics["overall"]["recall@10"] > max(0.7, 2.5 * chance)
    assert metrics["overall"]["invalid@10"] == 0.0


def test_an_integer_for_a_float_field_is_the_same_setting():
    # YAML writes `max_minutes: 0` or `lr: 1`; a checkpoint must resume under either spelling.
    a = RetrieverConfig.from_dict({"schedule": {"max_minutes": 0, "lr": 1}, "stage2": {"tau": 1}})
    b = RetrieverConfig.from_dict({"schedule": {"max_minutes": 0.0, "lr": 1.0},
                                   "stage2": {"tau": 1.0}})
    assert a.fingerprint() == b.fingerprint() and a == b
    assert isinstance(a.schedule.lr, float) and isinstance(a.stage2.tau, float)
    assert RetrieverConfig.from_dict({"lr": 2}).fingerprint() != a.fingerprint()


def test_wall_clock_cap_stops_training_validates_and_keeps_the_best(tmp_path):
    cfg = tiny_cfg(schedule=dict(lr=5e-3, max_steps=10_000, eval_every=1_000, max_minutes=1e-9))
    model, result, _ = _train(tmp_path, cfg)
    assert result.stop_reason == "max_minutes"
    assert result.steps == 1  # the first step is already past a cap this small
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1]  # the stopped run is still validated
    with pytest.raises(DataError, match="max_minutes"):
        tiny_cfg(schedule=dict(max_minutes=-1))


def test_the_schedule_is_sized_in_epochs_of_the_catalogue(tmp_path):
    """``max_epochs`` sets the schedule's length from the data: 3 passes over the 132 training
    examples at 16 per batch are 27 steps, where the learning rate reaches 0; ``max_steps``
    caps it."""
    cfg = tiny_cfg(schedule=dict(lr=5e-3, warmup_steps=2, max_steps=10_000, max_epochs=3,
                                 eval_every=1_000))
    ex, *_ = cyclic_problem()
    batches = -(-len(ex["train"]) // 16)
    _, result, _ = _train(tmp_path, cfg)
    assert result.steps == 3 * batches and result.stop_reason == "max_steps"
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 3 * batches and log[-1]["lr"] < 5e-3 / batches
    capped = tiny_cfg(schedule=dict(max_steps=5, max_epochs=3))
    assert schedule_steps(capped, batches) == 5 and schedule_steps(cfg, batches) == 3 * batches


class Crash(RuntimeError):
    pass


def test_resume_after_crash_gives_identical_weights(tmp_path):
    # Length buckets too: a resumed epoch must replay the same bucketed batches.
    cfg = tiny_cfg(dropout=0.1, schedule=dict(lr=5e-3, max_steps=40, eval_every=10, length_buckets=2))
    ref_model, ref, _ = _train(tmp_path / "a", cfg)

    def crash_at_25(step: int) -> None:
        if step == 25:
            raise Crash

    with pytest.raises(Crash):
        _train(tmp_path / "b", cfg, on_step=crash_at_25)
    model, result, _ = _train(tmp_path / "b", cfg)
    assert result.resumed_from == 20  # last checkpoint before the crash
    ref_state, state = model_state(ref_model), model_state(model)
    assert ref_state.keys() == state.keys()
    for k in ref_state:
        assert torch.equal(ref_state[k], state[k]), k

    def records(path: Path) -> list[dict]:
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    assert records(tmp_path / "a" / "train_log.jsonl") == \
        records(tmp_path / "b" / "train_log.jsonl")
    # A finished checkpoint is not retrained: it only restores the best weights.
    again, res2, _ = _train(tmp_path / "b", cfg)
    assert res2.steps == 40 and res2.resumed_from == 40
    assert all(torch.equal(v, model_state(again)[k]) for k, v in state.items())


def test_checkpoint_of_another_config_is_ignored(tmp_path):
    cfg = tiny_cfg(schedule=dict(max_steps=10, eval_every=10))
    _train(tmp_path, cfg)
    _, res, _ = _train(tmp_path, tiny_cfg(schedule=dict(max_steps=12, eval_every=6)))
    assert res.resumed_from == 0 and res.steps == 12


# --------------------------------------------------------------------------- the stage


def write_run(tmp: Path, *, n_users: int = 40, n_items: int = 30) -> Path:
    from recdata.synthetic import write_synthetic_run_data
    from recdata.split import SequentialSplit
    from tokenizer.sid import SemanticIds

    run = tmp / "run"
    write_synthetic_run_data(run, n_users=n_users, n_items=n_items, seed=0, with_images=False)
    split = SequentialSplit.from_run_dir(run)
    sizes = [6, 6, 4]
    codes = random_unique_codes(split.n_items, sizes, seed=0)
    SemanticIds(codes=codes, codebook_sizes=sizes, item_ids=split.item_ids).save(run)
    return run


def test_stage_writes_metrics_candidates_and_reloads(tmp_path):
    from generative_rec import inference, stage
    from recdata.split import SequentialSplit

    run = write_run(tmp_path)
    cfg = tiny_cfg(schedule=dict(max_steps=30, eval_every=15, lr=5e-3), decoding=dict(candidates_n=25))
    summary = stage.run(cfg=cfg, run_dir=run, seed=0, device="cpu")
    out = run / "retriever"
    for name in ("model.safetensors", "config.json", "train_log.jsonl", "metrics.json",
                 "candidates.parquet"):
        assert (out / name).exists(), name

    metrics = json.loads((out / "metrics.json").read_text())
    keys = {"recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20", "invalid@10"}
    assert keys <= set(metrics["overall"])
    assert set(metrics["strata"]) == {"popular", "middle", "long_tail", "cold"}
    assert metrics["overall"]["invalid@10"] == 0.0
    assert summary["test"]["ndcg@10"] == metrics["overall"]["ndcg@10"]

    split = SequentialSplit.from_run_dir(run)
    cands = pl.read_parquet(out / "candidates.parquet")
    assert cands.group_by("split").len().sort("split").rows() == [("test", split.n_users),
                                                                 ("valid", split.n_users)]
    test = cands.filter(pl.col("split") == "test").sort("user_idx")
    lengths = test["items"].list.len().to_list()
    assert all(n == 25 for n in lengths)  # 30 items in the catalogue, 25 requested
    flat = np.concatenate(test["items"].to_list())
    assert flat.min() >= 0 and flat.max() < split.n_items
    for scores in test["scores"].to_list():
        assert scores == sorted(scores, reverse=True)

    # The inference API reproduces the stage's test lists from raw histories.
    model, vocab, trie = inference.load_retriever(run, device="cpu")
    items, _ = inference.recommend_for_histories(
        model=model, vocab=vocab, trie=trie, histories=[s.tolist() for s in split.test_inputs],
        user_ids=split.user_ids, top_k=25, num_beams=cfg.decode_beams,
        max_history=cfg.history.max_length, normalize=cfg.normalize, priors=inference.load_priors(run),
    )
    assert items.tolist() == test["items"].to_list()
    with pytest.raises(DataError, match="outside"):
        inference.recommend_for_histories(model=model, vocab=vocab, trie=trie, histories=[[999]],
                                      user_ids=["x"], normalize=cfg.normalize)


def test_load_retriever_rejects_changed_ids(tmp_path):
    from generative_rec import inference, stage
    from recdata.split import SequentialSplit
    from tokenizer.sid import SemanticIds

    run = write_run(tmp_path)
    stage.run(cfg=tiny_cfg(schedule=dict(max_steps=5, eval_every=5)), run_dir=run, seed=0, device="cpu")
    split = SequentialSplit.from_run_dir(run)
    codes = random_unique_codes(split.n_items, [6, 6, 4], seed=1)
    SemanticIds(codes=codes, codebook_sizes=[6, 6, 4], item_ids=split.item_ids).save(run)
    with pytest.raises(DataError, match="re-run train-retriever"):
        inference.load_retriever(run, device="cpu")


def test_item_id_vectors_start_at_zero_train_and_grow_with_the_catalogue():
    from generative_rec.model import load_model_state, set_item_tokens

    vocab = SidVocab([4, 4, 2], n_user_buckets=4)
    tokens = vocab.encode_sids(np.array([[0, 1, 0], [3, 2, 1], [1, 1, 0]]))
    torch.manual_seed(0)
    plain = build_model(cfg=tiny_cfg(), vocab_size=vocab.vocab_size, item_tokens=tokens)
    torch.manual_seed(0)
    with_ids = build_model(cfg=tiny_cfg(history=dict(item_id_embedding=True)), vocab_size=vocab.vocab_size,
                           item_tokens=tokens)
    ids = torch.tensor([[vocab.vocab_size + 0, vocab.vocab_size + 2]])
    emb_plain, emb_ids = plain.encoder.embed_tokens, with_ids.encoder.embed_tokens
    assert torch.equal(emb_plain(ids), emb_ids(ids))  # zero rows: the SID embedding alone
    emb_ids(ids).sum().backward()
    assert float(emb_ids.item_id.weight.grad[[0, 2]].abs().sum()) > 0
    assert float(emb_ids.item_id.weight.grad[1].abs().sum()) == 0
    with torch.no_grad():
        emb_ids.item_id.weight[0] += 1.0
    saved = model_state(with_ids)
    assert "encoder.embed_tokens.item_id.weight" in saved
    more = vocab.encode_sids(np.array([[0, 1, 0], [3, 2, 1], [1, 1, 0], [2, 2, 1]]))
    set_item_tokens(with_ids, more)
    assert emb_ids.item_id.num_embeddings == 4
    assert float(emb_ids.item_id.weight[3].detach().abs().sum()) == 0  # a new item reads as its SID
    again = build_model(cfg=tiny_cfg(history=dict(item_id_embedding=True)), vocab_size=vocab.vocab_size,
                        item_tokens=tokens)
    load_model_state(again, saved)
    assert torch.equal(again.encoder.embed_tokens.item_id.weight, saved["encoder.embed_tokens.item_id.weight"])


def test_recency_vectors_start_at_zero_and_mark_the_most_recent_item():
    vocab = SidVocab([4, 4, 2], n_user_buckets=4)
    tokens = vocab.encode_sids(np.array([[0, 1, 0], [3, 2, 1], [1, 1, 0]]))
    torch.manual_seed(0)
    plain = build_model(cfg=tiny_cfg(history=dict(max_length=3)), vocab_size=vocab.vocab_size,
                        item_tokens=tokens)
    torch.manual_seed(0)
    model = build_model(cfg=tiny_cfg(history=dict(max_length=3, recency_embedding=True)),
                        vocab_size=vocab.vocab_size, item_tokens=tokens)
    emb = model.encoder.embed_tokens
    v = vocab.vocab_size
    # [user, item 0, item 2, item 1, item 0, eos] and a shorter row, right-padded.
    ids = torch.tensor([[2, v, v + 2, v + 1, v, 1], [3, v + 1, 1, 0, 0, 0]])
    assert torch.equal(plain.encoder.embed_tokens(ids), emb(ids))  # zero at start
    with torch.no_grad():
        emb.recency.weight.copy_(torch.arange(3.0)[:, None] + 1)
    added = (emb(ids) - plain.encoder.embed_tokens(ids))[..., 0]
    # Slot 0 = most recent item; items older than max_history share the last slot.
    assert torch.allclose(added, torch.tensor([[0.0, 3, 3, 2, 1, 0], [0, 1, 0, 0, 0, 0]]),
                          atol=1e-5)
    with pytest.raises(DataError, match="need history.encoding 'item'"):
        tiny_cfg(history=dict(encoding="token", recency_embedding=True))
