"""Training (full-softmax cross-entropy, early stopping on validation NDCG@10) and full-catalogue
ranking for BBQRec."""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
import torch.nn.functional as F

from generative_rec.bbqrec.data import left_pad, training_windows
from generative_rec.bbqrec.model import BBQRec
from recdata.errors import DataError
from recdata.metrics import ranking_metrics
from recdata.runtime import progress
from recdata.topk import top_k

log = logging.getLogger(__name__)


@torch.no_grad()
def rank_users(
    model: BBQRec,
    histories: list[np.ndarray],
    *,
    k: int,
    batch_size: int,
    device: str,
    exclude_history: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` items of the full catalogue for each history: (items [U, k], scores [U, k]).

    Scores come from the hidden state at the last position; row ``b`` is user ``b``, whose
    equal scores are ordered by :func:`recdata.topk.top_k`'s seeded hash.
    """
    was_training = model.training
    model.eval()
    tokens = torch.from_numpy(left_pad(histories, model.cfg.max_len))
    items_out, scores_out = [], []
    for lo in range(0, len(histories), batch_size):
        batch = tokens[lo: lo + batch_size].to(device)
        scores = model.item_scores(model(batch)[:, -1]).float().cpu().numpy().astype(np.float64)
        if exclude_history:
            for row, hist in enumerate(histories[lo: lo + batch_size]):
                scores[row, np.asarray(hist, dtype=np.int64)] = -np.inf
        order, top = top_k(scores, k=k, users=np.arange(lo, lo + len(scores)))
        items_out.append(order)
        scores_out.append(top)
    model.train(was_training)
    if not items_out:
        return np.zeros((0, k), dtype=np.int64), np.zeros((0, k))
    return np.concatenate(items_out).astype(np.int64), np.concatenate(scores_out)


def validation_ndcg(model: BBQRec, inputs: list[np.ndarray], targets: np.ndarray, *, device: str) -> float:
    ranked, _ = rank_users(model, inputs, k=10, batch_size=model.cfg.eval_batch_size, device=device,
                           exclude_history=model.cfg.exclude_history)
    return float(ranking_metrics(ranked=ranked, targets=targets, ks=(10,))["overall"]["ndcg@10"])


def train_model(
    model: BBQRec,
    *,
    train_sequences: list[np.ndarray],
    valid_inputs: list[np.ndarray],
    valid_targets: np.ndarray,
    seed: int,
    device: str,
) -> dict:
    """Train in place; the best validation epoch's weights are loaded back at the end."""
    cfg = model.cfg
    inputs_np, targets_np = training_windows(train_sequences, cfg.max_len)
    if len(inputs_np) == 0:
        raise DataError("BBQRec has no training targets: every training sequence has one item")
    inputs = torch.from_numpy(inputs_np)
    targets = torch.from_numpy(targets_np)
    table = [p for n, p in model.named_parameters() if n.startswith("bias.")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("bias.")]
    groups = [{"params": rest, "weight_decay": cfg.weight_decay}]
    if table:
        groups.append({"params": table, "weight_decay": 0.0, "lr": cfg.table_lr})
    opt = torch.optim.Adam(groups, lr=cfg.lr)
    generator = torch.Generator().manual_seed(seed)
    log.info("bbqrec: %d training windows, %d targets", len(inputs), int((targets >= 0).sum()))

    best, best_epoch, best_state, stale = -1.0, 0, None, 0
    history: list[dict] = []
    start = time.perf_counter()
    bar = progress(range(cfg.epochs), desc="bbqrec", unit="epoch")
    for epoch in bar:
        model.train()
        perm = torch.randperm(len(inputs), generator=generator)
        total, steps = 0.0, 0
        for lo in range(0, len(perm), cfg.batch_size):
            idx = perm[lo: lo + cfg.batch_size]
            tok, tgt = inputs[idx].to(device), targets[idx].to(device)
            hidden = model(tok)
            keep = tgt >= 0
            loss = F.cross_entropy(model.item_scores(hidden[keep]), tgt[keep])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            steps += 1
        ndcg = validation_ndcg(model, valid_inputs, valid_targets, device=device)
        record = {"epoch": epoch + 1, "loss": total / max(steps, 1), "valid_ndcg@10": ndcg,
                  "seconds": time.perf_counter() - start}
        history.append(record)
        bar.set_postfix(loss=f"{record['loss']:.4f}", ndcg10=f"{ndcg:.4f}")
        log.debug("bbqrec epoch %d: %s", epoch + 1, record)
        if ndcg > best:
            best, best_epoch, stale = ndcg, epoch + 1, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        if cfg.patience and stale >= cfg.patience:
            break
        if cfg.max_seconds and time.perf_counter() - start >= cfg.max_seconds:
            log.info("bbqrec: training budget of %.0f s reached after epoch %d", cfg.max_seconds, epoch + 1)
            break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return {"history": history, "best_epoch": best_epoch, "best_valid_ndcg@10": best,
            "epochs_run": len(history), "train_seconds": time.perf_counter() - start}
