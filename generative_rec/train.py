"""Training loop of the generative retriever: AdamW, warmup + linear decay, gradient clipping,
mixed precision on GPU, DDP under torchrun, validation NDCG@10 for model selection, and
resumable safetensors checkpoints.

Checkpoint: one file ``<ckpt_dir>/<phase>.safetensors`` holding the current weights
(``model.*``), the best weights so far (``best.*``), the AdamW state (``optim.*``) and the RNG
state (``rng.*``), with the JSON trainer state (step, epoch, position in the epoch, best metric,
log) in the safetensors metadata. A single atomically replaced file can never be half-updated, so
a killed run resumes from the last evaluation exactly: the epoch permutation is a function of
(seed, epoch) and the dropout RNG is restored, which makes the resumed weights identical to an
uninterrupted run on CPU. ``state.json`` next to it is a human-readable copy.

Under DDP only rank 0 writes; every rank reads the checkpoint when resuming. The RNG state saved is
rank 0's, so exact replay after a resume is guaranteed for single-process runs only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from generative_rec.config import RetrieverConfig
from generative_rec.data import Collator, Examples, epoch_order, length_bucketed
from generative_rec.ddp import DistContext, all_reduce_mean, barrier, broadcast_flag, gather_rows, shard_indices
from generative_rec.model import (
    PositionHeads,
    head_distill_loss,
    item_signals,
    load_model_state,
    model_state,
    position_loss,
    retrieval_loss,
    shift_right,
    sid_logits,
    unwrap,
)
from generative_rec.priors import CandidatePriors
from generative_rec.transitions import recent_items
from recdata.io import load_tensor_metadata, load_tensors, save_tensors, write_json, write_text
from recdata.runtime import progress
from recdata.faults import kill_point

log = logging.getLogger(__name__)

SELECTION_METRIC = "ndcg@10"


# --------------------------------------------------------------------------- helpers


def lr_at(step: int, *, peak: float, warmup: int, total: int) -> float:
    """Linear warmup over ``warmup`` steps, then linear decay to 0 at ``total``."""
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    span = max(1, total - warmup)
    return peak * max(0.0, (total - step) / span)


def amp_dtype(mode: str, device: str) -> torch.dtype | None:
    """Autocast dtype for ``mode`` on ``device`` (None = full precision)."""
    if mode == "off":
        return None
    on_cuda = device.startswith("cuda")
    if mode == "auto":
        if not on_cuda:
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if mode == "bf16" else torch.float16


def autocast(device: str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=dtype)


def make_optimizer(model: torch.nn.Module, *, lr: float, weight_decay: float,
                   extra_groups: list[dict] | None = None) -> torch.optim.AdamW:
    """AdamW; weight decay on weight matrices only (not on layer-norm scales)."""
    decay, no_decay = [], []
    for name, p in unwrap(model).named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ] + list(extra_groups or [])
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-8)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


# --------------------------------------------------------------------------- decoding / metrics


@torch.no_grad()
def decode_examples(
    *,
    model: torch.nn.Module,
    examples: Examples,
    collator: Collator,
    trie: Any,
    vocab: Any,
    num_beams: int,
    top_k: int,
    batch_size: int,
    device: str,
    ctx: DistContext | None = None,
    amp: torch.dtype | None = None,
    normalize: str,
    item_score_weight: float = 0.0,
    priors: CandidatePriors | None = None,
    desc: str = "decode",
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``top_k`` items ``[E, top_k]`` (-1 = none) and their log-probabilities for every
    example, by constrained beam search; sharded over ranks and gathered under DDP.
    ``normalize`` has no default: it must be the one the model was trained for
    (``RetrieverConfig.normalize``). ``item_score_weight`` > 0 re-orders each user's beam by
    ``log p(SID) + weight * item-head logit`` (``RetrieverConfig.rerank_weight``); ``priors``
    then re-order the lists by the most recent item's successors and content, before they are
    cut to ``top_k`` (:class:`generative_rec.priors.CandidatePriors`)."""
    from generative_rec.decoding import (
        add_signal_candidates,
        constrained_beam_search,
        rerank_with_item_head,
    )

    ctx = ctx or DistContext()
    net = unwrap(model)
    was_training = net.training
    net.eval()
    n = len(examples)
    rows = shard_indices(n, ctx)
    items = np.full((len(rows), top_k), -1, dtype=np.int64)
    scores = np.full((len(rows), top_k), -np.inf, dtype=np.float32)
    trie = trie.to(device)
    starts = range(0, len(rows), batch_size)
    for start in progress(starts, desc=desc, leave=False):
        idx = rows[start : start + batch_size]
        batch = collator(examples, idx).to(device)
        with autocast(device, amp):
            got_items, got_scores = constrained_beam_search(
                model=net,
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                trie=trie,
                vocab=vocab,
                num_beams=num_beams,
                top_k=top_k,
                normalize=normalize,
            )
            if item_score_weight > 0:
                signals = item_signals(net)
                if signals is not None and signals.candidates > 0:
                    got_items, got_scores = add_signal_candidates(
                        model=net, input_ids=batch.input_ids,
                        attention_mask=batch.attention_mask, items=got_items,
                        scores=got_scores, trie=trie, vocab=vocab, normalize=normalize,
                        m=signals.candidates)
                got_items, got_scores = rerank_with_item_head(
                    model=net, input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                    items=got_items, scores=got_scores, weight=item_score_weight)
                got_items, got_scores = got_items[:, :top_k], got_scores[:, :top_k]
        items[start : start + len(idx)] = got_items.cpu().numpy()
        scores[start : start + len(idx)] = got_scores.float().cpu().numpy()
    if was_training:
        net.train()
    items, scores = gather_rows(items, n, ctx), gather_rows(scores, n, ctx)
    if priors is not None and priors.active:
        items, scores = priors.apply(items=items, scores=scores,
                                     recent=recent_items(examples.history, priors.history_needed),
                                     top_k=top_k)
    return items, scores


def retrieval_metrics(ranked: np.ndarray, targets: np.ndarray, *, n_items: int,
                      strata: np.ndarray | None = None) -> dict[str, Any]:
    """Recall/NDCG@5/10/20, MRR and invalid@10, overall and per stratum of the target."""
    from recdata.metrics import ranking_metrics

    return ranking_metrics(ranked=ranked, targets=targets, ks=(5, 10, 20), strata=strata,
                           valid_items=n_items)


# --------------------------------------------------------------------------- checkpoints


@dataclass
class TrainerState:
    """JSON part of a checkpoint."""

    fingerprint: str
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_metric: float = -1.0
    best_step: int = 0
    evals_since_best: int = 0
    done: bool = False
    stop_reason: str = ""
    seconds: float = 0.0
    log: list[dict[str, Any]] = field(default_factory=list)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], str]:
    sd = optimizer.state_dict()
    tensors = {}
    for pid, slots in sd["state"].items():
        for key, value in slots.items():
            tensors[f"optim.{pid}.{key}"] = torch.as_tensor(value)
    return tensors, json.dumps(sd["param_groups"])


def _optimizer_from_tensors(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups_json: str
) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(groups_json)})


def save_checkpoint(
    path: Path,
    *,
    model: torch.nn.Module,
    best: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    state: TrainerState,
    extra: dict[str, torch.Tensor] | None = None,
) -> None:
    tensors: dict[str, torch.Tensor] = {}
    tensors.update({f"model.{k}": v for k, v in model_state(model).items()})
    tensors.update({f"best.{k}": v for k, v in best.items()})
    opt_tensors, groups = _optimizer_tensors(optimizer)
    tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    for k, v in (extra or {}).items():
        tensors[f"extra.{k}"] = v
    meta = {"trainer_state": json.dumps(state.__dict__), "optim_groups": groups}
    save_tensors(path, tensors, metadata=meta)
    write_json(path.with_suffix(".state.json"), {k: v for k, v in state.__dict__.items()
                                                  if k != "log"})


def load_checkpoint(path: Path) -> tuple[TrainerState, dict[str, torch.Tensor], dict[str, str]]:
    meta = load_tensor_metadata(path)
    tensors = load_tensors(path)
    state = TrainerState(**json.loads(meta["trainer_state"]))
    return state, tensors, meta


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    n = len(prefix)
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix)}


# --------------------------------------------------------------------------- the loop


@dataclass
class TrainResult:
    steps: int
    best_step: int
    best_valid_ndcg10: float
    stop_reason: str
    seconds: float
    log: list[dict[str, Any]]
    resumed_from: int = 0


StepFn = Callable[[torch.nn.Module, Any], torch.Tensor]


def training_scorer(net: torch.nn.Module, *, cfg: RetrieverConfig, vocab: Any) -> torch.nn.Module:
    """What one training step calls: the T5 itself (full-vocabulary head) or the per-position
    heads around it (``output_softmax`` position / children)."""
    if cfg.output_softmax in ("position", "children"):
        return PositionHeads(net, offsets=vocab.offsets, sizes=tuple(vocab.codebook_sizes))
    return net


def step_loss(ddp_model: torch.nn.Module, *, batch: Any, cfg: RetrieverConfig, plain: bool,
              offsets: torch.Tensor, trie: Any, device: str,
              amp: torch.dtype | None) -> torch.Tensor:
    """One training batch's loss: the SID cross-entropy (``plain``: T5's full-vocabulary head;
    else :class:`PositionHeads`, masked to the ``trie``'s children under ``output_softmax:
    children``) plus
    ``item_head.loss_weight`` times the item head's catalogue cross-entropy plus
    ``item_head.distill_weight`` times :func:`~generative_rec.model.head_distill_loss`."""
    item_logits = None
    with autocast(device, amp):
        if cfg.item_head.loss_weight > 0:
            logits, item_logits = ddp_model(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                decoder_input_ids=shift_right(batch.labels), with_items=True,
                item_targets=batch.targets)
        else:
            logits = sid_logits(ddp_model, input_ids=batch.input_ids,
                                attention_mask=batch.attention_mask,
                                decoder_input_ids=shift_right(batch.labels))
    if plain:
        loss = retrieval_loss(logits, batch.labels)
    else:
        codes = batch.labels - offsets
        mask = (trie.sibling_mask(codes, logits.size(-1)) if cfg.output_softmax == "children"
                else None)
        loss = position_loss(logits, codes, mask=mask)
    if item_logits is not None:
        loss = loss + cfg.item_head.loss_weight * F.cross_entropy(
            item_logits.float(), batch.targets, ignore_index=-1)
    if item_logits is not None and cfg.item_head.distill_weight > 0:
        loss = loss + cfg.item_head.distill_weight * head_distill_loss(
            logits, item_logits, codes, trie, levels=cfg.item_head.distill_levels, mask=mask)
    return loss


def schedule_steps(cfg: RetrieverConfig, batches_per_epoch: int) -> int:
    """Length of the training schedule: ``schedule.max_epochs`` passes over the training
    examples, at most ``schedule.max_steps`` steps (the learning rate decays to 0 there)."""
    return max(1, min(cfg.schedule.max_steps, cfg.schedule.max_epochs * batches_per_epoch))


def resume_state(
    ckpt_path: Path, *, fingerprint: str, net: torch.nn.Module,
    optimizer: torch.optim.Optimizer, phase: str,
) -> tuple[TrainerState, dict[str, torch.Tensor], int]:
    """The trainer's state, best weights and resumed step: from the checkpoint at ``ckpt_path``
    when it was written for the same ``fingerprint`` (the model, optimiser and RNG restored in
    place), else a fresh state with the current weights as the best."""
    state = TrainerState(fingerprint=fingerprint)
    best = {k: v.detach().cpu().clone() for k, v in model_state(net).items()}
    if not ckpt_path.exists():
        return state, best, 0
    saved, tensors, meta = load_checkpoint(ckpt_path)
    if saved.fingerprint != fingerprint:
        log.warning("%s: ignoring checkpoint %s written for a different configuration",
                    phase, ckpt_path)
        return state, best, 0
    load_model_state(net, _prefixed(tensors, "model."))
    _optimizer_from_tensors(optimizer, tensors, meta["optim_groups"])
    torch.set_rng_state(tensors["rng.torch"])
    if torch.cuda.is_available():
        cuda_states = [tensors[f"rng.cuda.{i}"] for i in range(torch.cuda.device_count())
                       if f"rng.cuda.{i}" in tensors]
        if cuda_states:
            torch.cuda.set_rng_state_all(cuda_states)
    log.info("%s: resuming from step %d (%s)", phase, saved.step, ckpt_path)
    return saved, _prefixed(tensors, "best."), saved.step


def validation_subset(valid: Examples, *, max_users: int, seed: int) -> Examples:
    """A fixed random subset of ``max_users`` validation examples (all when 0 or fewer):
    model selection stays cheap on large catalogues and sees the same users at every check."""
    if not max_users or len(valid) <= max_users:
        return valid
    rng = np.random.Generator(np.random.PCG64([seed, 0x7A11D]))
    return valid.subset(np.sort(rng.choice(len(valid), max_users, replace=False)))


def optimizer_step(loss: torch.Tensor, *, optimizer: torch.optim.Optimizer,
                   scaler: torch.amp.GradScaler | None, params: Any, grad_clip: float) -> None:
    """Backward, gradient-norm clipping (``grad_clip`` > 0) and one optimiser step, through the
    fp16 loss scaler when there is one."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


def wrap_ddp(module: torch.nn.Module, *, ctx: DistContext, device: str) -> torch.nn.Module:
    """``module`` under DistributedDataParallel when the run is distributed, else itself."""
    if not ctx.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    # Every buffer (the item -> SID table, the signals' count and neighbour tables) is set from
    # the same data on every rank and never changes in training: nothing to broadcast per step.
    return DDP(module, device_ids=[ctx.local_rank] if device.startswith("cuda") else None,
               broadcast_buffers=False)


def grad_scaler(amp: torch.dtype | None, device: str) -> torch.amp.GradScaler | None:
    """The loss scaler fp16 needs on a GPU; bf16 has fp32's range and does not."""
    if amp == torch.float16 and device.startswith("cuda"):
        return torch.amp.GradScaler("cuda")
    return None


def train_retriever(
    *,
    model: torch.nn.Module,
    cfg: RetrieverConfig,
    train: Examples,
    valid: Examples,
    collator: Collator,
    trie: Any,
    vocab: Any,
    device: str,
    seed: int,
    ckpt_path: Path,
    log_path: Path | None = None,
    ctx: DistContext | None = None,
    max_steps: int | None = None,
    peak_lr: float | None = None,
    warmup_steps: int | None = None,
    phase: str = "train",
    data_key: str = "",
    log_before: list[dict[str, Any]] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place and leave the best validation weights loaded.

    ``max_steps``/``peak_lr``/``warmup_steps`` override the config (used by stage 2's continued
    training). A valid checkpoint at ``ckpt_path`` with the same fingerprint (config, phase,
    budget, seed, data sizes and ``data_key``, e.g. a hash of the ID table) is resumed; a
    finished one only restores the best weights. ``log_path`` receives ``log_before`` (records
    of earlier phases) followed by this phase's records at every evaluation. ``on_step(step)``
    runs after every optimiser step (progress reporting; an exception raised there stops
    training like a crash would).
    """
    ctx = ctx or DistContext()
    n_batches = math.ceil(len(epoch_order(len(train), epoch=0, seed=seed, rank=ctx.rank,
                                          world_size=ctx.world_size)) / cfg.schedule.batch_size)
    total = int(max_steps if max_steps is not None else schedule_steps(cfg, n_batches))
    peak = float(peak_lr if peak_lr is not None else cfg.schedule.lr)
    warmup = int(warmup_steps if warmup_steps is not None else cfg.schedule.warmup_steps)
    warmup = min(warmup, max(total - 1, 0))
    amp = amp_dtype(cfg.schedule.amp, device)
    fingerprint = json.dumps(
        {"cfg": cfg.fingerprint(), "phase": phase, "total": total, "peak": peak,
         "warmup": warmup, "seed": seed, "n_train": len(train), "n_valid": len(valid),
         "vocab": int(unwrap(model).config.vocab_size), "world": ctx.world_size,
         "data": data_key},
        sort_keys=True,
    )

    model.to(device)
    net = unwrap(model)
    scorer = training_scorer(net, cfg=cfg, vocab=vocab)
    offsets = torch.tensor(vocab.offsets, device=device)
    trie_here = trie.to(device)
    ddp_model = wrap_ddp(scorer, ctx=ctx, device=device)
    optimizer = make_optimizer(net, lr=peak, weight_decay=cfg.schedule.weight_decay)
    scaler = grad_scaler(amp, device)

    state, best, resumed_from = resume_state(ckpt_path, fingerprint=fingerprint, net=net,
                                             optimizer=optimizer, phase=phase)
    if state.done:
        load_model_state(net, best)
        return TrainResult(state.step, state.best_step, state.best_metric, state.stop_reason,
                           state.seconds, state.log, resumed_from)

    valid = validation_subset(valid, max_users=cfg.schedule.val_max_users, seed=seed)

    def evaluate() -> float:
        items, _ = decode_examples(
            model=net, examples=valid, collator=collator, trie=trie, vocab=vocab,
            num_beams=cfg.decoding.num_beams, top_k=20, batch_size=cfg.schedule.eval_batch_size, device=device,
            ctx=ctx, amp=amp, desc=f"{phase} valid", normalize=cfg.normalize,
            item_score_weight=cfg.rerank_weight,
        )
        metrics = retrieval_metrics(items, valid.targets, n_items=trie.n_items)
        return float(metrics["overall"][SELECTION_METRIC])

    def checkpoint() -> None:
        if ctx.is_main:
            save_checkpoint(ckpt_path, model=net, best=best, optimizer=optimizer, state=state)
            kill_point("train-retriever.checkpoint")
            if log_path is not None:
                records = list(log_before or []) + state.log
                write_text(log_path, "".join(json.dumps(r) + "\n" for r in records))
        barrier(ctx)

    t0 = time.perf_counter() - state.seconds
    interval: dict[str, Any] = {"loss": 0.0, "n": 0}

    def time_is_up(step: int) -> bool:
        if not cfg.schedule.max_minutes:
            return False
        if not ctx.enabled:
            return time.perf_counter() - t0 > 60.0 * cfg.schedule.max_minutes
        # Every rank must stop at the same step: rank 0's clock decides, read every 50 steps.
        if step % 50:
            return False
        return broadcast_flag(time.perf_counter() - t0 > 60.0 * cfg.schedule.max_minutes, ctx)

    def run_eval() -> None:
        nonlocal best
        train_loss = all_reduce_mean(float(interval["loss"]) / max(interval["n"], 1), ctx)
        interval["loss"], interval["n"] = 0.0, 0
        metric = evaluate()
        improved = metric > state.best_metric
        if improved:
            state.best_metric, state.best_step, state.evals_since_best = metric, state.step, 0
            best = {k: v.detach().cpu().clone() for k, v in model_state(net).items()}
        else:
            state.evals_since_best += 1
        state.seconds = time.perf_counter() - t0
        state.log.append({
            "phase": phase, "step": state.step, "epoch": state.epoch,
            "train_loss": round(train_loss, 6), f"valid_{SELECTION_METRIC}": round(metric, 6),
            "lr": lr_at(state.step - 1, peak=peak, warmup=warmup, total=total),
            "seconds": round(state.seconds, 2),
        })
        log.info("%s step %d: train loss %.4f, valid %s %.4f%s", phase, state.step, train_loss,
                 SELECTION_METRIC, metric, " (best)" if improved else "")

    bar = progress(total=total, initial=state.step, desc=f"{phase}", leave=False)
    net.train()
    history_lengths = (train.history >= 0).sum(axis=1)
    stop_reason = ""
    if n_batches == 0:
        stop_reason = "no training examples"
    while not stop_reason:
        if state.epoch >= cfg.schedule.max_epochs:
            stop_reason = "max_epochs"
            break
        order = epoch_order(len(train), epoch=state.epoch, seed=seed, rank=ctx.rank,
                            world_size=ctx.world_size)
        if cfg.schedule.length_buckets:
            order = length_bucketed(order, history_lengths, batch_size=cfg.schedule.batch_size,
                                    window=cfg.schedule.length_buckets, seed=seed, epoch=state.epoch)
        while state.batch_in_epoch < n_batches:
            b = state.batch_in_epoch
            idx = order[b * cfg.schedule.batch_size : (b + 1) * cfg.schedule.batch_size]
            batch = collator(train, idx).to(device)
            set_lr(optimizer, lr_at(state.step, peak=peak, warmup=warmup, total=total))
            loss = step_loss(ddp_model, batch=batch, cfg=cfg, plain=scorer is net,
                             offsets=offsets, trie=trie_here, device=device, amp=amp)
            optimizer_step(loss, optimizer=optimizer, scaler=scaler, params=net.parameters(),
                           grad_clip=cfg.schedule.grad_clip)
            state.step += 1
            state.batch_in_epoch += 1
            # Summed on the device: reading the loss every step would stall a GPU's queue.
            interval["loss"] = interval["loss"] + loss.detach().float()
            interval["n"] += 1
            bar.update(1)

            out_of_time = time_is_up(state.step)
            last = state.step >= total or out_of_time
            if state.step % cfg.schedule.eval_every == 0 or last:
                run_eval()
                if out_of_time:
                    stop_reason = "max_minutes"
                elif last:
                    stop_reason = "max_steps"
                elif cfg.schedule.patience and state.evals_since_best >= cfg.schedule.patience:
                    stop_reason = "early_stopping"
                if stop_reason:
                    break
                checkpoint()
            if on_step is not None:
                on_step(state.step)
        if stop_reason:
            break
        state.epoch += 1
        state.batch_in_epoch = 0
    bar.close()
    if state.step and (not state.log or state.log[-1]["step"] != state.step):
        run_eval()  # stopped by max_epochs between evaluations: the last weights still compete

    load_model_state(net, best)
    state.done = True
    state.stop_reason = stop_reason
    state.seconds = time.perf_counter() - t0
    checkpoint()
    return TrainResult(state.step, state.best_step, state.best_metric, stop_reason,
                       state.seconds, state.log, resumed_from)
