"""Stage-1 training loop shared by the gradient-trained tokenizers (MMQ, RQ-VAE).

Per epoch: shuffled minibatches of the catalogue, AdamW on the stage-1 objective; then a
full-catalogue pass that measures live utilisation per codebook (shown in the progress bar),
warns (or stops, ``cfg.stop_on_collapse``) when a codebook has collapsed, and resets dead codes.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from recdata.runtime import progress
from recdata.faults import kill_point
from tokenizer.base import SemanticTokenizer
from tokenizer.inputs import TokenizerInputs
from recdata.metrics import utilization

log = logging.getLogger(__name__)


@torch.no_grad()
def reset_dead_codes(model: SemanticTokenizer, inputs: TokenizerInputs, generator: torch.Generator) -> int:
    """Move every unused codeword onto the latent of an item drawn from a crowded code.

    Items are drawn uniformly among those whose code holds >= 2 items, never taking a code's
    last item, so big clusters split first, no live code dies, and the drawn item immediately
    owns the new codeword. Returns the number of codes reset.
    """
    total = 0
    for cb, (z, valid) in zip(model.codebook_modules(), model.position_latents(inputs)):
        z = z[valid]
        if z.shape[0] == 0:
            continue
        codes = cb.assign(z)
        counts = torch.bincount(codes, minlength=cb.size)
        dead = torch.nonzero(counts == 0).flatten()
        if len(dead) == 0:
            continue
        crowded = torch.nonzero(counts[codes] >= 2).flatten()
        order = crowded[torch.randperm(len(crowded), generator=generator).to(crowded.device)]
        left = counts.clone()
        chosen = []
        for i in order.tolist():
            if len(chosen) == len(dead):
                break
            if left[codes[i]] >= 2:
                left[codes[i]] -= 1
                chosen.append(i)
        if not chosen:
            continue
        take = len(chosen)
        cb.set_codewords(dead[:take], z[torch.tensor(chosen, device=z.device)],
                         count=max(1.0, float(counts.float().mean())))
        total += take
    return total


def fit_tokenizer(model: SemanticTokenizer, inputs: TokenizerInputs, *, seed: int = 0) -> dict:
    """Fit ``model`` on ``inputs`` (already on the model's device); returns a training history."""
    cfg = model.cfg
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    model.fit_standardisation(inputs)
    if not model.trainable:
        model.fit_nonparametric(inputs, generator)
        return {"epochs": [], "stopped_early": None, "final_codes_reset": 0,
                "seconds": time.perf_counter() - start}

    warmup = min(cfg.warmup_epochs, cfg.epochs - 1)
    model.quantise = warmup == 0
    if model.quantise:
        model.init_codebooks(inputs, generator)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=model.learning_rate(), weight_decay=cfg.weight_decay)
    n = inputs.n_items
    last_reset_epoch = int(np.floor(cfg.epochs * (1.0 - cfg.reset_stop_fraction)))
    names = model.position_names
    sizes = model.codebook_sizes
    history: list[dict] = []
    stopped = None
    bar = progress(range(cfg.epochs), desc=f"tokenizer[{cfg.name}]", unit="epoch")
    for epoch in bar:
        if epoch == warmup and not model.quantise:
            model.quantise = True
            model.init_codebooks(inputs, generator)
        model.train()
        perm = torch.randperm(n, generator=generator).to(inputs.text.device)
        sums: dict[str, float] = {}
        steps = 0
        for lo in range(0, n, cfg.batch_size):
            idx = perm[lo: lo + cfg.batch_size]
            losses = model.reconstruction_losses(*inputs.rows(idx))
            opt.zero_grad(set_to_none=True)
            losses["total"].backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            steps += 1
        record = {"epoch": epoch + 1, **{k: v / max(steps, 1) for k, v in sums.items()}}
        last = epoch + 1 == cfg.epochs
        if model.quantise and ((epoch + 1) % cfg.eval_every == 0 or last):
            codes = model.encode_inputs(inputs).cpu().numpy()
            util = utilization(codes, sizes)
            record["utilization"] = util.tolist()
            collapsed = [names[i] for i in np.nonzero(util < cfg.collapse_threshold)[0]]
            if collapsed:
                record["collapsed"] = collapsed
                log.warning("epoch %d: codebook collapse (utilisation < %.2f) at %s: %s",
                            epoch + 1, cfg.collapse_threshold, ", ".join(collapsed),
                            ", ".join(f"{u:.3f}" for u in util))
                if cfg.stop_on_collapse:
                    stopped = f"codebook collapse at epoch {epoch + 1}: {', '.join(collapsed)}"
            if cfg.dead_code_reset and epoch + 1 <= last_reset_epoch and not last and stopped is None:
                record["codes_reset"] = reset_dead_codes(model, inputs, generator)
            bar.set_postfix(loss=f"{record['total']:.4f}", recon=f"{record['recon']:.4f}",
                            util_mean=f"{util.mean():.3f}", util_min=f"{util.min():.3f}")
            if (epoch + 1) % 5 == 0 or last:  # the bar is off in logs and pipes
                log.info("%s epoch %d/%d: loss %.4f, recon %.4f, utilisation mean %.3f min %.3f",
                         cfg.name, epoch + 1, cfg.epochs, record["total"], record["recon"],
                         util.mean(), util.min())
        elif not model.quantise:
            bar.set_postfix(loss=f"{record['total']:.4f}", recon=f"{record['recon']:.4f}", phase="warm-up")
        history.append(record)
        kill_point("tokenize.epoch")
        if stopped:
            log.warning("stopping early: %s", stopped)
            break
    bar.close()
    model.quantise = True
    final_resets = 0
    if cfg.dead_code_reset and stopped is None:
        # Codes that died in the reset-free final epochs get one last reset (a reset item can
        # pull a neighbour off a code, so repeat while that helps).
        for _ in range(3):
            done = reset_dead_codes(model, inputs, generator)
            final_resets += done
            if done == 0:
                break
    model.eval()
    return {"epochs": history, "stopped_early": stopped, "final_codes_reset": final_resets,
            "seconds": time.perf_counter() - start}
