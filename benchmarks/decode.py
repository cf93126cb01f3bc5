"""Decoding throughput: vectorised trie beam search vs HF ``generate`` + Python trie vs unconstrained.

One TIGER-shape T5 (4+4 layers, 6 heads x 64, d_model 128, d_ff 1024; random weights), the same
queries for every method, synthetic catalogues of random SIDs (3 codes of 256 + a collision token
that numbers items sharing the 3 codes). Prints queries/second, the invalid rate of the returned
top-k lists and the agreement of the fast search's top-k with the Python-trie reference.

    python benchmarks/decode.py --device cpu --queries 64 --hf-queries 8        # quick, CPU
    python benchmarks/decode.py --device cuda --dtype bf16 --batch-size 1024 --queries 8192 \
        --hf-queries 256 --hf-batch-size 32                                      # full, GPU

With random weights the unconstrained decoder's invalid rate is close to 100 % (the model has not
learnt which token combinations exist); it shows what the constraint protects against, not what a
trained model would emit.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from transformers import T5Config, T5ForConditionalGeneration

from generative_rec.decoding import constrained_beam_search
from generative_rec.reference_decoding import build_dict_trie, hf_trie_beam_search, unconstrained_beam_search
from generative_rec.trie import SidTrie
from generative_rec.vocab import SidVocab

SIZE_NAMES = {"12k": 12_101, "200k": 200_000, "1m": 1_000_000}
CODEBOOK = 256
HISTORY = 20


def parse_size(text: str) -> int:
    key = text.strip().lower()
    return SIZE_NAMES[key] if key in SIZE_NAMES else int(float(key))


def synthetic_catalogue(n_items: int, *, seed: int) -> np.ndarray:
    """``[n_items, 4]`` unique SIDs: 3 random codes + collision index within equal 3-code groups."""
    rng = np.random.default_rng(seed)
    head = rng.integers(0, CODEBOOK, size=(n_items, 3), dtype=np.int64)
    order = np.lexsort(head.T[::-1])
    srt = head[order]
    new_group = np.ones(n_items, dtype=bool)
    new_group[1:] = (srt[1:] != srt[:-1]).any(axis=1)
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(n_items), 0))
    collision = np.empty(n_items, dtype=np.int64)
    collision[order] = np.arange(n_items) - group_start
    if collision.max() >= CODEBOOK:
        raise RuntimeError("collision group larger than the collision codebook")
    return np.concatenate([head, collision[:, None]], axis=1)


def tiger_model(vocab: SidVocab, *, seed: int) -> T5ForConditionalGeneration:
    torch.manual_seed(seed)
    cfg = T5Config(
        vocab_size=vocab.vocab_size, d_model=128, d_kv=64, num_heads=6, d_ff=1024,
        num_layers=4, num_decoder_layers=4, dropout_rate=0.1, feed_forward_proj="relu",
        pad_token_id=vocab.pad_id, eos_token_id=vocab.eos_id, decoder_start_token_id=vocab.pad_id,
    )
    return T5ForConditionalGeneration(cfg).eval()


def synthetic_queries(n: int, vocab: SidVocab, *, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """User token + SID tokens of 1..20 random history items, right-padded."""
    rng = np.random.default_rng(seed)
    seq_len = 1 + HISTORY * vocab.sid_length
    ids = np.zeros((n, seq_len), dtype=np.int64)
    mask = np.zeros((n, seq_len), dtype=np.int64)
    for q in range(n):
        hist = rng.integers(1, HISTORY + 1)
        codes = rng.integers(0, CODEBOOK, size=(hist, vocab.sid_length))
        codes[:, -1] = 0
        row = np.concatenate([[vocab.user_token(f"user{q}")], vocab.encode_sids(codes).reshape(-1)])
        ids[q, : len(row)] = row
        mask[q, : len(row)] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_batched(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], ids: torch.Tensor, mask: torch.Tensor, *,
                batch: int, device: str, repeats: int = 1) -> tuple[float, torch.Tensor]:
    """Best-of-``repeats`` seconds for all queries (inputs already on the device) and the item lists.

    The best run is the least disturbed by other processes on a shared machine.
    """
    best = float("inf")
    for _ in range(max(1, repeats)):
        outs = []
        sync(device)
        t0 = time.perf_counter()
        for lo in range(0, ids.shape[0], batch):
            outs.append(fn(ids[lo : lo + batch], mask[lo : lo + batch]))
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best, torch.cat([o.cpu() for o in outs])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="autocast precision of the model")
    ap.add_argument("--sizes", default="12k,200k,1m", help="comma-separated catalogue sizes (12k, 200k, 1m or integers)")
    ap.add_argument("--beams", default="20,50", help="comma-separated beam widths")
    ap.add_argument("--top-k", type=int, default=20, help="length of the returned lists (<= every beam width)")
    ap.add_argument("--queries", type=int, default=256, help="queries for the vectorised search")
    ap.add_argument("--batch-size", type=int, default=256, help="queries per batch, vectorised search")
    ap.add_argument("--hf-queries", type=int, default=16, help="queries for the two HF generate baselines (0 = skip)")
    ap.add_argument("--hf-batch-size", type=int, default=16, help="queries per batch, HF baselines")
    ap.add_argument("--normalize", default="children", choices=["children", "vocab"])
    ap.add_argument("--cross-attention", default="auto", choices=["auto", "shared", "expand"],
                    help="cross-attention layout of the vectorised search (see generative_rec.decoding)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repetitions per method (best is reported)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = leave default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", type=Path, default=None,
                    help="also write the table to RESULTS.json and RESULTS.md (e.g. "
                         "benchmarks/results/decode_cuda)")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda requested but no CUDA GPU is visible", file=sys.stderr)
        return 2
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    beam_list = [int(b) for b in args.beams.split(",") if b.strip()]
    if any(b < args.top_k for b in beam_list):
        print(f"error: every beam width must be >= --top-k {args.top_k}", file=sys.stderr)
        return 2

    vocab = SidVocab(codebook_sizes=[CODEBOOK] * 4, n_user_buckets=2000)
    model = tiger_model(vocab, seed=args.seed).to(device)
    n_q = max(args.queries, args.hf_queries)
    ids_all, mask_all = synthetic_queries(n_q, vocab, seed=args.seed + 1)
    ids_all, mask_all = ids_all.to(device), mask_all.to(device)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.dtype)

    def autocast() -> contextlib.AbstractContextManager[Any]:
        if amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=torch.device(device).type, dtype=amp_dtype)

    dev_name = torch.cuda.get_device_name(device) if device.startswith("cuda") else platform.processor() or "cpu"
    header = (f"device={device} ({dev_name}) dtype={args.dtype} threads={torch.get_num_threads()} "
              f"normalize={args.normalize} cross_attention={args.cross_attention} top_k={args.top_k} "
              f"queries={args.queries} batch={args.batch_size} hf_queries={args.hf_queries} "
              f"hf_batch={args.hf_batch_size} repeats={args.repeats} torch={torch.__version__}")
    builds = []
    print(f"# {header}")
    rows = []
    for n_items in sizes:
        codes = synthetic_catalogue(n_items, seed=args.seed + n_items)
        t0 = time.perf_counter()
        trie = SidTrie.from_codes(codes, device=device)
        t_trie = time.perf_counter() - t0
        trie_mb = sum(t.numel() * t.element_size() for t in [trie.codes, trie.leaf_item, *trie.child_start, *trie.child_count, *trie.node_code]) / 2**20
        dict_trie, t_dict = None, 0.0
        if args.hf_queries > 0:
            t0 = time.perf_counter()
            dict_trie = build_dict_trie(codes=codes, vocab=vocab)
            t_dict = time.perf_counter() - t0
        builds.append({"items": n_items, "trie_mib": round(trie_mb, 1),
                       "tensor_trie_seconds": round(t_trie, 2), "dict_trie_seconds": round(t_dict, 2)})
        print(f"# catalogue {n_items:,}: widths {trie.widths}, tensor trie {trie_mb:.1f} MiB built in {t_trie:.2f}s; "
              f"python dict trie built in {t_dict:.2f}s")

        for beams in beam_list:
            def fast(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
                with autocast():
                    return constrained_beam_search(model=model, input_ids=ids, attention_mask=mask, trie=trie, vocab=vocab,
                                                   num_beams=beams, top_k=args.top_k, normalize=args.normalize,
                                                   cross_attention=args.cross_attention)[0]

            def hf_trie(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
                with autocast():
                    return hf_trie_beam_search(model=model, input_ids=ids, attention_mask=mask, codes=codes, vocab=vocab,
                                               num_beams=beams, top_k=args.top_k, normalize=args.normalize, dict_trie=dict_trie)[0]

            def hf_free(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
                with autocast():
                    return unconstrained_beam_search(model=model, input_ids=ids, attention_mask=mask, codes=codes, vocab=vocab,
                                                     num_beams=beams, top_k=args.top_k, dict_trie=dict_trie)[0]

            warm = min(args.batch_size, args.queries)
            run_batched(fast, ids_all[:warm], mask_all[:warm], batch=args.batch_size, device=device)  # warm-up
            secs, fast_items = run_batched(fast, ids_all[: args.queries], mask_all[: args.queries], batch=args.batch_size, device=device, repeats=args.repeats)
            results = {"vectorised trie (ours)": (args.queries / secs, fast_items)}
            if args.hf_queries > 0:
                hq = args.hf_queries
                run_batched(hf_trie, ids_all[:1], mask_all[:1], batch=1, device=device)  # warm-up
                secs, trie_items = run_batched(hf_trie, ids_all[:hq], mask_all[:hq], batch=args.hf_batch_size, device=device, repeats=args.repeats)
                results["HF generate + Python trie"] = (hq / secs, trie_items)
                secs, free_items = run_batched(hf_free, ids_all[:hq], mask_all[:hq], batch=args.hf_batch_size, device=device, repeats=args.repeats)
                results["HF generate, unconstrained"] = (hq / secs, free_items)
                agree = float((fast_items[:hq] == trie_items).float().mean())
            else:
                agree = float("nan")
            trie_qps = results.get("HF generate + Python trie", (float("nan"), None))[0]
            for name, (qps, items) in results.items():
                invalid = float((items < 0).float().mean())
                rows.append((f"{n_items:,}", beams, name, qps, 100 * invalid, qps / trie_qps,
                             agree if name.startswith("vectorised") else float("nan")))

    table = ["| catalogue | beams | method | queries/s | invalid % | ratio vs trie | top-k agreement vs trie |",
             "|---:|---:|---|---:|---:|---:|---:|"]
    for size, beams, name, qps, inv, ratio, agree in rows:
        agree_s = "" if np.isnan(agree) else f"{100 * agree:.1f} %"
        ratio_s = "" if np.isnan(ratio) else f"{ratio:.1f}x"
        table.append(f"| {size} | {beams} | {name} | {qps:,.1f} | {inv:.1f} | {ratio_s} | {agree_s} |")
    print()
    print("\n".join(table))
    if args.results is not None:
        from recdata.io import write_json, write_text

        command = "python benchmarks/decode.py " + " ".join(argv if argv is not None else sys.argv[1:])
        write_json(args.results.with_suffix(".json"), {
            "command": command, "setup": header, "date": time.strftime("%Y-%m-%d"),
            "tries": builds,
            "rows": [{"items": size, "beams": beams, "method": name, "queries_per_s": round(qps, 1),
                      "invalid_pct": round(inv, 2),
                      "ratio_vs_trie": None if np.isnan(ratio) else round(ratio, 2),
                      "agreement_vs_trie": None if np.isnan(agree) else round(agree, 4)}
                     for size, beams, name, qps, inv, ratio, agree in rows],
        })
        write_text(args.results.with_suffix(".md"),
                   f"`{command}` ({time.strftime('%Y-%m-%d')}; {header})\n\n" + "\n".join(table) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
