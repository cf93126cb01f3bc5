"""Stage 2: soft indexing reaches the tokenizer, IDs are re-assigned uniquely into stage2/ (the
tokenize stage's table is never rewritten), adopted only when validation improves, and dropped
when stage 2 is switched off."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_retriever import tiny_cfg  # noqa: E402

torch.set_num_threads(1)

STAGE2 = dict(enabled=True, steps=6, continue_steps=10, tokenizer_lr=1e-3)


def _tokenized_run(root: Path, name: str) -> Path:
    """Synthetic data, random embeddings with cluster structure, a tiny fitted tokenizer."""
    from recdata.io import save_tensors
    from recdata.synthetic import write_synthetic_run_data
    from tokenizer.config import TokenizerConfig
    from tokenizer.stage import run as tokenize

    run = root / name
    write_synthetic_run_data(run, n_users=40, n_items=36, seed=0, with_images=False)
    rng = np.random.default_rng(0)
    n = 36
    centres = rng.normal(size=(6, 16))
    text = centres[np.arange(n) % 6] + 0.3 * rng.normal(size=(n, 16))
    image = rng.normal(size=(n, 12))
    save_tensors(run / "embeddings" / "text.safetensors",
                 {"embeddings": torch.tensor(text, dtype=torch.float32),
                  "mask": torch.ones(n, dtype=torch.uint8)})
    save_tensors(run / "embeddings" / "image.safetensors",
                 {"embeddings": torch.tensor(image, dtype=torch.float32),
                  "mask": torch.tensor(rng.random(n) < 0.8, dtype=torch.uint8)})
    cfg = TokenizerConfig.from_dict({
        "name": name, "codebook_size": 8, "epochs": 4, "batch_size": 16, "kmeans_iters": 4,
        "mmq": {"latent_dim": 8, "expert_hidden": 16, "decoder_hidden": 16, "gate_hidden": 8,
                "n_shared": 1, "n_text": 1, "n_vision": 1},
        "rq": {"hidden": [16], "latent_dim": 8, "levels": 2}})
    tokenize(cfg=cfg, run_dir=run, seed=0, device="cpu")
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stage2")
    return {name: _tokenized_run(root, name) for name in ("mmq", "rqvae")}


def _setup(run: Path, **overrides):
    from generative_rec.model import build_model
    from generative_rec.stage import make_retriever_data
    from recdata.split import SequentialSplit
    from tokenizer.registry import load_tokenizer
    from tokenizer.inputs import load_inputs
    from tokenizer.sid import SemanticIds

    cfg = tiny_cfg(stage2=STAGE2, **overrides)
    split = SequentialSplit.from_run_dir(run)
    sids = SemanticIds.from_run_dir(run)
    data = make_retriever_data(split=split, codes=sids.codes, sizes=sids.codebook_sizes, cfg=cfg)
    torch.manual_seed(0)
    model = build_model(cfg=cfg, vocab_size=data.vocab.vocab_size,
                        item_tokens=data.collator.item_tokens)
    return cfg, data, model, load_tokenizer(run), load_inputs(run)


@pytest.mark.parametrize("history_encoding,output_softmax",
                         [("item", "position"), ("token", "vocab")])
@pytest.mark.parametrize("name", ["mmq", "rqvae"])
def test_soft_lookup_is_exact_and_gradient_reaches_tokenizer(runs, name, history_encoding,
                                                             output_softmax):
    from generative_rec.model import (PositionHeads, position_loss, retrieval_loss, shift_right,
                                      sid_logits)
    from generative_rec.stage2 import joint_loss

    cfg, data, model, tokenizer, inputs = _setup(runs[name], history=dict(encoding=history_encoding),
                                                 output_softmax=output_softmax)
    train = data.examples["train"]
    batch = data.collator(train, np.arange(min(24, len(train))))
    item_tokens = torch.as_tensor(data.collator.item_tokens)
    losses = joint_loss(model=model, tokenizer=tokenizer, inputs=inputs, batch=batch,
                        item_tokens=item_tokens, vocab=data.vocab, cfg=cfg)
    # Forward pass: soft indexing is exactly the integer lookup of the stage-1 table.
    vocab = data.vocab
    scorer = model if output_softmax == "vocab" else PositionHeads(
        model, offsets=vocab.offsets, sizes=tuple(vocab.codebook_sizes))
    logits = sid_logits(scorer, input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                        decoder_input_ids=shift_right(batch.labels))
    if output_softmax == "vocab":
        hard = retrieval_loss(logits, batch.labels)
    else:
        hard = position_loss(logits, batch.labels - torch.tensor(vocab.offsets))
    assert float(losses["retrieval"].detach()) == pytest.approx(float(hard.detach()), rel=1e-5)
    # Backward pass: the retrieval loss alone has a gradient on the tokenizer's weights.
    params = [p for p in tokenizer.parameters() if p.requires_grad]
    grads = torch.autograd.grad(losses["retrieval"], params, allow_unused=True)
    norms = [float(g.norm()) for g in grads if g is not None]
    assert norms and max(norms) > 0


@pytest.mark.parametrize("decoder_start", ["token", "last"])
def test_soft_lookup_keeps_the_recency_vectors_and_the_start(runs, decoder_start):
    from generative_rec.model import PositionHeads, position_loss, shift_right, sid_logits
    from generative_rec.stage2 import joint_loss

    cfg, data, model, tokenizer, inputs = _setup(runs["mmq"], history=dict(recency_embedding=True),
                                                 output_softmax="position",
                                                 decoder_start=decoder_start)
    with torch.no_grad():
        model.encoder.embed_tokens.recency.weight.normal_()
    train = data.examples["train"]
    batch = data.collator(train, np.arange(min(24, len(train))))
    losses = joint_loss(model=model, tokenizer=tokenizer, inputs=inputs, batch=batch,
                        item_tokens=torch.as_tensor(data.collator.item_tokens),
                        vocab=data.vocab, cfg=cfg)
    scorer = PositionHeads(model, offsets=data.vocab.offsets,
                           sizes=tuple(data.vocab.codebook_sizes))
    logits = sid_logits(scorer, input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                        decoder_input_ids=shift_right(batch.labels))
    hard = position_loss(logits, batch.labels - torch.tensor(data.vocab.offsets))
    assert float(losses["retrieval"].detach()) == pytest.approx(float(hard.detach()), rel=1e-5)


def test_carry_over_embeddings_keeps_rows_per_position():
    from generative_rec.model import build_model
    from generative_rec.stage2 import carry_over_embeddings
    from generative_rec.vocab import SidVocab

    cfg = tiny_cfg()
    old, new = SidVocab([4, 4, 2], n_user_buckets=8), SidVocab([4, 4, 3], n_user_buckets=8)
    tokens = old.encode_sids(np.array([[0, 1, 0], [3, 2, 1]]))
    model = build_model(cfg=cfg, vocab_size=old.vocab_size, item_tokens=tokens)
    new_tokens = new.encode_sids(np.array([[0, 1, 2], [3, 2, 1]]))
    moved = carry_over_embeddings(model=model, old=old, new=new, cfg=cfg, item_tokens=new_tokens)
    a, b = model.shared.weight, moved.shared.weight
    assert b.shape[0] == new.vocab_size
    assert torch.equal(a[: old.offsets[2] + 2], b[: new.offsets[2] + 2])
    assert torch.equal(model.lm_head.weight[:5], moved.lm_head.weight[:5])  # still tied
    # The item-level encoder reads the new table.
    assert moved.encoder.embed_tokens.item_tokens.tolist() == new_tokens.tolist()
    same = carry_over_embeddings(model=model, old=old, new=old, cfg=cfg, item_tokens=tokens[::-1])
    assert same is model
    assert model.encoder.embed_tokens.item_tokens.tolist() == tokens[::-1].tolist()


@pytest.mark.parametrize("name", ["mmq", "rqvae"])
def test_stage2_end_to_end_then_switch_off(runs, tmp_path, name):
    from generative_rec import inference, stage
    from generative_rec.stage import sid_fingerprint
    from generative_rec.trie import SidTrie
    from tokenizer.sid import SemanticIds, final_ids_dir

    run = tmp_path / name
    shutil.copytree(runs[name], run)
    before = SemanticIds.from_run_dir(run)
    h1 = sid_fingerprint(before.codes, before.codebook_sizes)
    tok = run / "tokenizer"
    tokenize_files = {p.name: p.read_bytes() for p in sorted(tok.iterdir())}
    cfg = tiny_cfg(stage2=STAGE2, schedule=dict(max_steps=10, eval_every=10, lr=5e-3))
    summary = stage.run(cfg=cfg, run_dir=run, seed=0, device="cpu")

    # Stage 2 writes its own folder; the tokenize stage's artefacts are left byte for byte.
    assert {p.name: p.read_bytes() for p in sorted(tok.iterdir())} == tokenize_files
    s2 = run / "stage2"
    for name_ in ("model.safetensors", "config.json", "semantic_ids.parquet", "metrics.json",
                  "stage2.json"):
        assert (s2 / name_).exists(), name_
    # Adopted because it served validation users better than the stage-1 IDs did.
    scores = summary["stage2"]["valid_ndcg@10"]
    assert summary["stage2"]["adopted"] is True and scores["stage2"] > scores["stage1"]
    assert final_ids_dir(run) == s2
    after = SemanticIds.from_run_dir(run)  # the final table: validates uniqueness and ranges
    assert len(np.unique(after.codes, axis=0)) == after.n_items
    SidTrie.from_codes(after.codes)  # rejects duplicates
    assert summary["stage2"]["final_sid_hash"] == sid_fingerprint(after.codes, after.codebook_sizes)
    assert summary["stage2"]["stage1_sid_hash"] == h1
    # Fine-tuning moved some items to other codes: a stage 2 that did nothing would fail here.
    changed = int((after.codes[:, :-1] != before.codes[:, :-1]).any(axis=1).sum())
    assert changed > 0 and summary["stage2"]["final_sid_hash"] != h1
    assert (run / "retriever" / "metrics_stage1.json").exists()
    log = [json.loads(x) for x in (run / "retriever" / "train_log.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in log][0] == "train"
    assert {"stage2_joint", "stage2_continue"} <= {r["phase"] for r in log}
    inference.load_retriever(run, device="cpu")  # the final IDs match the saved retriever

    # stage2/ is trusted only with its marker, and only for the tokenizer/ table it started
    # from: a run that died mid-write, or a table re-written by `tokenize` since, falls back.
    marker = json.loads((s2 / "stage2.json").read_text())
    (s2 / "stage2.json").write_text(json.dumps({**marker, "based_on": "another table"}))
    assert final_ids_dir(run) == tok
    (s2 / "stage2.json").unlink()
    restored = SemanticIds.from_run_dir(run)
    assert sid_fingerprint(restored.codes, restored.codebook_sizes) == h1
    stage.run(cfg=cfg, run_dir=run, seed=0, device="cpu")  # redo stage 2: same result
    again = SemanticIds.from_run_dir(run)
    assert sid_fingerprint(again.codes, again.codebook_sizes) == summary["stage2"]["final_sid_hash"]

    # Switching stage 2 off removes its folder: the stage-1 table is the run's again.
    cfg_off = tiny_cfg(schedule=dict(max_steps=10, eval_every=10, lr=5e-3))
    stage.run(cfg=cfg_off, run_dir=run, seed=0, device="cpu")
    restored = SemanticIds.from_run_dir(run)
    assert sid_fingerprint(restored.codes, restored.codebook_sizes) == h1
    assert not s2.exists()
    assert {p.name: p.read_bytes() for p in sorted(tok.iterdir())} == tokenize_files
    inference.load_retriever(run, device="cpu")


def _shaken_stage2(runs, tmp_path, **stage2):
    """Stage 2 with a tokenizer shaken hard (large learning rates) on a copy of the mmq run →
    (run dir, fingerprint of its stage-1 table, stage summary)."""
    from generative_rec import inference, stage
    from generative_rec.stage import sid_fingerprint
    from tokenizer.sid import SemanticIds

    run = tmp_path / "mmq"
    shutil.copytree(runs["mmq"], run)
    before = SemanticIds.from_run_dir(run)
    cfg = tiny_cfg(stage2=dict(enabled=True, steps=20, tokenizer_lr=0.5, retriever_lr=0.5,
                               **stage2), schedule=dict(max_steps=60, eval_every=60, lr=1e-2))
    summary = stage.run(cfg=cfg, run_dir=run, seed=0, device="cpu")
    return run, sid_fingerprint(before.codes, before.codebook_sizes), summary


def _stage1_table_kept(run, h1):
    from generative_rec.stage import sid_fingerprint
    from tokenizer.sid import SemanticIds

    after = SemanticIds.from_run_dir(run)
    return sid_fingerprint(after.codes, after.codebook_sizes) == h1


def test_stage2_that_does_not_beat_stage1_is_not_adopted(runs, tmp_path):
    """A tokenizer shaken hard and no continued training serves validation users worse: the run
    keeps the stage-1 IDs and the stage-1 retriever."""
    from generative_rec import inference, stage

    run, h1, summary = _shaken_stage2(runs, tmp_path, continue_steps=0, max_collision_increase=1.0)
    scores = summary["stage2"]["valid_ndcg@10"]
    assert summary["stage2"]["adopted"] is False and scores["stage2"] <= scores["stage1"]
    assert summary["stage2"]["final_sid_hash"] != h1  # stage 2 did move items...
    assert _stage1_table_kept(run, h1)  # ...but the run's table is the stage-1 one
    marker = json.loads((run / "stage2" / "stage2.json").read_text())
    assert marker["adopted"] is False
    inference.load_retriever(run, device="cpu")  # the saved retriever reads the stage-1 IDs
    # The kept retriever's own validation lists (before the priors) are stage 1's.
    fit = json.loads((run / "retriever" / "priors.json").read_text())
    assert fit["valid_ndcg@10_model"] == pytest.approx(scores["stage1"], abs=1e-6)


def test_stage2_ids_that_collapse_are_rejected_before_continued_training(runs, tmp_path):
    """A codebook shaken into more collisions than stage 1's is rejected as soon as
    the IDs are re-assigned: no continued training, no validation decode of it, and the run
    keeps the stage-1 IDs and retriever."""
    run, h1, summary = _shaken_stage2(runs, tmp_path, continue_steps=50)
    s2 = summary["stage2"]
    stage1_rate = json.loads((run / "tokenizer" / "metrics.json").read_text())["collision_rate"]
    assert s2["final_tokenizer"]["collision_rate"] > stage1_rate
    assert s2["rejected"] == "collision_rate" and s2["adopted"] is False
    assert s2["valid_ndcg@10"]["stage2"] is None
    phases = {json.loads(line)["phase"] for line in
              (run / "retriever" / "train_log.jsonl").read_text().splitlines()}
    assert "stage2_continue" not in phases
    assert _stage1_table_kept(run, h1)
    marker = json.loads((run / "stage2" / "stage2.json").read_text())
    assert marker["adopted"] is False and marker["rejected"] == "collision_rate"
    fit = json.loads((run / "retriever" / "priors.json").read_text())
    assert fit["valid_ndcg@10_model"] == pytest.approx(s2["valid_ndcg@10"]["stage1"], abs=1e-6)


def _reference_retrieval_loss(model, tokenizer, inputs, batch, item_tokens, vocab, tau):
    """Stage 2's retrieval loss the slow, obvious way: one item and one example at a time, each
    history item embedded as the scaled sum over SID positions of ``soft_p @ E_p`` (the hard
    row for the collision token), teacher forcing and labels from the target's soft argmax."""
    import torch.nn.functional as F

    from generative_rec.model import item_token_offset

    E = model.shared.weight
    L, offset = vocab.sid_length, item_token_offset(model)

    def soft_rows(item):
        return [s[0] for s in tokenizer.soft_codes(*inputs.rows(torch.tensor([item])), tau=tau)]

    def item_vector(item):
        soft, vec = soft_rows(item), 0
        for p in range(L):
            lo, hi = vocab.position_range(p)
            vec = vec + (soft[p] @ E[lo:hi] if p < len(soft) else E[int(item_tokens[item, p])])
        return vec * L ** -0.5

    total = 0
    for b in range(len(batch.targets)):
        enc = torch.stack([item_vector(t - offset) if t >= offset else E[t]
                           for t in batch.input_ids[b].tolist()])
        target = int(batch.targets[b])
        soft = soft_rows(target)
        tokens = [vocab.position_range(p)[0] + int(soft[p].argmax()) if p < len(soft)
                  else int(item_tokens[target, p]) for p in range(L)]
        dec = torch.stack([E[vocab.pad_id]] + [E[t] for t in tokens[:-1]])
        logits = model(inputs_embeds=enc[None], attention_mask=batch.attention_mask[b:b + 1],
                       decoder_inputs_embeds=dec[None], use_cache=False).logits[0]
        for p in range(L):
            lo, hi = vocab.position_range(p)
            total = total - F.log_softmax(logits[p, lo:hi].float(), -1)[tokens[p] - lo]
    return total / (len(batch.targets) * L)


@pytest.mark.parametrize("name", ["mmq", "rqvae"])
def test_joint_loss_and_its_gradients_match_the_slow_reference(runs, name):
    """The batched soft lookup (unique items, gathered rows) against the per-item reference,
    on the loss and on the gradients of both the tokenizer and the retriever."""
    from generative_rec.stage2 import joint_loss

    cfg, data, model, tokenizer, inputs = _setup(runs[name], history=dict(encoding="item"),
                                                 output_softmax="position")
    # Move the tokenizer off its stage-1 optimum so that some argmax differs from the table.
    with torch.no_grad():
        for p in tokenizer.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    train = data.examples["train"]
    batch = data.collator(train, np.arange(min(12, len(train))))
    item_tokens = torch.as_tensor(data.collator.item_tokens)
    params = [p for p in list(tokenizer.parameters()) + list(model.parameters())
              if p.requires_grad]
    fast = joint_loss(model=model, tokenizer=tokenizer, inputs=inputs, batch=batch,
                      item_tokens=item_tokens, vocab=data.vocab, cfg=cfg)["retrieval"]
    slow = _reference_retrieval_loss(model, tokenizer, inputs, batch, item_tokens, data.vocab,
                                     cfg.stage2.tau)
    assert float(fast.detach()) == pytest.approx(float(slow.detach()), rel=1e-5)
    g_fast = torch.autograd.grad(fast, params, allow_unused=True)
    g_slow = torch.autograd.grad(slow, params, allow_unused=True)
    compared = 0
    for a, b in zip(g_fast, g_slow):
        if a is None or b is None:
            assert a is None and b is None or float((a if a is not None else b).abs().max()) == 0
            continue
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
        compared += 1
    assert compared > 10
