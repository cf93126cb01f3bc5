"""Optional stage-2 variant: behaviour-aware fine-tuning of the tokenizer through the CTR loss.

MMQ's soft indexing (method §4), with the CTR ranker as the downstream model: per tokenizer
position p the item's code is ``ind_p = softmax(cos(z_p, C_p) / τ) + sg(onehot − softmax)``, and
the ranker reads that position's embedding as ``ind_p @ E_p`` instead of a row lookup. The
forward pass is therefore exactly the hard-ID model, while the click loss reaches the experts,
gates and codebooks of the tokenizer. Objective:
``L = BCE + recon_weight · L_recon + aux_weight · L_aux`` (paper weights 0.5 / 0.5).

It starts from the trained SID (or "both") ranker and the run's tokenizer weights, fine-tunes
both for ``soft_epochs`` (best validation AUC kept), then re-assigns hard IDs with the
fine-tuned tokenizer, re-resolves collisions, and points the ranker at the new IDs (the new
collision table reuses the old rows). The run's own tokenizer artefacts are not touched: the
new table is written to ``ranker/semantic_ids_<variant>_soft.parquet`` so the retriever keeps
the IDs it was trained on. Position tables other than the tokenizer's (the collision token,
the item ID in "both") stay ordinary lookups; SID prefix n-grams are not supported here
because they are functions of the hard codes.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from recdata.errors import DataError
from ranking.config import RankerConfig
from ranking.features import CtrData
from ranking.item_repr import ItemRepresentation
from ranking.train import make_batch

log = logging.getLogger(__name__)


@dataclass
class SoftResult:
    model: nn.Module
    spec: dict[str, Any]
    sids: Any  # tokenizer.sid.SemanticIds after re-assignment
    best_epoch: int
    best_valid_auc: float
    changed_items: float
    log: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def soft_item_table(rep: ItemRepresentation, soft: list[torch.Tensor]) -> torch.Tensor:
    """[N, d] item vectors with the first ``len(soft)`` SID fields read as ``ind_p @ E_p``."""
    offsets = np.concatenate([[0], np.cumsum(rep.field_sizes)[:-1]])
    sid_fields = [i for i, name in enumerate(rep.field_names) if name.startswith("sid_")]
    if len(sid_fields) < len(soft):
        raise DataError("the ranker has fewer SID positions than the tokenizer")
    soft_fields = set(sid_fields[: len(soft)])
    weight = rep.table.weight
    table = None
    for f in range(len(rep.field_names)):
        if f in soft_fields:
            p = sid_fields.index(f)
            lo, size = int(offsets[f]), rep.field_sizes[f]
            if soft[p].shape[1] != size:
                raise DataError(
                    f"tokenizer position {p} has {soft[p].shape[1]} codes but the ranker's table has {size}"
                )
            part = soft[p].to(weight.dtype) @ weight[lo : lo + size]
        else:
            part = weight[rep.field_ids[:, f]]
        table = part if table is None else table + part
    return table


def _check_supported(spec: dict[str, Any]) -> None:
    if spec["item_repr"] not in ("sid", "both"):
        raise DataError("soft indexing needs a ranker with SID features (variant sid or both)")
    if any(name.startswith("prefix_") for name in spec["field_names"]):
        raise DataError("soft indexing does not support sid_ngrams (prefixes depend on the hard codes)")


def _with_new_codes(model: nn.Module, spec: dict[str, Any], codes: np.ndarray, sizes: list[int]) -> tuple[nn.Module, dict]:
    """A copy of ``model`` whose SID fields read ``codes``; same-sized tables keep their rows,
    a resized table (the collision token) keeps the rows both sizes share."""
    from ranking.item_repr import item_fields
    from ranking.models import build_model

    old_rep: ItemRepresentation = model.item_repr
    names, new_sizes, ids = item_fields(
        mode=spec["item_repr"], n_items=old_rep.n_items, sid_codes=codes, codebook_sizes=sizes, sid_ngrams=False
    )
    new_spec = dict(spec, field_names=names, field_sizes=new_sizes)
    new_model = build_model(new_spec)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("item_repr.")}
    new_model.load_state_dict(state, strict=False)
    rep = ItemRepresentation(field_names=names, field_sizes=new_sizes, field_ids=ids, dim=old_rep.table.embedding_dim)
    old_offsets = np.concatenate([[0], np.cumsum(old_rep.field_sizes)[:-1]])
    new_offsets = np.concatenate([[0], np.cumsum(new_sizes)[:-1]])
    with torch.no_grad():
        for f, name in enumerate(names):
            g = old_rep.field_names.index(name)
            n = min(new_sizes[f], old_rep.field_sizes[g])
            rep.table.weight[new_offsets[f] : new_offsets[f] + n] = old_rep.table.weight[old_offsets[g] : old_offsets[g] + n]
    new_model.item_repr = rep
    return new_model.eval(), new_spec


def soft_finetune(
    *,
    cfg: RankerConfig,
    model: nn.Module,
    spec: dict[str, Any],
    data: CtrData,
    run_dir: Path,
    device: str,
    seed: int,
) -> SoftResult:
    """Fine-tune ``model`` and the run's tokenizer jointly; return the ranker on the new IDs."""
    from recdata.metrics import auc
    from recdata.runtime import progress
    from tokenizer.export import build_semantic_ids
    from tokenizer.registry import load_tokenizer
    from tokenizer.inputs import load_inputs

    _check_supported(spec)
    started = time.perf_counter()
    torch.manual_seed(seed)
    tokenizer = load_tokenizer(run_dir, device=device)
    tok_params = [p for p in tokenizer.parameters() if p.requires_grad]
    if not tok_params:
        raise DataError(f"soft indexing needs a gradient-trained tokenizer; {type(tokenizer).__name__} has none")
    inputs = load_inputs(run_dir).to(device)
    if inputs.n_items != data.n_items:
        raise DataError(f"tokenizer inputs have {inputs.n_items} items, the data {data.n_items}")
    everything = torch.arange(inputs.n_items, device=device)
    rows = inputs.rows(everything)
    old_codes = model.item_repr.field_ids.cpu().numpy()  # for the change statistic

    model = copy.deepcopy(model).to(device)
    tokenizer.eval()  # no EMA codebook updates: only gradients move the codebooks
    opt_rank = torch.optim.Adam(model.parameters(), lr=cfg.soft_lr)
    opt_tok = torch.optim.Adam(tok_params, lr=cfg.soft_tokenizer_lr)
    loss_fn = nn.BCEWithLogitsLoss()

    def table() -> torch.Tensor:
        soft = tokenizer.soft_codes(*rows, tau=cfg.soft_tau)
        return soft_item_table(model.item_repr, soft)

    def valid_auc() -> float | None:
        rows_v = data.examples.rows("valid")
        if not len(rows_v) or len(np.unique(data.examples.label[rows_v])) < 2:
            return None
        with torch.no_grad():
            frozen = table()
        model.eval()
        scores = []
        with torch.no_grad():
            for start in range(0, len(rows_v), 4096):
                chunk = rows_v[start : start + 4096]
                scores.append(torch.sigmoid(model(**make_batch(data, chunk, cfg.history_len, device), item_table=frozen)).cpu().numpy())
        return auc(data.examples.label[rows_v], np.concatenate(scores))

    train_rows = data.examples.rows("train")
    gen = np.random.default_rng(seed + 1)
    start_auc = valid_auc()
    history: list[dict[str, Any]] = [{"epoch": 0, "valid_auc": start_auc}]
    best_auc = start_auc if start_auc is not None else -np.inf
    best = (copy.deepcopy(model.state_dict()), copy.deepcopy(tokenizer.state_dict()))
    best_epoch, stale = 0, 0
    for epoch in range(1, cfg.soft_epochs + 1):
        model.train()
        order = train_rows[gen.permutation(len(train_rows))]
        sums = {"bce": 0.0, "recon": 0.0, "aux": 0.0}
        n_batches = 0
        for begin in progress(range(0, len(order), cfg.batch_size), desc=f"soft indexing epoch {epoch}", leave=False):
            chunk = order[begin : begin + cfg.batch_size]
            batch = make_batch(data, chunk, cfg.history_len, device)
            labels = torch.as_tensor(data.examples.label[chunk], device=device)
            bce = loss_fn(model(**batch, item_table=table()), labels)
            if 0 < cfg.soft_recon_items < inputs.n_items:
                sample = torch.as_tensor(gen.choice(inputs.n_items, cfg.soft_recon_items, replace=False), device=device)
                rec = tokenizer.reconstruction_losses(*inputs.rows(sample))
            else:
                rec = tokenizer.reconstruction_losses(*rows)
            loss = bce + cfg.soft_recon_weight * rec["recon"] + cfg.soft_aux_weight * rec["aux"]
            opt_rank.zero_grad(set_to_none=True)
            opt_tok.zero_grad(set_to_none=True)
            loss.backward()
            opt_rank.step()
            opt_tok.step()
            sums["bce"] += float(bce.detach())
            sums["recon"] += float(rec["recon"].detach())
            sums["aux"] += float(rec["aux"].detach())
            n_batches += 1
        entry = {"epoch": epoch, **{f"{k}_loss": v / max(n_batches, 1) for k, v in sums.items()}}
        entry["valid_auc"] = valid_auc()
        history.append(entry)
        log.info("soft indexing %s", entry)
        current = entry["valid_auc"] if entry["valid_auc"] is not None else -entry["bce_loss"]
        if current > best_auc:
            best_auc, best_epoch, stale = current, epoch, 0
            best = (copy.deepcopy(model.state_dict()), copy.deepcopy(tokenizer.state_dict()))
        else:
            stale += 1
            if stale >= max(cfg.patience, 1):
                break
    model.load_state_dict(best[0])
    tokenizer.load_state_dict(best[1])

    with torch.no_grad():
        sids, _, _ = build_semantic_ids(tokenizer.eval(), inputs)
    new_model, new_spec = _with_new_codes(model.cpu(), spec, sids.codes, [int(s) for s in sids.codebook_sizes])
    n_tok = len(tokenizer.codebook_sizes)
    sid_cols = [i for i, n in enumerate(spec["field_names"]) if n.startswith("sid_")][:n_tok]
    offsets = np.concatenate([[0], np.cumsum(spec["field_sizes"])[:-1]])
    old_sid = old_codes[:, sid_cols] - offsets[sid_cols][None, :]  # global rows → codes
    changed = float((old_sid != sids.codes[:, :n_tok]).any(axis=1).mean())
    new_spec["soft_indexing"] = {"tau": cfg.soft_tau, "from_variant": spec["item_repr"]}
    return SoftResult(
        model=new_model.to(device).eval(),
        spec=new_spec,
        sids=sids,
        best_epoch=best_epoch,
        best_valid_auc=float(best_auc),
        changed_items=changed,
        log=history,
        seconds=time.perf_counter() - started,
    )
