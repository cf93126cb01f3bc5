"""The item head's signals calibrated on transitions the model never trained on
(``item_head.calibration_share``).

The priors fitted on validation users still add both signals on top of a model that learned
them (on Beauty content weight 32 and transition 16 lift the model's own lists .0729 -> .0783,
experiment 71): the gate weighs the signals less than held-out users reward. A training
example's target has been that history's target in every epoch, so its ID and SID rows already
score it there and the signals look less useful than on a transition never seen. So the last
training transition of a share of users is kept out of training, and after training one scale
per signal group (the successor count, the content cosines, the popularity) is fitted on them
by the head's own softmax loss over the whole catalogue, then folded into the gate. The scales
are part of the model: its own lists use them, and the priors are fitted after them.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from generative_rec.data import Collator, Examples
from generative_rec.model import _item_embedding, item_query, item_signals, unwrap
from generative_rec.signals import ItemSignals, recent_from_inputs

log = logging.getLogger(__name__)

GROUPS = ("count", "content", "popularity")


def hold_out(train: Examples, *, share: float, seed: int) -> tuple[Examples, Examples]:
    """``(kept, held)``: the last training example of a seeded ``share`` of the users that have
    more than one, and the examples without them."""
    users = np.asarray(train.users)
    last = len(users) - 1 - np.unique(users[::-1], return_index=True)[1]
    counts = np.bincount(users, minlength=int(users.max()) + 1 if len(users) else 0)
    eligible = last[counts[users[last]] > 1]  # a user keeps at least one training example
    rng = np.random.default_rng(seed)
    n = int(round(share * len(eligible)))
    held = np.sort(rng.choice(eligible, size=n, replace=False)) if n else np.zeros(0, np.int64)
    keep = np.ones(len(users), bool)
    keep[held] = False
    return train.subset(np.flatnonzero(keep)), train.subset(held)


def _group_rows(signals: ItemSignals) -> dict[str, list[int]]:
    return {"count": [0], "content": list(range(1, 1 + signals.history)),
            "popularity": [signals.history + 1]}


def signal_parts(signals: ItemSignals, query: torch.Tensor, recent: torch.Tensor,
                 targets: torch.Tensor | None) -> list[torch.Tensor]:
    """Each group's share of the catalogue term (``[B, N]`` per group, in ``GROUPS`` order;
    they sum to the whole term): the gate with every other group's rows zeroed."""
    gate = signals.gate
    weight, bias = gate.weight.detach().clone(), gate.bias.detach().clone()
    parts = []
    with torch.no_grad():
        for name in GROUPS:
            rows = _group_rows(signals)[name]
            gate.weight.zero_()
            gate.bias.zero_()
            gate.weight[rows] = weight[rows]
            gate.bias[rows] = bias[rows]
            parts.append(signals.catalogue_term(query, recent, targets=targets))
        gate.weight.copy_(weight)
        gate.bias.copy_(bias)
    return parts


def calibrate(model: torch.nn.Module, *, examples: Examples, collator: Collator, device: str,
              seed: int, steps: int = 300, batch: int = 256, lr: float = 0.05) -> dict[str, float]:
    """Fit one scale per signal group on ``examples`` (held out of training) by the item head's
    cross-entropy over the whole catalogue, fold them into the gate, and return them with the
    loss before and after."""
    signals = item_signals(model)
    t5 = unwrap(model)
    if signals is None or not len(examples):
        return {}
    table = _item_embedding(t5).head_table().detach()
    queries, recents = [], []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for lo in range(0, len(examples), batch):
            b = collator(examples, np.arange(lo, min(lo + batch, len(examples)))).to(device)
            queries.append(item_query(model, input_ids=b.input_ids, attention_mask=b.attention_mask))
            recents.append(recent_from_inputs(b.input_ids, b.attention_mask,
                                              item_offset=_item_embedding(t5).vocab_size,
                                              n=signals.history))
    query, recent = torch.cat(queries), torch.cat(recents)
    targets = torch.as_tensor(examples.targets, device=device)
    log_scale = torch.zeros(len(GROUPS), device=device, requires_grad=True)
    opt = torch.optim.Adam([log_scale], lr=lr)
    gen = torch.Generator().manual_seed(seed)

    def loss_of(index: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        q, r, t = query[index], recent[index], targets[index]
        parts = signal_parts(signals, q, r, t)
        logits = q @ table.T + sum(s * p for s, p in zip(scale, parts))
        return torch.nn.functional.cross_entropy(logits, t)

    probe = torch.randperm(len(examples), generator=gen)[: 4 * batch].to(device)
    with torch.no_grad():
        before = float(loss_of(probe, torch.ones(len(GROUPS), device=device)))
    for _ in range(steps):
        index = torch.randint(len(examples), (batch,), generator=gen).to(device)
        opt.zero_grad()
        loss_of(index, log_scale.exp()).backward()
        opt.step()
    scale = log_scale.detach().exp()
    with torch.no_grad():
        after = float(loss_of(probe, scale))
        rows = _group_rows(signals)
        for s, name in zip(scale, GROUPS):
            signals.gate.weight[rows[name]] *= s
            signals.gate.bias[rows[name]] *= s
    model.train(was_training)
    out = {name: round(float(s), 4) for s, name in zip(scale, GROUPS)}
    out.update({"loss_before": round(before, 4), "loss_after": round(after, 4),
                "examples": int(len(examples))})
    log.info("signals calibrated on %d held-out transitions: scales %s, loss %.4f -> %.4f",
             len(examples), {k: out[k] for k in GROUPS}, before, after)
    return out
