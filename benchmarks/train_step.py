"""Cost of one retriever training step, eager beside the faster paths, on a run's own data.

Builds the retriever of ``RUN``'s config (overridable with ``--set key=value``), draws the same
length-bucketed batches the trainer draws, and times forward + loss, backward and the AdamW
step over ``--steps`` steps after ``--warmup`` untimed ones, for each path:

* ``eager``: what ``train_retriever`` runs (the baseline);
* ``compile``: the scorer under ``torch.compile(dynamic=True)`` (inductor; needs a C++ compiler
  on CPU); the first steps, which compile, are reported apart;
* ``fused-adamw``: eager, with ``torch.optim.AdamW(fused=True)``.

Each path starts from the same initial weights and batches, so the losses of the timed steps
are printed too: a fast path that changes them is not the same training.

    python benchmarks/train_step.py runs/quality-amazon-beauty-cpu --steps 60
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

from generative_rec.data import epoch_order, length_bucketed
from generative_rec.model import build_model
from generative_rec.stage import make_retriever_data
from generative_rec.inference import retriever_config
from generative_rec.train import make_optimizer, step_loss, training_scorer
from recdata.errors import DataError
from recdata.overrides import config_with_overrides
from recdata.split import SequentialSplit
from tokenizer.sid import SemanticIds

PATHS = ("eager", "compile", "fused-adamw")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a run with data/ and tokenizer/")
    parser.add_argument("--steps", type=int, default=60, help="timed steps per path")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    parser.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated of {PATHS}")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="retriever config override, e.g. item_loss_weight=0.5")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args(argv)

    base = retriever_config(args.run_dir)
    try:
        cfg = config_with_overrides(type(base), args.set, "retriever", **base.to_dict())
    except DataError as exc:
        raise SystemExit(f"error: {exc}") from None
    split = SequentialSplit.from_run_dir(args.run_dir)
    sids = SemanticIds.from_run_dir(args.run_dir)
    data = make_retriever_data(split=split, codes=np.asarray(sids.codes, np.int64),
                               sizes=list(sids.codebook_sizes), cfg=cfg)
    train = data.examples["train"]
    order = epoch_order(len(train), epoch=0, seed=0)
    if cfg.schedule.length_buckets:
        order = length_bucketed(order, (train.history >= 0).sum(axis=1),
                                batch_size=cfg.schedule.batch_size, window=cfg.schedule.length_buckets, seed=0,
                                epoch=0)
    n = args.warmup + args.steps
    batches = [data.collator(train, order[i * cfg.schedule.batch_size:(i + 1) * cfg.schedule.batch_size])
               for i in range(n)]
    torch.manual_seed(0)
    initial = build_model(cfg=cfg, vocab_size=data.vocab.vocab_size,
                          item_tokens=data.collator.item_tokens)
    offsets = torch.tensor(data.vocab.offsets)
    trie = data.trie
    print(f"{args.run_dir}: batch {cfg.schedule.batch_size}, d_model {cfg.d_model}, "
          f"item_loss_weight {cfg.item_head.loss_weight}, {torch.get_num_threads()} threads")
    print("| path | first steps s | ms/step | forward+loss | backward | optimiser | "
          "mean loss |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    rows = []
    for path in [p for p in args.paths.split(",") if p]:
        if path not in PATHS:
            raise SystemExit(f"unknown path {path!r}; choose from {PATHS}")
        net = copy.deepcopy(initial)
        net.train()
        scorer = training_scorer(net, cfg=cfg, vocab=data.vocab)
        runner = torch.compile(scorer, dynamic=True) if path == "compile" else scorer
        optimizer = make_optimizer(net, lr=cfg.schedule.lr, weight_decay=cfg.schedule.weight_decay)
        if path == "fused-adamw":
            optimizer = torch.optim.AdamW(optimizer.param_groups, lr=cfg.schedule.lr, betas=(0.9, 0.98),
                                          eps=1e-8, fused=True)
        times = np.zeros((n, 3))
        losses = []
        for i, batch in enumerate(batches):
            t0 = time.perf_counter()
            loss = step_loss(runner, batch=batch, cfg=cfg, plain=scorer is net,
                             offsets=offsets, trie=trie, device="cpu", amp=None)
            t1 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            t2 = time.perf_counter()
            if cfg.schedule.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.schedule.grad_clip)
            optimizer.step()
            t3 = time.perf_counter()
            times[i] = (t1 - t0, t2 - t1, t3 - t2)
            losses.append(float(loss.detach()))
        timed = times[args.warmup:] * 1000
        row = {"path": path, "first_steps_s": round(float(times[:args.warmup].sum()), 1),
               "ms_per_step": round(float(timed.sum(1).mean()), 1),
               "forward_ms": round(float(timed[:, 0].mean()), 1),
               "backward_ms": round(float(timed[:, 1].mean()), 1),
               "optimizer_ms": round(float(timed[:, 2].mean()), 1),
               "mean_loss": round(float(np.mean(losses[args.warmup:])), 5)}
        rows.append(row)
        print(f"| {path} | {row['first_steps_s']} | {row['ms_per_step']} | {row['forward_ms']} | "
              f"{row['backward_ms']} | {row['optimizer_ms']} | {row['mean_loss']} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
