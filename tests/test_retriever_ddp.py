"""Multi-process training (DDP, gloo on CPU): two ranks end with identical weights, and the
sharded validation decode gathers the same lists a single process produces."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from generative_rec.ddp import init_distributed
    from generative_rec.model import build_model, model_state
    from generative_rec.train import decode_examples, train_retriever
    from recdata.io import save_tensors
    from test_retriever import cyclic_problem, tiny_cfg

    torch.set_num_threads(1)
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    ctx = init_distributed("cpu")
    assert ctx.enabled and ctx.rank == rank
    ex, vocab, collator, trie = cyclic_problem()
    cfg = tiny_cfg(dropout=0.1, schedule=dict(max_steps=12, eval_every=6, lr=5e-3))
    torch.manual_seed(0)
    model = build_model(cfg=cfg, vocab_size=vocab.vocab_size, item_tokens=collator.item_tokens)
    init = {k: v.clone() for k, v in model_state(model).items()}
    # Different dropout streams per rank, as in a real launch; DDP must still keep weights equal.
    torch.manual_seed(100 + rank)
    train_retriever(model=model, cfg=cfg, train=ex["train"], valid=ex["valid"], collator=collator,
                    trie=trie, vocab=vocab, device="cpu", seed=0,
                    ckpt_path=Path(out) / "ckpt" / "train.safetensors",
                    log_path=Path(out) / "train_log.jsonl", ctx=ctx)
    items, scores = decode_examples(model=model, examples=ex["valid"], collator=collator,
                                    trie=trie, vocab=vocab, num_beams=20, top_k=20,
                                    batch_size=5, device="cpu", ctx=ctx,
                                    normalize=cfg.normalize)
    state = model_state(model)
    tensors = {f"model.{k}": v for k, v in state.items()}
    tensors.update({f"init.{k}": v for k, v in init.items()})
    tensors["items"] = torch.as_tensor(items)
    save_tensors(Path(out) / f"rank{rank}.safetensors", tensors)
    dist.destroy_process_group()


@pytest.mark.timeout(180)
def test_two_gloo_ranks_stay_identical(tmp_path):
    from generative_rec.model import build_model, load_model_state
    from generative_rec.train import decode_examples
    from recdata.io import load_tensors
    from test_retriever import cyclic_problem, tiny_cfg

    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = load_tensors(tmp_path / "rank0.safetensors")
    r1 = load_tensors(tmp_path / "rank1.safetensors")
    model_keys = [k for k in r0 if k.startswith("model.")]
    assert model_keys
    for k in model_keys:
        assert torch.equal(r0[k], r1[k]), k
    assert any(not torch.equal(r0[k], r0["init." + k[6:]]) for k in model_keys)
    assert torch.equal(r0["items"], r1["items"])
    # Only rank 0 wrote the checkpoint and the log.
    assert (tmp_path / "ckpt" / "train.safetensors").exists()
    assert len((tmp_path / "train_log.jsonl").read_text().splitlines()) == 2

    # The gathered sharded decode equals a single-process decode of the same weights.
    ex, vocab, collator, trie = cyclic_problem()
    cfg = tiny_cfg()
    model = build_model(cfg=cfg, vocab_size=vocab.vocab_size, item_tokens=collator.item_tokens)
    load_model_state(model, {k[6:]: r0[k] for k in model_keys})
    items, _ = decode_examples(model=model, examples=ex["valid"], collator=collator, trie=trie,
                               vocab=vocab, num_beams=20, top_k=20, batch_size=5, device="cpu",
                               normalize=cfg.normalize)
    assert np.array_equal(items, r0["items"].numpy())

