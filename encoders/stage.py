"""The `encode` stage: every item → one text embedding and one image embedding, cached.

Reads ``data/items.parquet`` and ``data/dataset.json``; writes

* ``embeddings/text.safetensors`` — "embeddings" float32 [N, d_t] (unit rows), "mask" uint8 [N];
* ``embeddings/image.safetensors`` — "embeddings" float32 [N, d_v], "mask" uint8 [N]; not written
  when the dataset has no image_path values at all;
* ``embeddings/texts.parquet`` — item_idx, item_id, text: the rendered text that was embedded;
* ``embeddings/meta.json`` — models, weights, dims, template, masked counts by reason, cache keys.

Rows are in item_idx order; masked rows are zeros. Each modality has its own cache key (model,
weights, precision, template, item set), so a changed template re-encodes the text only, and an
unchanged configuration returns at once with {"cached": True}. Work is written in shards
(embeddings/shards/) that survive a killed run. Under `torchrun`, rank r encodes the items with
item_idx % world_size == r and rank 0 merges.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recdata.errors import DataError
from recdata.io import (
    load_tensor_metadata,
    read_json,
    read_parquet,
    save_tensors,
    write_json,
    write_parquet,
)
from recdata.runtime import progress, resolve_device, seed_everything
from recdata.faults import kill_point
from recdata.layout import layout

from encoders.config import EncoderConfig
from encoders.distributed import Workers, join_workers
from encoders.shards import ShardStore
from encoders.template import render_texts
from encoders.text import TextEncoder, enable_offline_mode, text_model_fingerprint
from encoders.vision import VisionEncoder, image_weights_fingerprint, memory_format_name

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""Bump when a code change alters the embeddings, so that old caches are not trusted."""

MODALITIES = ("text", "image")


@dataclass
class _Plan:
    """What one modality will embed, and the key that identifies the result."""

    modality: str
    inputs: list[Any]  # rendered texts or image paths, in item_idx order
    key: str
    meta: dict[str, Any] = field(default_factory=dict)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _read_items(run_dir: Path) -> tuple[Any, dict[str, Any]]:
    items_path = layout(run_dir).items
    items = read_parquet(items_path)
    dataset = read_json(layout(run_dir).dataset_info)
    for column in ("item_idx", "item_id"):
        if column not in items.columns:
            raise DataError(f"items table has no {column!r} column", path=items_path)
    if items.height == 0:
        raise DataError("items table is empty", path=items_path)
    items = items.sort("item_idx")
    if not np.array_equal(items["item_idx"].to_numpy(), np.arange(items.height)):
        raise DataError("item_idx must be exactly 0..N-1 (one row per item)", path=items_path)
    return items, dataset


def _image_paths(items: Any) -> list[str | None]:
    if "image_path" not in items.columns:
        return [None] * items.height
    return [p if p is None or str(p).strip() else None for p in items["image_path"].to_list()]


def _file_state(path: str | None) -> Any:
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return [path, None]
    return [path, st.st_size, st.st_mtime_ns]


def _plan_text(cfg: EncoderConfig, items: Any, dataset: dict, dtype: str, batch_size: int) -> _Plan:
    if cfg.text_template is not None:
        template, template_source = cfg.text_template, "config"
    elif dataset.get("default_template"):
        template, template_source = str(dataset["default_template"]), "dataset default"
    else:
        template, template_source = "{title}", "fallback"
    texts = render_texts(template=template, items=items)
    item_ids = [str(x) for x in items["item_id"].to_list()]
    meta = {
        "enabled": True,
        "model": cfg.text_model,
        "weights": text_model_fingerprint(cfg.text_model),
        "template": template,
        "template_source": template_source,
        "max_text_tokens": cfg.max_text_tokens,
        "dtype": dtype,
        # Batch composition moves float results in the last bits, so it is part of the key.
        "batch_order": "length",
        "batch_size": batch_size,
        "normalised": True,
    }
    key = _digest(
        {
            "format": FORMAT_VERSION,
            "modality": "text",
            **{
                k: meta[k]
                for k in ("model", "weights", "template", "max_text_tokens", "dtype", "batch_order",
                          "batch_size")
            },
            "items": _digest(list(zip(item_ids, texts))),
        }
    )
    return _Plan("text", texts, key, meta)


def _plan_image(cfg: EncoderConfig, items: Any, dtype: str, layout: str, batch_size: int) -> _Plan:
    paths = _image_paths(items)
    item_ids = [str(x) for x in items["item_id"].to_list()]
    meta = {
        "enabled": True,
        "model": cfg.image_model,
        "weights": image_weights_fingerprint(model_name=cfg.image_model, weights=cfg.image_weights),
        "dtype": dtype,
        "layout": layout,
        "batch_size": batch_size,
        "normalised": False,
    }
    key = _digest(
        {
            "format": FORMAT_VERSION,
            "modality": "image",
            **{k: meta[k] for k in ("model", "weights", "dtype", "layout", "batch_size")},
            # Size and modification time stand in for the content: a replaced poster re-encodes.
            "items": _digest([[i, _file_state(p)] for i, p in zip(item_ids, paths)]),
        }
    )
    return _Plan("image", paths, key, meta)


def _is_cached(plan: _Plan, old_meta: dict, emb_dir: Path, n_items: int) -> bool:
    entry = old_meta.get(plan.modality) or {}
    file = emb_dir / f"{plan.modality}.safetensors"
    if entry.get("cache_key") != plan.key or old_meta.get("n_items") != n_items or not file.exists():
        return False
    try:
        return load_tensor_metadata(file).get("cache_key") == plan.key
    except Exception:
        return False


def _encode_share(
    plan: _Plan,
    *,
    cfg: EncoderConfig,
    workers: Workers,
    device: str,
    half: bool,
    store: ShardStore,
) -> int:
    """Encode this rank's unfinished items into shards; returns how many items it encoded."""
    n_items = len(plan.inputs)
    done = store.done(n_items)
    todo = [i for i in range(workers.rank, n_items, workers.world_size) if not done[i]]
    if not todo:
        return 0
    if done.any():
        logger.info("%s: resuming, %d items already in shards", plan.modality, int(done.sum()))
    if plan.modality == "text":
        encoder: Any = TextEncoder(
            model=cfg.text_model, device=device, half=half, max_tokens=cfg.max_text_tokens
        )
    else:
        encoder = VisionEncoder(
            model_name=cfg.image_model, weights=cfg.image_weights, device=device, half=half
        )
    batch_size = encode_batch_size(cfg, device)
    desc = f"encode {plan.modality}" + (f" [rank {workers.rank}]" if workers.world_size > 1 else "")
    with progress(total=len(todo), desc=desc, unit="item") as bar:
        for start in range(0, len(todo), cfg.shard_size):
            chunk = todo[start : start + cfg.shard_size]
            inputs = [plan.inputs[i] for i in chunk]
            if plan.modality == "text":
                embeddings, mask, reasons = _encode_texts(encoder, inputs, batch_size, bar)
            else:
                embeddings, mask, reasons = encoder.encode(
                    inputs, batch_size=batch_size, num_workers=cfg.num_workers, progress=bar
                )
            store.write(item_idx=chunk, embeddings=embeddings, mask=mask, reasons=reasons)
            kill_point("encode.shard")
    return len(todo)


def encode_batch_size(cfg: EncoderConfig, device: str) -> int:
    """Items per forward pass: the configured size, or the device's default (see EncoderConfig)."""
    if cfg.batch_size is not None:
        return int(cfg.batch_size)
    return 128 if str(device).startswith("cuda") else 16


def _encode_texts(
    encoder: TextEncoder, texts: list[str], batch_size: int, bar: Any
) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    present = [i for i, t in enumerate(texts) if t]
    embeddings = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    if present:
        embeddings[present] = encoder.encode([texts[i] for i in present], batch_size=batch_size, progress=bar)
    mask = np.zeros(len(texts), dtype=np.uint8)
    mask[present] = 1
    bar.update(len(texts) - len(present))
    return embeddings, mask, [None if t else "empty_text" for t in texts]


def _finish(plan: _Plan, *, store: ShardStore, emb_dir: Path, cfg: EncoderConfig) -> dict:
    """Rank 0: merge the shards into the modality's file and describe it for meta.json."""
    n_items = len(plan.inputs)
    embeddings, mask, masked = store.merge(n_items)
    meta = dict(plan.meta)
    if plan.modality == "image":
        meta["data_config"] = _image_data_config(cfg.image_model)
    meta.update(
        {
            "dim": int(embeddings.shape[1]),
            "n_items": n_items,
            "n_present": int(mask.sum()),
            "n_masked": int(n_items - mask.sum()),
            "masked": masked,
            "file": f"embeddings/{plan.modality}.safetensors",
            "cache_key": plan.key,
        }
    )
    save_tensors(
        emb_dir / f"{plan.modality}.safetensors",
        {"embeddings": embeddings, "mask": mask},
        metadata={"cache_key": plan.key, "model": str(meta["model"])},
    )
    return meta


def _image_data_config(model_name: str) -> dict:
    import timm
    from timm.data import resolve_data_config

    model = timm.create_model(model_name, pretrained=False, num_classes=0)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in resolve_data_config({}, model=model).items()}


def _plan_all(
    cfg: EncoderConfig, items: Any, dataset: dict, dtype: str, device: str
) -> tuple[list[_Plan], dict]:
    """Plans for the modalities to encode, and meta.json notes for the ones that are not."""
    plans: list[_Plan] = []
    notes: dict[str, dict[str, Any]] = {}
    if cfg.text:
        plans.append(_plan_text(cfg, items, dataset, dtype, encode_batch_size(cfg, device)))
    else:
        notes["text"] = {"enabled": False}
    if not cfg.image:
        notes["image"] = {"enabled": False}
    elif all(p is None for p in _image_paths(items)):
        notes["image"] = {
            "enabled": True,
            "absent": True,
            "reason": "dataset has no image_path values (text-only); no image file written",
        }
    else:
        plans.append(_plan_image(cfg, items, dtype, memory_format_name(device),
                                 encode_batch_size(cfg, device)))
    if not plans:
        raise DataError("nothing to encode: the text encoder is disabled and the dataset has no images")
    return plans, notes


def _write_outputs(
    *,
    plans: list[_Plan],
    notes: dict[str, dict[str, Any]],
    cached: dict[str, bool],
    stores: dict[str, ShardStore],
    old_meta: dict,
    items: Any,
    dataset: dict,
    emb_dir: Path,
    cfg: EncoderConfig,
) -> None:
    """Rank 0, after every rank has finished: merged files, texts.parquet, meta.json."""
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "dataset": dataset.get("name"),
        "n_items": items.height,
        "cache_key": _digest({p.modality: p.key for p in plans} | notes),
    }
    for plan in plans:
        if cached[plan.modality]:
            meta[plan.modality] = old_meta[plan.modality]
        else:
            meta[plan.modality] = _finish(plan, store=stores[plan.modality], emb_dir=emb_dir, cfg=cfg)
    for modality, note in notes.items():
        # A disabled or absent modality must not leave an older file for later stages to trust.
        (emb_dir / f"{modality}.safetensors").unlink(missing_ok=True)
        meta[modality] = note
    texts_path = emb_dir / "texts.parquet"
    text_plan = next((p for p in plans if p.modality == "text"), None)
    if text_plan is None:
        texts_path.unlink(missing_ok=True)
    elif not cached["text"] or not texts_path.exists():
        texts = items.select("item_idx", "item_id").with_columns(_series(text_plan.inputs))
        write_parquet(texts_path, texts)
    meta = {k: meta[k] for k in ("format_version", "dataset", "n_items", "cache_key", *MODALITIES)}
    write_json(emb_dir / "meta.json", meta)
    # Shards are deleted only once the merged files and meta.json are safely written.
    for store in stores.values():
        store.clear_modality()


def run(
    *, cfg: EncoderConfig, run_dir: Path, seed: int = 0, device: str = "auto"
) -> dict[str, Any]:
    """Encode the items of ``run_dir`` (see the module docstring); returns a summary dict."""
    started = time.perf_counter()
    run_dir = Path(run_dir)
    if (cfg.batch_size is not None and cfg.batch_size < 1) or cfg.shard_size < 1:
        raise DataError("encoder batch_size and shard_size must be at least 1")
    if not (cfg.text or cfg.image):
        raise DataError("both encoders are disabled (text: false, image: false)")
    seed_everything(seed)
    if cfg.offline:
        enable_offline_mode()
    items, dataset = _read_items(run_dir)
    emb_dir = layout(run_dir).embeddings_dir
    meta_path = emb_dir / "meta.json"

    workers = join_workers()
    try:
        device = resolve_device(device)
        if device == "cuda" and workers.world_size > 1:
            device = f"cuda:{workers.local_rank}"
        half = device.startswith("cuda") if cfg.half_precision is None else cfg.half_precision
        if half and not device.startswith("cuda"):
            logger.warning("half precision needs CUDA; encoding in float32 on %s", device)
            half = False
        dtype = "float16" if half else "float32"

        plans, notes = _plan_all(cfg, items, dataset, dtype, device)
        old_meta = read_json(meta_path) if meta_path.exists() else {}
        cached = {p.modality: _is_cached(p, old_meta, emb_dir, items.height) for p in plans}
        stores = {p.modality: ShardStore(emb_dir / "shards", modality=p.modality, key=p.key) for p in plans}

        encoded: dict[str, int] = {}
        timings: dict[str, float] = {}
        for plan in plans:
            if not cached[plan.modality]:
                t0 = time.perf_counter()
                encoded[plan.modality] = _encode_share(
                    plan, cfg=cfg, workers=workers, device=device, half=half, store=stores[plan.modality]
                )
                timings[plan.modality] = round(time.perf_counter() - t0, 3)
        workers.barrier()
        if workers.is_main:
            _write_outputs(
                plans=plans, notes=notes, cached=cached, stores=stores, old_meta=old_meta,
                items=items, dataset=dataset, emb_dir=emb_dir, cfg=cfg,
            )
        workers.barrier()
        meta = read_json(meta_path)
    finally:
        workers.close()

    summary: dict[str, Any] = {
        "cached": all(cached.values()),
        "n_items": items.height,
        "device": device,
        "dtype": dtype,
        "batch_size": encode_batch_size(cfg, device),
        "world_size": workers.world_size,
        "seconds": round(time.perf_counter() - started, 3),
    }
    for modality in MODALITIES:
        entry = meta[modality]
        summary[modality] = {
            k: entry[k] for k in ("enabled", "absent", "dim", "n_present", "n_masked", "masked") if k in entry
        }
        if modality in cached:
            summary[modality]["cached"] = cached[modality]
        if modality in timings:
            summary[modality]["encoded_here"] = encoded[modality]
            summary[modality]["seconds"] = timings[modality]
    logger.info("encode: %s", json.dumps(summary))
    return summary


def _series(values: list[str]) -> Any:
    import polars as pl

    return pl.Series("text", values, dtype=pl.Utf8)
