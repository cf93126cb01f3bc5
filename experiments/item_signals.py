"""What the item head's learned signals (``item_head.signals``) do at decoding, on validation
users of a run trained with them.

Rows, all on the same model and the same validation users (test users are never looked at):
the beam re-ordered by ``log p(SID) + head`` with the signals' candidate channel at several
widths (0 = the beam alone), the same with the signals' gate zeroed (what the head alone gives),
and the head plus signals over the whole catalogue (no beam: the limit of the channel). It also
prints the gate's mean weight per signal over the validation users.

    python experiments/item_signals.py RUN --widths 0,10,20 --json out.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from generative_rec.content import ContentVectors
from generative_rec.priors import fit_priors
from generative_rec.transitions import recent_items
from generative_rec.inference import load_retriever, retriever_config
from generative_rec.model import item_query, item_signals, signal_term
from generative_rec.stage import make_retriever_data
from generative_rec.train import decode_examples, retrieval_metrics
from recdata.split import SequentialSplit
from tokenizer.sid import SemanticIds

SIGNALS = ("count", "cos_1", "cos_2", "cos_3", "cos_4", "cos_5", "popularity")


def _row(name: str, items: np.ndarray, targets: np.ndarray, n_items: int, strata, seconds: float):
    m = retrieval_metrics(items[:, :20], targets, n_items=n_items, strata=strata)
    o = m["overall"]
    row = {"decoding": name, "users": int(len(targets)), "recall@10": round(o["recall@10"], 4),
           "ndcg@10": round(o["ndcg@10"], 4), "recall@20": round(o["recall@20"], 4),
           "strata_recall@10": {k: round(v["recall@10"], 4) for k, v in m["strata"].items()
                                if k in ("popular", "middle", "long_tail")},
           "seconds": round(seconds, 1)}
    print(f"| {name} | {row['users']} | {row['recall@10']:.4f} | {row['ndcg@10']:.4f} | "
          f"{row['recall@20']:.4f} | {row['strata_recall@10']} | {row['seconds']} |", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--widths", default="0,10,20")
    parser.add_argument("--score-weights", default="",
                        help="comma-separated item-head weights (log p(SID) + w * head) to try "
                             "at the largest width (default: the run's)")
    parser.add_argument("--skip-widths", action="store_true",
                        help="only the score weights, the catalogue row and the gate")
    parser.add_argument("--priors", action="store_true",
                        help="also fit the priors on each score weight's lists (as the stage "
                             "does) and print validation NDCG@10 after them")
    parser.add_argument("--users", type=int, default=0, help="first N validation users (0 = all)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    cfg = retriever_config(args.run_dir)
    model, vocab, trie = load_retriever(args.run_dir)
    signals = item_signals(model)
    if signals is None:
        raise SystemExit("error: the run's retriever was trained without item_head.signals")
    split = SequentialSplit.from_run_dir(args.run_dir)
    sids = SemanticIds.from_run_dir(args.run_dir)
    data = make_retriever_data(split=split, codes=np.asarray(sids.codes, np.int64),
                               sizes=list(sids.codebook_sizes), cfg=cfg)
    valid = data.examples["valid"]
    if args.users:
        valid = valid.subset(np.arange(min(args.users, len(valid))))
    k = max(cfg.decode_beams, 20)
    common = dict(model=model, examples=valid, collator=data.collator, trie=data.trie,
                  vocab=data.vocab, num_beams=k, top_k=k, batch_size=cfg.schedule.eval_batch_size,
                  device="cpu", normalize=cfg.normalize, item_score_weight=cfg.rerank_weight)
    print("| decoding | users | R@10 | N@10 | R@20 | R@10 by stratum | seconds |")
    rows = []
    widths = [int(w) for w in args.widths.split(",") if w]
    for width in ([] if args.skip_widths else widths):
        signals.candidates = width
        t0 = time.perf_counter()
        items, _ = decode_examples(**common)
        rows.append(_row(f"beam {k} + channel {width}", items, valid.targets, split.n_items,
                         split.strata, time.perf_counter() - t0))
    for weight in [float(w) for w in args.score_weights.split(",") if w]:
        signals.candidates = max(widths)
        t0 = time.perf_counter()
        items, scores = decode_examples(**{**common, "item_score_weight": weight})
        rows.append(_row(f"beam {k} + channel {max(widths)}, head weight {weight:g}", items,
                         valid.targets, split.n_items, split.strata, time.perf_counter() - t0))
        if args.priors:
            _, fit = fit_priors(
                items=items, scores=scores, targets=valid.targets, top_k=items.shape[1],
                recent=recent_items(valid.history, max(cfg.priors.content_history)),
                cfg=cfg.priors, transitions=data.transitions,
                content=ContentVectors.from_run_dir(args.run_dir))
            rows[-1]["valid_ndcg@10_priors"] = fit["valid_ndcg@10"]
            rows[-1]["priors"] = fit["weights"]
            print(f"  with priors fitted on them: NDCG@10 {fit['valid_ndcg@10']:.4f} "
                  f"{fit['weights']}", flush=True)

    # The whole catalogue by the head plus the signals, and the gate's weights.
    t0 = time.perf_counter()
    tops, weights = [], []
    with torch.no_grad():
        for lo in range(0, len(valid), 256):
            batch = data.collator(valid, np.arange(lo, min(lo + 256, len(valid))))
            query = item_query(model, input_ids=batch.input_ids, attention_mask=batch.attention_mask)
            head = query @ model.encoder.embed_tokens.head_table().T
            scores = head + signal_term(model, query=query, input_ids=batch.input_ids,
                                        attention_mask=batch.attention_mask)
            tops.append(torch.topk(scores, 20, dim=1).indices.numpy())
            weights.append(signals.weights(query).numpy())
    rows.append(_row("head + signals, whole catalogue", np.concatenate(tops), valid.targets,
                     split.n_items, split.strata, time.perf_counter() - t0))
    w = np.concatenate(weights)
    gate = {name: {"mean": round(float(w[:, i].mean()), 4), "sd": round(float(w[:, i].std()), 4)}
            for i, name in enumerate(SIGNALS[: w.shape[1]])}
    print("gate weights (mean, sd over validation users):", gate)

    # The same beam with the gate zeroed: the head without the signals.
    with torch.no_grad():
        saved = [p.detach().clone() for p in signals.gate.parameters()]
        for p in signals.gate.parameters():
            p.zero_()
    signals.candidates = 0
    t0 = time.perf_counter()
    items, _ = decode_examples(**common)
    rows.append(_row(f"beam {k}, gate zeroed", items, valid.targets, split.n_items,
                     split.strata, time.perf_counter() - t0))
    with torch.no_grad():
        for p, v in zip(signals.gate.parameters(), saved):
            p.copy_(v)
    if args.json:
        args.json.write_text(json.dumps({"run": str(args.run_dir), "rows": rows, "gate": gate},
                                        indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
