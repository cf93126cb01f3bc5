"""Decoding width against quality, on validation users of a trained run.

The final lists are decoded with ``max(num_beams, candidates_n)`` beams, validation during
training with ``num_beams``. This measures what the width does to Recall/NDCG on the same model
and the same validation users: several beam widths, and the exact ranking by the same score
over the whole catalogue (teacher-forced scoring of every item, which a small catalogue allows)
as the limit of an infinitely wide beam. For a retriever trained with an item head
(``item_head.loss_weight``), ``--item-score-weights`` re-orders every beam of each width with each
weight, and adds the item head alone over the whole catalogue. Test users are never looked at.

    python experiments/beam_width.py runs/demo --beams 10,20,50,100 --exhaustive-users 943
    python experiments/beam_width.py RUN --beams 20 --item-score-weights 0,0.5,1,2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from generative_rec.model import item_query
from generative_rec.reference_decoding import exhaustive_scores
from generative_rec.stage import make_retriever_data
from generative_rec.inference import load_retriever, retriever_config
from generative_rec.train import decode_examples, retrieval_metrics
from recdata.split import SequentialSplit
from tokenizer.sid import SemanticIds

STRATA_SHOWN = ("popular", "middle", "long_tail")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a run with a trained retriever/")
    parser.add_argument("--beams", default="10,20,50,100", help="comma-separated beam widths")
    parser.add_argument("--exhaustive-users", type=int, default=0,
                        help="also rank every item exactly for the first N validation users (0 = skip)")
    parser.add_argument("--item-score-weights", default="",
                        help="comma-separated item-head weights to re-order the beams with")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = retriever_config(args.run_dir)
    model, vocab, trie = load_retriever(args.run_dir)
    split = SequentialSplit.from_run_dir(args.run_dir)
    sids = SemanticIds.from_run_dir(args.run_dir)
    data = make_retriever_data(split=split, codes=np.asarray(sids.codes, np.int64),
                               sizes=list(sids.codebook_sizes), cfg=cfg)
    valid = data.examples["valid"]
    rows = []
    print("| decoding | users | R@10 | N@10 | R@20 | N@20 | distinct@10 | R@10 popular / middle / "
          "long-tail | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")

    def report(name: str, ranked: np.ndarray, targets: np.ndarray, seconds: float) -> None:
        result = retrieval_metrics(ranked[:, :20], targets, n_items=split.n_items,
                                   strata=split.strata)
        m = result["overall"]
        # Recall@10 of the users whose target lies in each popularity stratum (training counts).
        by_stratum = {s: (None if v["users"] == 0 else round(float(v["recall@10"]), 5))
                      for s, v in result["strata"].items() if s in STRATA_SHOWN}
        row = {"decoding": name, "users": int(len(targets)), "seconds": round(seconds, 1),
               "distinct@10": int(len(np.unique(ranked[:, :10][ranked[:, :10] >= 0]))),
               **{k: round(float(m[k]), 5) for k in ("recall@10", "ndcg@10", "recall@20", "ndcg@20")},
               "strata_recall@10": by_stratum}
        rows.append(row)
        shown = " / ".join("-" if v is None else f"{v:.4f}" for v in by_stratum.values())
        print(f"| {name} | {row['users']} | {row['recall@10']:.4f} | {row['ndcg@10']:.4f} | "
              f"{row['recall@20']:.4f} | {row['ndcg@20']:.4f} | {row['distinct@10']} | {shown} | "
              f"{row['seconds']} |", flush=True)

    for beams in [int(b) for b in args.beams.split(",") if b]:
        t0 = time.perf_counter()
        items, _ = decode_examples(model=model, examples=valid, collator=data.collator, trie=trie,
                                   vocab=vocab, num_beams=max(beams, 20), top_k=20,
                                   batch_size=cfg.schedule.eval_batch_size, device="cpu",
                                   normalize=cfg.normalize)
        report(f"beam {max(beams, 20)}", items, valid.targets, time.perf_counter() - t0)
    weights = [float(w) for w in args.item_score_weights.split(",") if w]
    for weight in weights:
        for beams in [max(int(b), 20) for b in args.beams.split(",") if b]:
            # Every beam is re-ordered, then the top 20 are evaluated.
            t0 = time.perf_counter()
            items, _ = decode_examples(model=model, examples=valid, collator=data.collator,
                                       trie=trie, vocab=vocab, num_beams=beams, top_k=beams,
                                       batch_size=cfg.schedule.eval_batch_size, device="cpu",
                                       normalize=cfg.normalize, item_score_weight=weight)
            report(f"beam {beams}, item head x {weight:g}", items, valid.targets,
                   time.perf_counter() - t0)
    if weights:
        t0 = time.perf_counter()
        ranked = []
        with torch.no_grad():
            vectors = model.encoder.embed_tokens.head_table()
            for lo in range(0, len(valid.targets), 256):
                batch = data.collator(valid, np.arange(lo, min(lo + 256, len(valid.targets))))
                query = item_query(model, input_ids=batch.input_ids,
                                   attention_mask=batch.attention_mask)
                ranked.append((query @ vectors.T).topk(20, dim=1).indices.numpy())
        report("item head alone (whole catalogue)", np.concatenate(ranked), valid.targets,
               time.perf_counter() - t0)
    if args.exhaustive_users:
        n = min(args.exhaustive_users, len(valid.targets))
        t0 = time.perf_counter()
        ranked = []
        for lo in range(0, n, 32):
            idx = np.arange(lo, min(lo + 32, n))
            batch = data.collator(valid, idx)
            scores = exhaustive_scores(model=model, input_ids=batch.input_ids,
                                       attention_mask=batch.attention_mask, codes=sids.codes,
                                       vocab=vocab, normalize=cfg.normalize, item_chunk=2048)
            ranked.append(scores.topk(20, dim=1).indices.numpy())
        report("exhaustive", np.concatenate(ranked), valid.targets[:n], time.perf_counter() - t0)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
