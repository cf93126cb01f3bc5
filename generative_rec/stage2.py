"""Stage 2: behaviour-aware fine-tuning of the tokenizer through soft indexing (method.md §4).

Starting from the retriever trained on the stage-1 IDs:

1. **Joint fine-tuning** (``cfg.stage2.steps`` steps). For the items of a training batch, the
   tokenizer computes straight-through soft codes per quantised position,
   ``ind = onehot(argmax p) + p - sg(p)`` with ``p = softmax(sim(z, C) / tau)`` (MMQ: cosine per
   expert; RQ-VAE: per residual level). The retriever looks every quantised token up as
   ``ind @ E[offset_p : offset_p + K_p]`` instead of an integer lookup:

   in the encoder, for every history item. The target's tokens stay hard: a soft target term
   is minimised by putting every item on the same codes (it collapsed an RQ-VAE tokenizer on
   ml-100k), while through the history alone merging items only costs information.

   The collision token is not produced by the tokenizer and stays a hard token. The loss is
   ``retrieval CE + recon_weight * L_recon + aux_weight * L_aux`` (paper: 0.5 and 0.5), with the
   tokenizer's reconstruction terms computed on the same items. The tokenizer runs in eval mode
   (EMA codebooks stay fixed; gradient-trained codewords, as in RQ-VAE, still move), so the
   experts/encoder move items between codes. Under DDP the gradients of both models are averaged
   across ranks by hand, keeping every rank's tokenizer identical.

2. **Re-assignment.** Hard IDs are recomputed with the fine-tuned tokenizer, collisions
   re-resolved with the tokenizer's own strategy, and the result written to ``stage2/`` (weights,
   config, ID table, metrics; ``tokenizer.export.reassign_ids``). ``tokenizer/`` — the
   `tokenize` stage's artefact — is never touched.

3. **Continued training** of the retriever on the final IDs (``continue_steps`` steps, warmup +
   linear decay, validation model selection). When the collision position's vocabulary changed
   size, the embedding rows are carried over position by position.

4. **Adoption** (:func:`mark_stage2`, called by the stage): ``stage2/stage2.json``, written last,
   says whether validation users were served better than by the stage-1 IDs and which
   ``tokenizer/`` table it started from; :func:`tokenizer.sid.final_ids_dir` then sends every
   later reader to ``stage2/`` or ``tokenizer/``.

Works with any gradient-trained tokenizer (``mmq``, ``rqvae``).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from generative_rec.config import RetrieverConfig
from generative_rec.data import Batch, epoch_order
from generative_rec.ddp import DistContext, barrier
from generative_rec.model import (
    build_model,
    decoder_embeds,
    item_signals,
    item_token_offset,
    load_model_state,
    model_state,
    set_item_tokens,
    unwrap,
)
from generative_rec.retriever_data import (
    RetrieverData,
    make_retriever_data,
    phase_summary,
    train_phase,
)
from generative_rec.train import amp_dtype, autocast, grad_scaler, make_optimizer
from generative_rec.vocab import SidVocab
from recdata.errors import DataError
from recdata.io import (
    load_tensor_metadata,
    load_tensors,
    read_json,
    save_tensors,
    write_json,
)
from recdata.runtime import progress
from recdata.split import SequentialSplit
from recdata.layout import layout

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- which ID table


def stage1_semantic_ids(*, run_dir: Path) -> tuple[np.ndarray, list[int]]:
    """The `tokenize` stage's ID table (codes ``[N, L]``, codebook sizes): what the retriever
    is first trained on, whatever stage 2 made of it before."""
    from tokenizer.sid import SemanticIds

    sids = SemanticIds.from_file(layout(run_dir).semantic_ids)
    return np.asarray(sids.codes, np.int64), [int(s) for s in sids.codebook_sizes]


def clear_stage2(*, run_dir: Path, ctx: DistContext | None = None) -> None:
    """Remove ``stage2/`` (stage 2 switched off, or about to be rewritten); the marker goes
    first, so that a reader never trusts a half-removed folder (rank 0)."""
    ctx = ctx or DistContext()
    run = layout(run_dir)
    if ctx.is_main and run.stage2_dir.exists():
        run.stage2_marker.unlink(missing_ok=True)
        shutil.rmtree(run.stage2_dir)
    barrier(ctx)


def mark_stage2(*, run_dir: Path, adopted: bool, summary: dict[str, Any],
                ctx: DistContext | None = None) -> None:
    """Write ``stage2/stage2.json``: adopted or not, and the ``tokenizer/`` table it is based on."""
    from tokenizer.sid import table_digest

    ctx = ctx or DistContext()
    run = layout(run_dir)
    if ctx.is_main:
        write_json(run.stage2_marker, {"adopted": bool(adopted),
                                       "based_on": table_digest(run.semantic_ids), **summary})
    barrier(ctx)


# --------------------------------------------------------------------------- soft lookups


def soft_item_embeddings(
    *, embedding: torch.Tensor, soft: list[torch.Tensor], hard_tokens: torch.Tensor,
    vocab: SidVocab,
) -> torch.Tensor:
    """Per item and SID position the input vector ``[U, L, d]``: ``ind_p @ E_p`` for the
    tokenizer's positions, the hard token's row for the rest (the collision token)."""
    rows = []
    for p in range(vocab.sid_length):
        if p < len(soft):
            lo, hi = vocab.position_range(p)
            if soft[p].shape[1] != hi - lo:
                raise DataError(
                    f"tokenizer position {p} has {soft[p].shape[1]} codes but the vocabulary "
                    f"reserves {hi - lo}"
                )
            rows.append(soft[p].to(embedding.dtype) @ embedding[lo:hi])
        else:
            rows.append(embedding[hard_tokens[:, p]])
    return torch.stack(rows, dim=1)


def joint_loss(
    *, model: torch.nn.Module, tokenizer: torch.nn.Module, inputs: Any, batch: Batch,
    item_tokens: torch.Tensor, vocab: SidVocab, cfg: RetrieverConfig,
) -> dict[str, torch.Tensor]:
    """Retrieval cross-entropy through soft indexing plus the tokenizer's reconstruction terms."""
    s2 = cfg.stage2
    net = unwrap(model)
    emb = net.shared.weight
    hist, targets = batch.hist_items, batch.targets
    items = torch.unique(torch.cat([hist[hist >= 0], targets]))
    lookup = torch.full((int(item_tokens.shape[0]),), -1, dtype=torch.long, device=items.device)
    lookup[items] = torch.arange(len(items), device=items.device)
    text, image, text_mask, image_mask = inputs.rows(items)
    soft = tokenizer.soft_codes(text, image, text_mask, image_mask, tau=s2.tau)
    n_soft = len(soft)
    hard = item_tokens[items]
    per_item = soft_item_embeddings(embedding=emb, soft=soft, hard_tokens=hard, vocab=vocab)

    b, L = hist.shape[0], vocab.sid_length
    h = hist.shape[1]
    hist_emb = per_item[lookup[hist.clamp(min=0)]]  # [B, h, L, d]
    if item_token_offset(net) is not None:
        # One encoder position per item: the same scaled sum ItemSidEmbedding computes, of the
        # soft rows (forward-identical to the hard lookup).
        base = net.encoder.embed_tokens(batch.input_ids)  # [B, T, d]
        pooled = hist_emb.sum(2) * L ** -0.5
        item_id = net.encoder.embed_tokens.item_id
        if item_id is not None:
            pooled = pooled + item_id(hist.clamp(min=0))
        if net.encoder.embed_tokens.recency is not None:
            # ``base`` already holds the recency term, the pooled rows do not.
            pooled = pooled + net.encoder.embed_tokens.recency_term(batch.input_ids)[:, 1 : 1 + h]
        slots = torch.where((hist >= 0)[:, :, None], pooled, base[:, 1 : 1 + h])
        enc = torch.cat([base[:, :1], slots, base[:, 1 + h :]], dim=1)
    else:
        base = emb[batch.input_ids]  # [B, T, d]
        sid_slots = base[:, 1 : 1 + h * L].reshape(b, h, L, -1)
        sid_slots = torch.where((hist >= 0)[:, :, None, None], hist_emb, sid_slots)
        enc = torch.cat([base[:, :1], sid_slots.reshape(b, h * L, -1), base[:, 1 + h * L :]],
                        dim=1)

    t_rows = lookup[targets]
    # Hard labels: the soft codes' argmax for the tokenizer's positions (equal to the table
    # unless the tokenizer has moved the item since), the table's collision token otherwise.
    label_tokens = batch.labels.clone()
    for p in range(n_soft):
        label_tokens[:, p] = vocab.position_range(p)[0] + soft[p][t_rows].argmax(-1)
    # Teacher forcing reads the same tokens the loss asks for.
    target_emb = emb[label_tokens]
    start = emb[vocab.pad_id].expand(b, 1, -1)
    dec = torch.cat([start, target_emb[:, : L - 1]], dim=1)
    hidden = model.get_encoder()(inputs_embeds=enc,
                                 attention_mask=batch.attention_mask).last_hidden_state
    logits = model(encoder_outputs=(hidden,), attention_mask=batch.attention_mask,
                   decoder_inputs_embeds=decoder_embeds(model, enc=hidden, embeds=dec,
                                                        attention_mask=batch.attention_mask),
                   use_cache=False).logits
    terms = []
    for p in range(L):
        lo, hi = vocab.position_range(p)
        # The retriever's own output softmax: over the position's range or the whole vocabulary.
        # "children" is trained as "position" here: while the codes are soft there is no trie.
        if cfg.output_softmax in ("position", "children"):
            logp, base_id = F.log_softmax(logits[:, p, lo:hi].float(), dim=-1), lo
        else:
            logp, base_id = F.log_softmax(logits[:, p].float(), dim=-1)[:, lo:hi], lo
        label = label_tokens[:, p] - base_id
        terms.append(-logp.gather(-1, label[:, None]).squeeze(-1))
    ce = torch.stack(terms, dim=1).mean()
    rec = tokenizer.reconstruction_losses(text, image, text_mask, image_mask)
    total = ce + s2.recon_weight * rec["recon"] + s2.aux_weight * rec["aux"]
    return {"total": total, "retrieval": ce, "recon": rec["recon"], "aux": rec["aux"]}


def _all_reduce_grads(params: list[torch.nn.Parameter], ctx: DistContext) -> None:
    import torch.distributed as dist

    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(ctx.world_size)


# --------------------------------------------------------------------------- vocabulary changes


def carry_over_embeddings(*, model: torch.nn.Module, old: SidVocab, new: SidVocab,
                          cfg: RetrieverConfig, item_tokens: np.ndarray) -> torch.nn.Module:
    """A model for vocabulary ``new`` and the item -> token table ``item_tokens`` with
    ``model``'s weights; each SID position's rows are copied (up to the smaller codebook), new
    rows keep their fresh initialisation."""
    if tuple(old.codebook_sizes) == tuple(new.codebook_sizes) and \
            old.n_user_buckets == new.n_user_buckets:
        set_item_tokens(model, item_tokens)
        return model
    fresh = build_model(cfg=cfg, vocab_size=new.vocab_size, item_tokens=item_tokens)
    if item_signals(fresh) is not None:
        item_signals(fresh).copy_tables(item_signals(model))
    state = model_state(model)
    table = fresh.shared.weight.detach().clone()
    src = state["shared.weight"]
    n_fixed = old.offsets[0]
    table[:n_fixed] = src[:n_fixed]
    for p in range(min(old.sid_length, new.sid_length)):
        k = min(old.codebook_sizes[p], new.codebook_sizes[p])
        table[new.offsets[p] : new.offsets[p] + k] = src[old.offsets[p] : old.offsets[p] + k]
    state["shared.weight"] = table
    load_model_state(fresh, state)
    return fresh.to(next(model.parameters()).device)


# --------------------------------------------------------------------------- the stage


def _joint_fingerprint(cfg: RetrieverConfig, sid_hash: str, seed: int, world: int) -> str:
    return json.dumps({"cfg": cfg.fingerprint(), "stage2": cfg.to_dict()["stage2"],
                       "sid": sid_hash, "seed": seed, "world": world}, sort_keys=True)


def joint_finetune(
    *, model: torch.nn.Module, tokenizer: torch.nn.Module, inputs: Any, cfg: RetrieverConfig,
    data: Any, device: str, seed: int, ctx: DistContext,
) -> list[dict[str, Any]]:
    """Step 1: fine-tune retriever and tokenizer together; returns log records."""
    s2 = cfg.stage2
    train = data.examples["train"]
    if len(train) == 0:
        raise DataError("stage 2 needs training examples (every training sequence is too short)")
    tok_params = [p for p in tokenizer.parameters() if p.requires_grad]
    if not tok_params:
        raise DataError(
            f"stage 2 needs a gradient-trained tokenizer (mmq or rqvae); "
            f"{type(tokenizer).__name__} has no trainable parameters"
        )
    net = unwrap(model).to(device)
    net.train()
    tokenizer.eval()  # no EMA codebook updates, identical on every rank
    ret_params = [p for p in net.parameters() if p.requires_grad]
    opt_ret = make_optimizer(net, lr=s2.retriever_lr, weight_decay=cfg.schedule.weight_decay)
    opt_tok = torch.optim.AdamW(tok_params, lr=s2.tokenizer_lr, weight_decay=0.0)
    item_tokens = data.collator.item_tokens
    item_tokens_t = torch.as_tensor(item_tokens, device=device)
    amp = amp_dtype(cfg.schedule.amp, device)
    scaler = grad_scaler(amp, device)

    records: list[dict[str, Any]] = []
    sums = {"total": 0.0, "retrieval": 0.0, "recon": 0.0, "aux": 0.0}
    every = max(1, min(cfg.schedule.eval_every, max(1, s2.steps // 5)))
    step, epoch = 0, 0
    t0 = time.perf_counter()
    bar = progress(total=s2.steps, desc="stage2 joint", leave=False)
    while step < s2.steps:
        # Offset the epoch index so this phase does not replay the first phase's batch order.
        order = epoch_order(len(train), epoch=10_000 + epoch, seed=seed, rank=ctx.rank,
                            world_size=ctx.world_size)
        for start in range(0, len(order), cfg.schedule.batch_size):
            if step >= s2.steps:
                break
            batch = data.collator(train, order[start : start + cfg.schedule.batch_size]).to(device)
            with autocast(device, amp):
                losses = joint_loss(model=net, tokenizer=tokenizer, inputs=inputs, batch=batch,
                                    item_tokens=item_tokens_t, vocab=data.vocab, cfg=cfg)
            opt_ret.zero_grad(set_to_none=True)
            opt_tok.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(losses["total"]).backward()
                scaler.unscale_(opt_ret)
                scaler.unscale_(opt_tok)
            else:
                losses["total"].backward()
            if ctx.enabled:
                _all_reduce_grads(ret_params + tok_params, ctx)
            if cfg.schedule.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(ret_params, cfg.schedule.grad_clip)
                torch.nn.utils.clip_grad_norm_(tok_params, cfg.schedule.grad_clip)
            if scaler is not None:
                scaler.step(opt_ret)
                scaler.step(opt_tok)
                scaler.update()
            else:
                opt_ret.step()
                opt_tok.step()
            step += 1
            bar.update(1)
            for k in sums:
                sums[k] += float(losses[k].detach())
            if step % every == 0 or step == s2.steps:
                n = every if step % every == 0 else step % every
                rec = {"phase": "stage2_joint", "step": step, "epoch": epoch,
                       **{f"{k}_loss": round(v / n, 6) for k, v in sums.items()},
                       "seconds": round(time.perf_counter() - t0, 2)}
                records.append(rec)
                log.info("stage2 joint step %d: %s", step, rec)
                sums = dict.fromkeys(sums, 0.0)
        epoch += 1
    bar.close()
    return records


def run_stage2(
    *, model: torch.nn.Module, cfg: RetrieverConfig, run_dir: Path, split: SequentialSplit,
    data: RetrieverData, device: str, seed: int, ctx: DistContext, log_before: list[dict[str, Any]],
) -> tuple[torch.nn.Module, RetrieverData, dict[str, Any]]:
    """Steps 1-3 (module docstring). Returns the final model, the data for the final IDs and a
    summary (with ``log`` = all training records so far and ``phases``)."""
    from tokenizer.export import reassign_ids
    from tokenizer.registry import load_tokenizer
    from tokenizer.inputs import load_inputs
    from tokenizer.sid import SID_FILE, SemanticIds

    run_dir = Path(run_dir)
    t0 = time.perf_counter()
    run = layout(run_dir)
    ckpt = run.retriever_checkpoint("stage2_joint")
    fingerprint = _joint_fingerprint(cfg, data.sid_hash, seed, ctx.world_size)

    # Start from the `tokenize` stage's weights, never from an earlier stage 2's.
    tokenizer = load_tokenizer(run_dir, device=device, stage1=True)
    inputs = load_inputs(run_dir).to(device)

    records: list[dict[str, Any]]
    if ckpt.exists() and load_tensor_metadata(ckpt).get("fingerprint") == fingerprint:
        saved = load_tensors(ckpt)
        load_model_state(model, {k[6:]: v for k, v in saved.items() if k.startswith("model.")})
        tokenizer.load_state_dict({k[10:]: v for k, v in saved.items()
                                   if k.startswith("tokenizer.")})
        records = json.loads(load_tensor_metadata(ckpt)["log"])
        log.info("stage 2: joint fine-tuning restored from %s", ckpt)
    else:
        records = joint_finetune(model=model, tokenizer=tokenizer, inputs=inputs, cfg=cfg,
                                 data=data, device=device, seed=seed, ctx=ctx)
        if ctx.is_main:
            tensors = {f"model.{k}": v for k, v in model_state(model).items()}
            tensors.update({f"tokenizer.{k}": v for k, v in tokenizer.state_dict().items()})
            save_tensors(ckpt, tensors, metadata={"fingerprint": fingerprint,
                                                  "log": json.dumps(records)})
        barrier(ctx)
    joint_seconds = time.perf_counter() - t0

    # Step 2: hard IDs from the fine-tuned tokenizer, written to stage2/ (never tokenizer/).
    clear_stage2(run_dir=run_dir, ctx=ctx)
    if ctx.is_main:
        run.stage2_dir.mkdir(parents=True, exist_ok=True)
        reassign_ids(model=tokenizer.eval(), run_dir=run_dir, out_dir=run.stage2_dir)
    barrier(ctx)
    final = SemanticIds.from_file(run.stage2_dir / SID_FILE)
    codes, sizes = np.asarray(final.codes, np.int64), [int(s) for s in final.codebook_sizes]
    tok_metrics = read_json(run.stage2_dir / "metrics.json")

    n_raw = min(len(data.sizes), len(sizes)) - 1
    changed = (codes[:, :n_raw] != data.codes[:, :n_raw]).any(axis=1)
    per_position = (codes[:, :n_raw] != data.codes[:, :n_raw]).mean(axis=0)

    collision_rate = float(tok_metrics.get("collision_rate", 0.0))
    summary: dict[str, Any] = {
        "items_with_changed_codes": float(changed.mean()),
        "changed_per_position": [round(float(x), 4) for x in per_position],
        "stage1_sid_hash": data.sid_hash,
        "final_tokenizer": {k: tok_metrics.get(k) for k in
                            ("reconstruction", "entropy", "utilization", "collision_rate",
                             "max_collision_group", "sid_length")},
    }
    history = list(log_before) + records
    phases: dict[str, Any] = {"stage2_joint": {"steps": cfg.stage2.steps,
                                               "seconds": round(joint_seconds, 1)}}
    stage1_rate = float(read_json(run.tokenizer_metrics).get("collision_rate", 0.0))
    if collision_rate > stage1_rate + cfg.stage2.max_collision_increase:
        # A collapsed codebook cannot serve retrieval; spare the continued training.
        log.warning("stage 2: the re-assigned IDs collide for %.1f%% of items (stage 1: %.1f%%, "
                    "utilisation %.3f): rejected without continued training",
                    100 * collision_rate, 100 * stage1_rate,
                    float(tok_metrics.get("utilization", 0.0)))
        summary.update(rejected="collision_rate", final_sid_hash=None, log=history, phases=phases)
        return model, data, summary

    # Step 3: continue training on the final IDs.
    new_data = make_retriever_data(split=split, codes=codes, sizes=sizes, cfg=cfg,
                                   examples=data.examples, content=data.content)
    model = carry_over_embeddings(model=model, old=data.vocab, new=new_data.vocab, cfg=cfg,
                                  item_tokens=new_data.collator.item_tokens)
    if cfg.stage2.continue_steps > 0:
        s2 = cfg.stage2
        result = train_phase(
            model=model, cfg=cfg, data=new_data, run_dir=run_dir, device=device, seed=seed,
            ctx=ctx, phase="stage2_continue", log_before=history,
            max_steps=s2.continue_steps,
            peak_lr=s2.continue_lr if s2.continue_lr is not None else cfg.schedule.lr / 3,
            warmup_steps=min(cfg.schedule.warmup_steps, max(1, s2.continue_steps // 10)),
        )
        history += result.log
        phases["stage2_continue"] = phase_summary(result)
    summary.update(final_sid_hash=new_data.sid_hash, log=history, phases=phases)
    log.info("stage 2: %.1f%% of items changed codes; final collision rate %.4f",
             100 * summary["items_with_changed_codes"], tok_metrics.get("collision_rate", 0.0))
    return model, new_data, summary

