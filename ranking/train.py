"""Training and batch prediction of one CTR model (binary cross-entropy, early stopping on AUC)."""

from __future__ import annotations

from recdata.faults import kill_point

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ranking.config import RankerConfig
from ranking.features import CtrData, gather_history
from ranking.item_repr import ItemRepresentation, item_fields
from ranking.models import MODELS, build_model

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model: nn.Module
    spec: dict[str, Any]
    best_epoch: int
    best_valid_auc: float
    log: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def model_spec(
    *, cfg: RankerConfig, item_repr: str, data: CtrData, sid_codes: np.ndarray | None, codebook_sizes: list[int] | None
) -> tuple[dict[str, Any], np.ndarray]:
    """Shapes and hyper-parameters of one variant (JSON-able) and its item field ids."""
    names, sizes, ids = item_fields(
        mode=item_repr, n_items=data.n_items, sid_codes=sid_codes, codebook_sizes=codebook_sizes, sid_ngrams=cfg.sid_ngrams
    )
    user_names = data.users.names if cfg.use_user_features else []
    user_sizes = data.users.sizes if cfg.use_user_features else []
    spec = {
        "model": cfg.model,
        "item_repr": item_repr,
        "sid_ngrams": bool(cfg.sid_ngrams and item_repr != "itemid"),
        "n_items": data.n_items,
        "n_users": data.n_users,
        "field_names": names,
        "field_sizes": sizes,
        "user_feature_names": list(user_names),
        "user_feature_sizes": list(user_sizes),
        "user_feature_vocab": {n: data.users.vocab[n] for n in user_names},
        "embedding_dim": cfg.embedding_dim,
        "hidden_sizes": list(cfg.hidden_sizes),
        "attention_hidden": cfg.attention_hidden,
        "dropout": cfg.dropout,
        "history_len": cfg.history_len,
        "history_feedback": cfg.history_feedback,
        "use_user_id": cfg.use_user_id,
    }
    return spec, ids


def new_model(
    *, cfg: RankerConfig, item_repr: str, data: CtrData, sid_codes: np.ndarray | None, codebook_sizes: list[int] | None
) -> tuple[nn.Module, dict[str, Any]]:
    """An initialised model whose buffers hold this run's field ids and user features."""
    if cfg.model not in MODELS:
        from recdata.errors import DataError

        raise DataError(f"unknown ranker model {cfg.model!r}; known: {sorted(MODELS)}")
    spec, ids = model_spec(cfg=cfg, item_repr=item_repr, data=data, sid_codes=sid_codes, codebook_sizes=codebook_sizes)
    model = build_model(spec)
    rep = ItemRepresentation(
        field_names=spec["field_names"], field_sizes=spec["field_sizes"], field_ids=ids, dim=cfg.embedding_dim
    )
    model.item_repr.field_ids.copy_(rep.field_ids)
    user_values = data.users.values if cfg.use_user_features else np.zeros((data.n_users, 0), dtype=np.int64)
    model.user_feature_values.copy_(torch.as_tensor(user_values))
    return model, spec


def make_batch(data: CtrData, rows: np.ndarray, history_len: int, device: str) -> dict[str, torch.Tensor]:
    """Model inputs (users, items, right-aligned histories) of the given example rows."""
    ex = data.examples
    users = ex.user[rows]
    h_items, h_feedback, h_mask = gather_history(data.history, users, ex.hist_end[rows], history_len)
    return {
        "users": torch.as_tensor(users, device=device),
        "items": torch.as_tensor(ex.item[rows], device=device),
        "hist_items": torch.as_tensor(h_items, device=device),
        "hist_feedback": torch.as_tensor(h_feedback, device=device),
        "hist_mask": torch.as_tensor(h_mask, device=device),
    }


@torch.no_grad()
def predict(
    model: nn.Module, data: CtrData, rows: np.ndarray, *, history_len: int, device: str, batch_size: int = 4096
) -> np.ndarray:
    """Click probabilities for the given example rows, in order."""
    model.eval()
    out = np.empty(len(rows), dtype=np.float64)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        logits = model(**make_batch(data, chunk, history_len, device))
        out[start : start + len(chunk)] = torch.sigmoid(logits.double()).cpu().numpy()
    return out


def train_model(
    *,
    cfg: RankerConfig,
    data: CtrData,
    sid_codes: np.ndarray | None,
    codebook_sizes: list[int] | None,
    device: str,
    seed: int,
    item_repr: str | None = None,
) -> TrainResult:
    """Train with BCE on the train rows; keep the epoch with the best validation AUC.

    ``item_repr`` defaults to ``cfg.item_repr``.
    """
    item_repr = item_repr or cfg.item_repr
    from recdata.metrics import auc
    from recdata.runtime import progress

    torch.manual_seed(seed)
    model, spec = new_model(cfg=cfg, item_repr=item_repr, data=data, sid_codes=sid_codes, codebook_sizes=codebook_sizes)
    model.to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    train_rows = data.examples.rows("train")
    valid_rows = data.examples.rows("valid")
    valid_labels = data.examples.label[valid_rows]
    gen = np.random.default_rng(seed)
    best_auc, best_epoch, best_state, stale = -np.inf, 0, None, 0
    history: list[dict[str, Any]] = []
    started = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order = train_rows[gen.permutation(len(train_rows))]
        total, seen = 0.0, 0
        batches = range(0, len(order), cfg.batch_size)
        for start in progress(batches, desc=f"ranker[{item_repr}] epoch {epoch}", leave=False):
            rows = order[start : start + cfg.batch_size]
            batch = make_batch(data, rows, cfg.history_len, device)
            labels = torch.as_tensor(data.examples.label[rows], device=device)
            loss = loss_fn(model(**batch), labels)
            if cfg.embedding_l2 > 0:
                loss = loss + cfg.embedding_l2 * model.regularisation(batch["items"])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(rows)
            seen += len(rows)
        entry: dict[str, Any] = {"epoch": epoch, "train_loss": total / max(seen, 1)}
        if len(valid_rows) and len(np.unique(valid_labels)) == 2:
            scores = predict(model, data, valid_rows, history_len=cfg.history_len, device=device)
            entry["valid_auc"] = float(auc(valid_labels, scores))
        history.append(entry)
        kill_point("train-ranker.epoch")
        log.info("ranker[%s] %s", item_repr, entry)
        current = entry.get("valid_auc", -entry["train_loss"])
        if current > best_auc:
            best_auc, best_epoch, stale = current, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale >= max(cfg.patience, 1):
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(
        model=model,
        spec=spec,
        best_epoch=best_epoch,
        best_valid_auc=float(best_auc) if "valid_auc" in history[0] else float("nan"),
        log=history,
        seconds=time.perf_counter() - started,
    )
