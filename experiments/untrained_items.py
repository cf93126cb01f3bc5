"""Where the retriever ranks items it never trained on, and what letting them in would cost:
an offline diagnosis on a trained run of the cold-start protocol (``--profile cold``), no
training.

For every test user it scores the whole catalogue with the item head and its learned signals
(as the model re-orders candidates, without the beam), then prints Recall/NDCG@10 of all users
and R@10 of the users whose target is an untrained (held-out) item, for

* the model as trained, and with the untrained items' learned ID rows zeroed (their score from
  their SID rows alone) — the rank of the untrained targets tells whether the SID rows carry
  any content signal for items never seen;
* each untrained item scored as its most similar trained items (the best of its ``ANCHORS``
  nearest by content), minus a margin ``delta``;
* the last ``slots`` places of each list given to the untrained items most similar to the
  user's recent items, ``sum_h decay**h * max(0, cos)``, the content-only rule's score.

No validation target is an untrained item in this protocol, so none of these can be fitted on
validation users here: the figures are test figures of an analysis, not a chosen setting.

    python experiments/untrained_items.py runs/quality-ml-100k-mm-cpu-cold
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from generative_rec import inference
from generative_rec.content import ContentVectors
from generative_rec.data import Collator, histories_to_examples
from generative_rec.model import (_item_embedding, item_query, item_token_offset, signal_term,
                                  unwrap)
from generative_rec.untrained import ANCHORS, trained_items
from recdata.split import SequentialSplit


def head_scores(run_dir: Path, split: SequentialSplit, *, untrained: np.ndarray,
                batch: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """``[U, N]`` twice: the item head's logits plus its signals for every test user and item,
    as trained and with the ``untrained`` items' learned ID rows zeroed."""
    cfg = inference.retriever_config(run_dir)
    model, vocab, trie = inference.load_retriever(run_dir, device="cpu")
    t5 = unwrap(model)
    emb = _item_embedding(t5)
    user_tokens = vocab.user_tokens(split.user_ids)
    collate = Collator(item_tokens=vocab.encode_sids(trie.codes.numpy()), user_tokens=user_tokens,
                       pad_id=vocab.pad_id, eos_id=vocab.eos_id,
                       item_offset=item_token_offset(model))
    out, out_zeroed = [], []
    with torch.no_grad():
        table = emb.head_table()
        zeroed = table.clone()
        if emb.item_id is not None:
            mask = torch.as_tensor(untrained)
            zeroed[mask] -= emb.item_id.weight[mask]
        for lo in range(0, split.n_users, batch):
            users = np.arange(lo, min(lo + batch, split.n_users))
            b = collate(histories_to_examples([split.test_inputs[u].tolist() for u in users],
                                              cfg.history.max_length))
            ids = b.input_ids.clone()
            ids[:, 0] = torch.as_tensor(user_tokens)[torch.as_tensor(users)]  # rows are users
            q = item_query(model, input_ids=ids, attention_mask=b.attention_mask)
            signals = signal_term(t5, query=q, input_ids=ids, attention_mask=b.attention_mask)
            out.append((q @ table.T + signals).numpy())
            out_zeroed.append((q @ zeroed.T + signals).numpy())
    return np.concatenate(out), np.concatenate(out_zeroed)


def report(label: str, lists: np.ndarray, targets: np.ndarray, cold: np.ndarray) -> None:
    hit = lists[:, :10] == targets[:, None]
    rank = hit.argmax(1)
    ndcg = np.where(hit.any(1), 1.0 / np.log2(rank + 2.0), 0.0)
    print(f"{label}: R@10 {hit.any(1).mean():.4f}  N@10 {ndcg.mean():.4f}  "
          f"untrained-target R@10 {hit.any(1)[cold].mean():.4f}", flush=True)


def top10(scores: np.ndarray) -> np.ndarray:
    return np.argsort(-scores, axis=1, kind="stable")[:, :10]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    split = SequentialSplit.from_run_dir(args.run_dir)
    trained = trained_items(split.train_sequences, split.n_items)
    vectors = ContentVectors.from_run_dir(args.run_dir).vectors.astype(np.float32)
    targets = np.asarray(split.test_targets)
    cold = ~trained[targets]
    untrained, warm = np.flatnonzero(~trained), np.flatnonzero(trained)
    print(f"{len(untrained)} untrained items; {cold.sum()} of {len(targets)} test users have "
          "one as target")

    scores, zeroed = head_scores(args.run_dir, split, untrained=~trained)
    report("head + signals, whole catalogue", top10(scores), targets, cold)
    target_rank = (scores > scores[np.arange(len(targets)), targets][:, None]).sum(1)
    print(f"  median rank of untrained targets: {np.median(target_rank[cold]):.0f} of "
          f"{split.n_items}")
    zrank = (zeroed > zeroed[np.arange(len(targets)), targets][:, None]).sum(1)
    report("untrained items' ID rows zeroed", top10(zeroed), targets, cold)
    print(f"  median rank of untrained targets: {np.median(zrank[cold]):.0f} of {split.n_items}")

    sim = vectors[untrained] @ vectors[warm].T
    anchors = warm[np.argsort(-sim, axis=1, kind="stable")[:, :ANCHORS]]
    borrowed = scores[:, anchors].max(2)  # [U, untrained]
    for delta in (0.0, 0.5, 1.0, 2.0):
        imputed = scores.copy()
        imputed[:, untrained] = borrowed - delta
        report(f"untrained scored as their best anchor - {delta}", top10(imputed), targets, cold)

    warm_lists = np.argsort(-np.where(trained[None, :], scores, -np.inf), axis=1,
                            kind="stable")[:, :10]
    for depth, decay in ((1, 1.0), (5, 0.7), (10, 0.9)):
        content = np.zeros((len(targets), len(untrained)), np.float32)
        for u in range(len(targets)):
            hist = np.asarray(split.test_inputs[u], np.int64)[::-1][:depth]
            for h, item in enumerate(hist):
                content[u] += decay ** h * np.maximum(vectors[item] @ vectors[untrained].T, 0.0)
        best = untrained[np.argsort(-content, axis=1, kind="stable")]
        for slots in (1, 2):
            lists = np.concatenate([warm_lists[:, : 10 - slots], best[:, :slots]], 1)
            report(f"last {slots} slot(s) to the untrained items nearest the last {depth} "
                   f"items (decay {decay})", lists, targets, cold)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
