"""The item head's signals calibrated on training transitions held out of training
(``item_head.calibration_share``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from generative_rec.calibrate import GROUPS, calibrate, hold_out, signal_parts
from generative_rec.data import Examples
from tests.test_signals import _histories, _signals, _trained_tiny

torch.set_num_threads(1)


def _examples(lengths: list[int]) -> Examples:
    users = np.concatenate([np.full(n, u) for u, n in enumerate(lengths)]).astype(np.int64)
    targets = np.arange(len(users), dtype=np.int64)
    return Examples(users, np.zeros((len(users), 3), np.int32), targets)


def test_the_held_out_examples_are_users_last_and_every_user_keeps_one() -> None:
    train = _examples([3, 1, 4, 2, 5, 1, 2, 6])
    kept, held = hold_out(train, share=0.5, seed=0)
    last = {u: int(train.targets[train.users == u].max()) for u in np.unique(train.users)}
    # each held example is its user's last, from users with more than one example
    assert all(int(t) == last[int(u)] for u, t in zip(held.users, held.targets))
    assert len(held) == 3 and len(set(held.users.tolist())) == 3
    assert not {1, 5} & set(held.users.tolist())
    assert sorted(kept.targets.tolist() + held.targets.tolist()) == train.targets.tolist()
    assert set(kept.users.tolist()) == set(train.users.tolist())
    again, held2 = hold_out(train, share=0.5, seed=0)
    assert held2.targets.tolist() == held.targets.tolist()
    _, none = hold_out(train, share=0.0, seed=0)
    assert len(none) == 0


def test_the_groups_parts_sum_to_the_whole_term_and_leave_the_gate_as_it_was() -> None:
    signals, *_ = _signals()
    recent, query = _histories()
    targets = torch.tensor([3, 0, 7, 1, 2, 9])
    before = [p.detach().clone() for p in signals.gate.parameters()]
    parts = signal_parts(signals, query, recent, targets)
    whole = signals.catalogue_term(query, recent, targets=targets)
    assert len(parts) == len(GROUPS)
    assert torch.allclose(sum(parts), whole, atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(before, signals.gate.parameters()))


def test_the_stage_calibrates_on_held_out_transitions_and_folds_the_scales(tmp_path) -> None:
    from generative_rec.model import _item_embedding, item_query
    from generative_rec.signals import recent_from_inputs
    from generative_rec.stage import make_retriever_data

    run, split, cfg, model, vocab, trie = _trained_tiny(tmp_path, calibration_share=0.5)
    summary = json.loads((run / "retriever" / "config.json").read_text())["summary"]
    cal = summary["calibration"]
    assert set(GROUPS) <= set(cal) and cal["examples"] > 0
    assert cal["loss_after"] <= cal["loss_before"] + 1e-4
    # calibrate itself: the scales it fits are folded into the gate, group by group
    data = make_retriever_data(split=split, codes=trie.codes.numpy(),
                               sizes=list(vocab.codebook_sizes), cfg=cfg)
    examples = data.examples["valid"]
    b = data.collator(examples, np.arange(len(examples)))
    signals = model.item_signals
    with torch.no_grad():
        query = item_query(model, input_ids=b.input_ids, attention_mask=b.attention_mask)
    recent = recent_from_inputs(b.input_ids, b.attention_mask,
                                item_offset=_item_embedding(model).vocab_size, n=signals.history)
    parts = signal_parts(signals, query, recent, None)
    got = calibrate(model, examples=examples, collator=data.collator, device="cpu", seed=0,
                    steps=20)
    with torch.no_grad():
        folded = signals.catalogue_term(query, recent)
    expected = sum(got[g] * p for g, p in zip(GROUPS, parts))
    assert torch.allclose(folded, expected, rtol=1e-3, atol=1e-4)
    assert any(abs(got[g] - 1.0) > 1e-3 for g in GROUPS)  # the fit moved them


def test_calibration_needs_the_signals() -> None:
    from generative_rec.config import RetrieverConfig
    from recdata.errors import DataError

    with pytest.raises(DataError, match="calibration_share needs item_head.signals"):
        RetrieverConfig.from_dict({"history": {"encoding": "item"}, "output_softmax": "children",
                                   "item_head": {"loss_weight": 0.2, "calibration_share": 0.5}})
    base = {"history": {"encoding": "item"}, "output_softmax": "children",
            "item_head": {"loss_weight": 0.2, "signals": True}}
    on = RetrieverConfig.from_dict({**base, "item_head": {**base["item_head"],
                                                         "calibration_share": 0.5}})
    assert on.fingerprint() != RetrieverConfig.from_dict(base).fingerprint()
