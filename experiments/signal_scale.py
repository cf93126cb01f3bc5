"""Does training settle on smaller signal weights than held-out users reward? An analysis of a
run trained with the item head's learned signals (``item_head.signals``), no training.

The priors fitted on validation users still add both signals on top of the model (on Beauty
content weight 32 and transition 16 lift the model's own lists .0729 -> .0783, experiment 71),
so the gate the training loss learned weighs them less than validation users reward. One
explanation is memorisation: a training example's target has been the target of that very
history for every epoch, so its ID and SID rows already score it and the signals add little
there; a validation target's transition and interaction were never seen. If so, scaling the
signal term ``c · signals`` over the whole catalogue is best near c = 1 on training examples and
at c > 1 on validation users. The script scores, for the same users, each one's last training
example (its own transition and interaction left out of the counts, as in training) and its
validation example, over the whole catalogue (head + c · signals; c for all signals, for the
count alone, for the cosines alone), and prints NDCG@10 per c. History items are not excluded
and no prior is applied (the benchmark's protocol for the model's own lists).

    python experiments/signal_scale.py RUN --users 3000 --json out.json

With ``--fit-ce`` it also asks which training loss agrees with the metric (experiment 78): one
scale per signal group is fitted on half of the validation users by an objective (the
whole-catalogue cross-entropy; ``--fit-top M``: a softmax over the target and the M
highest-scored other items; ``--fit-ndcg T``: a smoothed NDCG; ``--fit-cap C [--fit-slope S]``:
each example's cross-entropy capped at C, its excess counting S times) and judged by NDCG@10
of the other half.

    python experiments/signal_scale.py RUN --users 2000 --skip-table --fit-ce --fit-cap 5 --fit-slope 0.1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from generative_rec.inference import load_retriever, retriever_config
from generative_rec.model import _item_embedding, item_query, item_signals
from generative_rec.priors import ndcg_at_10
from generative_rec.signals import ItemSignals, recent_from_inputs
from generative_rec.stage import make_retriever_data
from recdata.split import SequentialSplit
from tokenizer.sid import SemanticIds

SCALES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
GROUPS = ("count", "content", "popularity")


def group_rows(signals: ItemSignals) -> dict[str, list[int]]:
    """The gate's rows of each signal group."""
    return {"count": [0], "content": list(range(1, 1 + signals.history)),
            "popularity": [signals.history + 1]}


def signal_parts(signals: ItemSignals, query: torch.Tensor, recent: torch.Tensor,
                 targets: torch.Tensor | None) -> list[torch.Tensor]:
    """Each group's share of the catalogue term (``[B, N]`` per group, in ``GROUPS`` order;
    they sum to the whole term): the gate with every other group's rows zeroed."""
    rows = group_rows(signals)
    gate = signals.gate
    weight, bias = gate.weight.detach().clone(), gate.bias.detach().clone()
    parts = []
    with torch.no_grad():
        for name in GROUPS:
            gate.weight.zero_()
            gate.bias.zero_()
            gate.weight[rows[name]] = weight[rows[name]]
            gate.bias[rows[name]] = bias[rows[name]]
            parts.append(signals.catalogue_term(query, recent, targets=targets))
        gate.weight.copy_(weight)
        gate.bias.copy_(bias)
    return parts


def top_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, top: int) -> torch.Tensor:
    """Cross-entropy of the target against the ``top`` highest-scored other items only: the
    softmax of the head's top of the list, where NDCG@10 is decided, not of the whole catalogue.
    The candidates are picked without gradient, the target's own score is kept apart."""
    masked = logits.detach().scatter(1, targets[:, None], float("-inf"))
    rivals = torch.topk(masked, top, dim=1).indices
    pool = torch.cat([logits.gather(1, targets[:, None]), logits.gather(1, rivals)], dim=1)
    return torch.nn.functional.cross_entropy(pool, torch.zeros_like(targets))


def approx_ndcg_loss(logits: torch.Tensor, targets: torch.Tensor,
                     temperature: float) -> torch.Tensor:
    """Minus the mean smoothed NDCG of the targets: each target's rank is 1 plus the sum over
    the other items of sigmoid((s_j - s_target) / temperature), so an example whose target is
    far down the list has almost no gradient, as it has no NDCG to win."""
    own = logits.gather(1, targets[:, None])
    above = torch.sigmoid((logits - own) / temperature)
    rank = 1.0 + above.sum(1) - 0.5  # the target's own sigmoid(0) = .5
    return -(1.0 / torch.log2(1.0 + rank)).mean()


def fitted_scales(model, collator, examples, *, steps: int = 300, batch: int = 256,
                         seed: int = 0, top: int | None = None,
                         temperature: float | None = None,
                         cap: float | None = None, slope: float = 0.0) -> dict[str, float]:
    """One scale per signal group fitted on ``examples`` (Adam on log-scales) by one objective:
    the head's cross-entropy over the whole catalogue, or over the target and the ``top``
    highest-scored items, or a smoothed NDCG (``temperature``), or the cross-entropy capped at
    ``cap`` (the excess counting ``slope``); with the objective's value before and after."""
    signals = item_signals(model)
    emb = _item_embedding(model)
    table = emb.head_table().detach()
    queries, recents = [], []
    with torch.no_grad():
        for lo in range(0, len(examples), batch):
            b = collator(examples, np.arange(lo, min(lo + batch, len(examples))))
            queries.append(item_query(model, input_ids=b.input_ids, attention_mask=b.attention_mask))
            recents.append(recent_from_inputs(b.input_ids, b.attention_mask,
                                              item_offset=emb.vocab_size, n=signals.history))
    query, recent = torch.cat(queries), torch.cat(recents)
    targets = torch.as_tensor(examples.targets)
    log_scale = torch.zeros(len(GROUPS), requires_grad=True)
    opt = torch.optim.Adam([log_scale], lr=0.05)
    gen = torch.Generator().manual_seed(seed)

    def loss_of(index: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        parts = signal_parts(signals, query[index], recent[index], None)
        logits = query[index] @ table.T + sum(s * p for s, p in zip(scale, parts))
        if temperature:
            return approx_ndcg_loss(logits, targets[index], temperature)
        if top:
            return top_cross_entropy(logits, targets[index], top)
        ce = torch.nn.functional.cross_entropy(logits, targets[index], reduction="none")
        # Capped: an example whose target is far down the list has no NDCG to win there.
        return torch.where(ce <= cap, ce, cap + slope * (ce - cap)).mean() if cap else ce.mean()

    probe = torch.randperm(len(examples), generator=gen)[: 4 * batch]
    with torch.no_grad():
        before = float(loss_of(probe, torch.ones(len(GROUPS))))
    for _ in range(steps):
        opt.zero_grad()
        loss_of(torch.randint(len(examples), (batch,), generator=gen), log_scale.exp()).backward()
        opt.step()
    scale = log_scale.detach().exp()
    with torch.no_grad():
        after = float(loss_of(probe, scale))
    out = {name: round(float(s), 4) for s, name in zip(scale, GROUPS)}
    return {**out, "loss_before": round(before, 4), "loss_after": round(after, 4)}


def last_training_examples(users: np.ndarray) -> np.ndarray:
    """Index of each user's last training example (examples are in sequence order per user)."""
    return len(users) - 1 - np.unique(users[::-1], return_index=True)[1]


def top10(model, collator, examples, *, part: str, scales: tuple[float, ...],
          with_targets: bool, batch: int = 128) -> dict[float, np.ndarray]:
    """``{c: [E, 10]}`` whole-catalogue top 10 by ``head + c · signals`` where ``part`` picks the
    signals scaled (``all``, ``count``, ``content``); the rest stay at 1."""
    signals = item_signals(model)
    emb = _item_embedding(model)
    table = emb.head_table()
    out = {c: [] for c in scales}
    with torch.no_grad():
        for lo in range(0, len(examples), batch):
            b = collator(examples, np.arange(lo, min(lo + batch, len(examples))))
            query = item_query(model, input_ids=b.input_ids, attention_mask=b.attention_mask)
            recent = recent_from_inputs(b.input_ids, b.attention_mask,
                                        item_offset=emb.vocab_size, n=signals.history)
            parts = dict(zip(GROUPS, signal_parts(signals, query, recent,
                                                  b.targets if with_targets else None)))
            head = query @ table.T
            for c in scales:
                score = head + sum((c if part in ("all", k) else 1.0) * v for k, v in parts.items())
                out[c].append(torch.topk(score, 10, dim=1).indices.numpy())
    return {c: np.concatenate(v) for c, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--fit-ce", action="store_true",
                        help="also fit one scale per signal group by the head's cross-entropy "
                             "(or the objective set below) on half of the validation users and print NDCG@10 of the other "
                             "half at scale 1 and at the fitted scales")
    parser.add_argument("--fit-top", type=int, default=0, metavar="M",
                        help="with --fit-ce: the softmax over the target and the M highest-scored "
                             "other items instead of the whole catalogue")
    parser.add_argument("--fit-ndcg", type=float, default=0.0, metavar="T",
                        help="with --fit-ce: maximise a smoothed NDCG (sigmoid rank, temperature "
                             "T) instead of a cross-entropy")
    parser.add_argument("--fit-cap", type=float, default=0.0, metavar="C",
                        help="with --fit-ce: each example's cross-entropy capped at C")
    parser.add_argument("--fit-slope", type=float, default=0.0,
                        help="with --fit-cap: the excess above the cap counts this much")
    parser.add_argument("--skip-table", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    cfg = retriever_config(args.run_dir)
    model, _, _ = load_retriever(args.run_dir)
    if item_signals(model) is None:
        raise SystemExit("error: the run's retriever was trained without item_head.signals")
    split = SequentialSplit.from_run_dir(args.run_dir)
    sids = SemanticIds.from_run_dir(args.run_dir)
    data = make_retriever_data(split=split, codes=np.asarray(sids.codes, np.int64),
                               sizes=list(sids.codebook_sizes), cfg=cfg)
    train, valid = data.examples["train"], data.examples["valid"]
    last = last_training_examples(train.users)
    rng = np.random.default_rng(args.seed)
    users = np.sort(rng.choice(train.users[last], size=min(args.users, len(last)), replace=False))
    train_ex = train.subset(last[np.searchsorted(train.users[last], users)])
    valid_ex = valid.subset(np.searchsorted(valid.users, users))
    assert (train_ex.users == users).all() and (valid_ex.users == users).all()
    rows = []
    print(f"{len(users)} users; NDCG@10 of head + c · signals over the whole catalogue")
    print("| scaled | examples | " + " | ".join(f"c={c:g}" for c in SCALES) + " |")
    for part in () if args.skip_table else ("all", "count", "content"):
        for name, ex, own in (("last training", train_ex, True), ("validation", valid_ex, False)):
            lists = top10(model, data.collator, ex, part=part, scales=SCALES, with_targets=own)
            ndcg = {c: ndcg_at_10(lists[c], ex.targets) for c in SCALES}
            rows.append({"scaled": part, "examples": name,
                         "ndcg@10": {f"{c:g}": round(v, 4) for c, v in ndcg.items()}})
            print(f"| {part} | {name} | " + " | ".join(f"{ndcg[c]:.4f}" for c in SCALES) + " |",
                  flush=True)
    fit = None
    if args.fit_ce:
        half = np.arange(len(valid_ex)) % 2 == 0
        fit_on, judge = valid_ex.subset(np.flatnonzero(half)), valid_ex.subset(np.flatnonzero(~half))
        before = ndcg_at_10(top10(model, data.collator, judge, part="all", scales=(1.0,),
                                  with_targets=False)[1.0], judge.targets)
        fit = fitted_scales(model, data.collator, fit_on, top=args.fit_top or None,
                                   temperature=args.fit_ndcg or None, cap=args.fit_cap or None,
                                   slope=args.fit_slope)
        gate = item_signals(model).gate
        with torch.no_grad():  # fold the fitted scales into the gate, group by group
            for name, rows in group_rows(item_signals(model)).items():
                gate.weight[rows] *= fit[name]
                gate.bias[rows] *= fit[name]
        after = ndcg_at_10(top10(model, data.collator, judge, part="all", scales=(1.0,),
                                 with_targets=False)[1.0], judge.targets)
        objective = (f"approx-ndcg T={args.fit_ndcg}" if args.fit_ndcg else
                     f"softmax over {args.fit_top or 'catalogue'}"
                     + (f", capped at {args.fit_cap} (slope {args.fit_slope})" if args.fit_cap
                        else ""))
        fit.update({"objective": objective, "fitted_users": int(len(fit_on)),
                    "judged_users": int(len(judge)),
                    "ndcg@10_before": round(before, 4), "ndcg@10_after": round(after, 4)})
        print(f"scales fitted on {len(fit_on)} validation users: {fit}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"run": str(args.run_dir), "users": int(len(users)),
                                         "rows": rows, "fit_ce": fit}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
