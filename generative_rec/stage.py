"""Stage ``train-retriever``: train the T5 generative retriever on the run's semantic IDs,
optionally run stage 2 (behaviour-aware tokenizer fine-tuning), evaluate on the test users and
save candidates for the ranker.

Reads ``data/`` (leave-one-out split, strata) and ``tokenizer/semantic_ids.parquet``; writes

```
retriever/
  model.safetensors      final weights (best validation NDCG@10 of the last training phase)
  config.json            retriever config, vocabulary, T5 config, SID fingerprint, summary
  train_log.jsonl        one record per evaluation (phase, step, train loss, valid NDCG@10)
  metrics.json           test metrics {"overall": {...}, "strata": {...}} (contract schema)
  metrics_valid.json     the same on the validation users
  metrics_stage1.json    with stage 2: test metrics of the stage-1 retriever, for comparison
  candidates.parquet     user_idx, split (valid|test), items (list[int]), scores (list[float]):
                         the final lists, re-ordered by the priors
  candidates_model_only.parquet  the same lists in the model's own order (no priors)
  metrics_model_only.json  test metrics of those
  priors.json            the priors' weights fitted on the validation users, and the fit's trials
  transitions.safetensors  (priors.fit) the training sequences' transition counts
  content.safetensors    (priors.fit) the items' content vectors and nearest items
  checkpoint/            resumable training state (one safetensors file per phase)
```

Evaluation protocol: full-catalogue ranking by trie-constrained beam search (``decoding.num_beams``
beams for validation, ``max(num_beams, candidates_n)`` for the final lists), history items not
excluded, metrics overall and per popularity stratum of the target item. The final validation
lists also fit the priors' weights (:func:`generative_rec.priors.fit_priors`), which then
re-order both splits' lists.

Launch under ``torchrun --nproc_per_node N`` for DDP; only rank 0 writes.
"""

from __future__ import annotations

import copy
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import yaml

from generative_rec.config import RETRIEVER_FORMAT, RetrieverConfig
from generative_rec.ddp import DistContext, barrier, init_distributed, rank_device
from generative_rec.model import build_model, model_state, set_signal_tables, unwrap
from generative_rec.retriever_data import (  # noqa: F401  (re-exported)
    RetrieverData,
    make_retriever_data,
    phase_summary,
    sid_fingerprint,
    train_phase,
)
from generative_rec.stage2 import clear_stage2, mark_stage2, run_stage2, stage1_semantic_ids
from generative_rec.untrained import UntrainedItems, trained_items
from generative_rec.train import SELECTION_METRIC, amp_dtype, decode_examples, retrieval_metrics
from generative_rec.content import ContentVectors
from generative_rec.priors import CandidatePriors, fit_priors
from generative_rec.transitions import recent_items
from recdata.errors import DataError
from recdata.overrides import build_dataclass, deep_merge, parse_overrides
from recdata.io import save_tensors, write_json, write_parquet, write_text
from recdata.runtime import resolve_device, seed_everything
from recdata.split import SequentialSplit
from recdata.layout import layout

log = logging.getLogger(__name__)

METRIC_KS = (5, 10, 20)


def evaluate(
    *, model: torch.nn.Module, cfg: RetrieverConfig, data: RetrieverData, split: SequentialSplit,
    device: str, ctx: DistContext, which: str = "test", num_beams: int | None = None,
    top_k: int | None = None,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Metrics and ranked lists (items, scores) of the model's own search for the validation or
    test users (no priors: :func:`with_priors` applies them)."""
    ex = data.examples[which]
    beams = num_beams or cfg.decode_beams
    k = top_k or max(max(METRIC_KS), cfg.decoding.candidates_n)
    items, scores = decode_examples(
        model=model, examples=ex, collator=data.collator, trie=data.trie, vocab=data.vocab,
        num_beams=max(beams, k), top_k=k, batch_size=cfg.schedule.eval_batch_size, device=device, ctx=ctx,
        amp=amp_dtype(cfg.schedule.amp, device), desc=f"{which} decode", normalize=cfg.normalize,
        item_score_weight=cfg.rerank_weight,
    )
    return _metrics(items, ex.targets, split), items, scores


def _metrics(items: np.ndarray, targets: np.ndarray, split: SequentialSplit) -> dict[str, Any]:
    return retrieval_metrics(items[:, : max(METRIC_KS)], targets, n_items=split.n_items,
                             strata=split.strata)


def with_priors(*, priors: CandidatePriors, data: RetrieverData, which: str, items: np.ndarray,
                scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One split's lists re-ordered by the fitted priors (cut back to their width)."""
    if not priors.active:
        return items, scores
    recent = recent_items(data.examples[which].history, priors.history_needed)
    return priors.apply(items=items, scores=scores, recent=recent, top_k=items.shape[1])


def run_content(run_dir: Path, cfg: RetrieverConfig) -> ContentVectors | None:
    """The run's content vectors for the content prior and the item head's signals, or None
    when neither is on or the run has no cached embeddings (the transition prior is then
    fitted alone; the signals refuse to train)."""
    if not (cfg.priors.fit or cfg.item_head.signals):
        return None
    try:
        return ContentVectors.from_run_dir(run_dir)
    except DataError as exc:
        if cfg.item_head.signals:
            raise DataError(f"item_head.signals needs the run's embeddings: {exc}") from None
        log.warning("priors: no content prior (%s)", exc)
        return None


def _candidates_frame(users: np.ndarray, split_name: str, items: np.ndarray,
                      scores: np.ndarray, n: int) -> pl.DataFrame:
    items, scores = items[:, :n], scores[:, :n]
    keep = items >= 0
    return pl.DataFrame(
        {
            "user_idx": users.astype(np.int64),
            "split": [split_name] * len(users),
            "items": [row[m].tolist() for row, m in zip(items, keep)],
            "scores": [row[m].astype(np.float64).tolist() for row, m in zip(scores, keep)],
        },
        schema={"user_idx": pl.Int64, "split": pl.String, "items": pl.List(pl.Int64),
                "scores": pl.List(pl.Float64)},
    )


def save_retriever(
    *, run_dir: Path, model: torch.nn.Module, cfg: RetrieverConfig, data: RetrieverData,
    summary: dict[str, Any],
) -> None:
    out = layout(run_dir).retriever_dir
    save_tensors(out / "model.safetensors", model_state(model),
                 metadata={"sid_hash": data.sid_hash})
    if data.transitions is not None:
        data.transitions.save(layout(run_dir).retriever_transitions)
    else:
        layout(run_dir).retriever_transitions.unlink(missing_ok=True)  # an earlier run's
    if data.content is not None:
        data.content.save(layout(run_dir).retriever_content)
    else:
        layout(run_dir).retriever_content.unlink(missing_ok=True)
    write_json(out / "config.json", {
        "version": RETRIEVER_FORMAT,
        "retriever": cfg.to_dict(),
        "vocab": data.vocab.to_dict(),
        "t5": unwrap(model).config.to_dict(),
        "sid_hash": data.sid_hash,
        "summary": summary,
    })


# --------------------------------------------------------------------------- the stage


def run(*, cfg: RetrieverConfig, run_dir: Path, seed: int = 0, device: str = "auto") -> dict:
    """Train (and with ``cfg.stage2.enabled`` fine-tune the tokenizer), evaluate, write
    ``retriever/``. Returns a summary dict (also stored in ``retriever/config.json``)."""

    run_dir = Path(run_dir)
    t_start = time.perf_counter()
    device = resolve_device(device)
    ctx = init_distributed(device)
    device = rank_device(device, ctx)
    seed_everything(seed)
    out = layout(run_dir).retriever_dir

    split = SequentialSplit.from_run_dir(run_dir)
    codes, sizes = stage1_semantic_ids(run_dir=run_dir)
    if not cfg.stage2.enabled:
        clear_stage2(run_dir=run_dir, ctx=ctx)  # an earlier run's stage 2 no longer applies
    data = make_retriever_data(split=split, codes=codes, sizes=sizes, cfg=cfg,
                               content=run_content(run_dir, cfg))
    log.info("retriever: %d users, %d items, SID length %d, vocab %d, %d training prefixes",
             split.n_users, split.n_items, data.vocab.sid_length, data.vocab.vocab_size,
             len(data.examples["train"]))

    seed_everything(seed)
    model = build_model(cfg=cfg, vocab_size=data.vocab.vocab_size,
                        item_tokens=data.collator.item_tokens)
    set_signal_tables(model, transitions=data.transitions, content=data.content,
                      popularity=split.train_counts)
    n_params = sum(p.numel() for p in model.parameters())
    result = train_phase(model=model, cfg=cfg, data=data, run_dir=run_dir, device=device,
                         seed=seed, ctx=ctx, phase="train")
    phases = {"train": phase_summary(result)}
    history = list(result.log)
    summary: dict[str, Any] = {"parameters": n_params, "world_size": ctx.world_size}

    final_test = final_valid = None
    if cfg.stage2.enabled:
        stage1_test = evaluate(model=model, cfg=cfg, data=data, split=split, device=device,
                               ctx=ctx, which="test")
        stage1_valid = evaluate(model=model, cfg=cfg, data=data, split=split, device=device,
                                ctx=ctx, which="valid")
        before, valid_before = stage1_test[0], stage1_valid[0]
        if ctx.is_main:
            write_json(out / "metrics_stage1.json", before)
        stage1_model, stage1_data = copy.deepcopy(unwrap(model)), data
        model, data, s2 = run_stage2(
            model=model, cfg=cfg, run_dir=run_dir, split=split, data=data, device=device,
            seed=seed, ctx=ctx, log_before=history,
        )
        history = s2.pop("log")
        phases.update(s2.pop("phases"))
        # Stage-2 IDs replace the stage-1 ones only when they serve validation users better.
        metric = f"valid_{SELECTION_METRIC}"
        stage2_valid = None if s2.get("rejected") else evaluate(
            model=model, cfg=cfg, data=data, split=split, device=device, ctx=ctx, which="valid")
        s2[metric] = {"stage1": valid_before["overall"][SELECTION_METRIC],
                      "stage2": stage2_valid and stage2_valid[0]["overall"][SELECTION_METRIC]}
        s2["adopted"] = bool(stage2_valid and s2[metric]["stage2"] > s2[metric]["stage1"])
        if stage2_valid is None:
            log.info("stage 2: re-assigned IDs rejected (%s); keeping the stage-1 IDs and "
                     "retriever", s2["rejected"])
        elif not s2["adopted"]:
            log.info("stage 2: validation %s %.4f does not beat stage 1's %.4f; keeping the "
                     "stage-1 IDs and retriever", SELECTION_METRIC, s2[metric]["stage2"],
                     s2[metric]["stage1"])
        if s2["adopted"]:
            final_valid = stage2_valid
        else:
            model, data = stage1_model, stage1_data
            final_test, final_valid = stage1_test, stage1_valid
        mark_stage2(run_dir=run_dir, adopted=s2["adopted"], ctx=ctx, summary={
            k: s2[k] for k in ("stage1_sid_hash", "final_sid_hash", metric, "rejected")
            if k in s2})
        summary["stage2"] = s2
        summary["stage1_test"] = {k: before["overall"][k] for k in
                                  ("recall@10", "ndcg@10", "recall@20", "ndcg@20")}

    # Decodings of the final model already made for stage 2's verdict are not repeated.
    model_test, test_items, test_scores = final_test or evaluate(
        model=model, cfg=cfg, data=data, split=split, device=device, ctx=ctx, which="test")
    model_valid, valid_items, valid_scores = final_valid or evaluate(
        model=model, cfg=cfg, data=data, split=split, device=device, ctx=ctx, which="valid")
    raw = {"valid": (valid_items, valid_scores), "test": (test_items, test_scores)}
    priors, prior_fit = fit_priors(
        items=valid_items, scores=valid_scores,
        recent=recent_items(data.examples["valid"].history, cfg.priors.history_depth),
        targets=data.examples["valid"].targets, top_k=valid_items.shape[1], cfg=cfg.priors,
        transitions=data.transitions, content=data.content,
        untrained=None if data.content is None else UntrainedItems.build(
            content=data.content,
            trained=trained_items(split.train_sequences, split.n_items)))
    valid_items, valid_scores = with_priors(priors=priors, data=data, which="valid",
                                            items=valid_items, scores=valid_scores)
    test_items, test_scores = with_priors(priors=priors, data=data, which="test",
                                          items=test_items, scores=test_scores)
    test_metrics = _metrics(test_items, data.examples["test"].targets, split)
    valid_metrics = _metrics(valid_items, data.examples["valid"].targets, split)
    summary.update({
        "phases": phases,
        "test": {k: test_metrics["overall"][k] for k in
                 ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20",
                  "invalid@10")},
        "test_model_only": {k: model_test["overall"][k] for k in ("recall@10", "ndcg@10")},
        "priors": priors.weights(),
        "decode_beams": cfg.decode_beams,
        "candidates_n": cfg.decoding.candidates_n,
        "seconds": round(time.perf_counter() - t_start, 1),
    })
    if ctx.is_main:
        # metrics.json last: its presence means every other artefact is complete.
        save_retriever(run_dir=run_dir, model=model, cfg=cfg, data=data, summary=summary)
        write_json(layout(run_dir).retriever_priors, {k: v for k, v in prior_fit.items()})
        n = cfg.decoding.candidates_n
        users = {which: data.examples[which].users for which in ("valid", "test")}
        write_parquet(layout(run_dir).candidates_model_only, pl.concat([
            _candidates_frame(users[which], which, *raw[which], n) for which in ("valid", "test")]))
        write_json(layout(run_dir).retriever_metrics_model_only, model_test)
        frame = pl.concat([
            _candidates_frame(users["valid"], "valid", valid_items, valid_scores, n),
            _candidates_frame(users["test"], "test", test_items, test_scores, n),
        ])
        write_parquet(out / "candidates.parquet", frame)
        write_text(out / "train_log.jsonl", "".join(json.dumps(r) + "\n" for r in history))
        write_json(out / "metrics_valid.json", valid_metrics)
        if not cfg.stage2.enabled:
            (out / "metrics_stage1.json").unlink(missing_ok=True)  # from an earlier stage-2 run
        write_json(out / "metrics.json", test_metrics)
    barrier(ctx)
    log.info("retriever: test recall@10 %.4f ndcg@10 %.4f (model alone %.4f / %.4f) (%.0f s)",
             test_metrics["overall"]["recall@10"], test_metrics["overall"]["ndcg@10"],
             model_test["overall"]["recall@10"], model_test["overall"]["ndcg@10"],
             summary["seconds"])
    return summary


def stage_config(run_dir: Path, *, config: Path | None, overrides: list[str]) -> RetrieverConfig:
    """The ``retriever:`` section of ``config`` (default: the run's ``config.yaml``, written
    by ``mmqrec run``; the built-in defaults when the run has none) with ``--set`` strings
    applied on top; old flat keys are read in their section with one warning."""
    path = config if config is not None else run_dir / "config.yaml"
    base: dict[str, Any] = {}
    if config is not None or path.exists():
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise DataError(f"cannot read the config: {str(exc).splitlines()[0]}", path=path) from None
        if not isinstance(raw, dict) or "extends" in raw:
            raise DataError("expected a resolved run config (a run's config.yaml, no 'extends')",
                            path=path)
        base = RetrieverConfig.upgrade_legacy_keys(dict(raw.get("retriever") or {}))
    extra = RetrieverConfig.upgrade_legacy_keys(parse_overrides(overrides))
    return build_dataclass(RetrieverConfig, deep_merge(base, extra), "retriever")


def main(argv: list[str] | None = None) -> int:
    """``python -m generative_rec.stage RUN_DIR``: this stage alone, e.g. under
    ``torchrun --nproc_per_node 2 -m generative_rec.stage RUN_DIR``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m generative_rec.stage",
                                     description=main.__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--config", type=Path, default=None,
                        help="a resolved run config whose retriever: section to use (default: "
                             "RUN_DIR/config.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a RetrieverConfig field over the config, as for mmqrec --set "
                             "(without the retriever. prefix), e.g. schedule.max_steps=500 or "
                             "stage2.enabled=true (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        cfg = stage_config(args.run_dir, config=args.config, overrides=args.set)
        summary = run(cfg=cfg, run_dir=args.run_dir, seed=args.seed, device=args.device)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary.get("test", {}), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
