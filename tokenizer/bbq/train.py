"""Training loop of the BBQ tokenizer: content losses plus behaviour binding from user histories.

Each step draws ``pair_batch`` (history -> next item) pairs from the TRAINING sequences
(``s[:-2]`` of every user; validation and test targets are never read) and ``item_batch`` random
catalogue items. The step's item set is the union of every history item, target and random item;
the tokenizer runs once over that set, and

    L = contrastive_weight * InfoNCE(sequence -> next item)
      + recon_weight * L_recon + mi_weight * sum_m I_CLUB(b_m; s_m) + codebook_weight * L_codebook

steps the encoders, decoders, ID vectors and sequence pooler (AdamW), while the CLUB estimators
take their own Adam step on the log-likelihood of the detached latents. After ``warmup_steps``
on the continuous latent, the codebooks are k-means-initialised and quantisation switches on;
dead codes are reset every ``reset_every`` steps until the last ``reset_stop_fraction``.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from recdata.errors import DataError
from recdata.runtime import progress
from tokenizer.bbq.model import BBQTokenizer
from tokenizer.inputs import TokenizerInputs
from recdata.metrics import utilization
from tokenizer.train import reset_dead_codes

log = logging.getLogger(__name__)


class PairSampler:
    """All (history window -> next item) pairs of a set of training sequences.

    Pair (u, k) for k >= 1: history ``s_u[max(0, k - W):k]`` right-aligned in a row of width W
    (``-1`` = padding), target ``s_u[k]``. Epochs are random permutations of all pairs.
    """

    def __init__(self, sequences: list[np.ndarray], *, window: int, n_items: int) -> None:
        seqs = [np.asarray(s, dtype=np.int64) for s in sequences]
        for u, s in enumerate(seqs):
            if len(s) and (s.min() < 0 or s.max() >= n_items):
                raise DataError(f"training sequence of user {u} holds an item outside 0..{n_items - 1}")
        lengths = np.array([len(s) for s in seqs], dtype=np.int64)
        self.window = int(window)
        width = int(lengths.max(initial=0))
        self.padded = np.full((len(seqs), max(width, 1)), -1, dtype=np.int64)
        for u, s in enumerate(seqs):
            self.padded[u, : len(s)] = s
        counts = np.maximum(lengths - 1, 0)
        self.user = np.repeat(np.arange(len(seqs)), counts)
        self.pos = np.concatenate([np.arange(1, n) for n in lengths if n > 1]) if counts.sum() else \
            np.zeros(0, dtype=np.int64)
        self._order = np.zeros(0, dtype=np.int64)
        self._cursor = 0

    def __len__(self) -> int:
        return int(len(self.user))

    def pairs(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(history [B, W] item_idx with -1 padding, target [B]) of the given pair indices."""
        user, pos = self.user[index], self.pos[index]
        cols = pos[:, None] - self.window + np.arange(self.window)[None, :]
        hist = self.padded[user[:, None], np.maximum(cols, 0)]
        hist = np.where(cols >= 0, hist, -1)
        return hist, self.padded[user, pos]

    def next_batch(self, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if self._cursor >= len(self._order):
            self._order = rng.permutation(len(self))
            self._cursor = 0
        index = self._order[self._cursor: self._cursor + size]
        self._cursor += size
        return self.pairs(index)


def pair_reference(sequences: list[np.ndarray], window: int) -> list[tuple[list[int], int]]:
    """Slow oracle for :class:`PairSampler`: every (history, target) pair, in (user, k) order."""
    out = []
    for s in sequences:
        s = list(map(int, s))
        for k in range(1, len(s)):
            hist = s[max(0, k - window):k]
            out.append(([-1] * (window - len(hist)) + hist, s[k]))
    return out


def behaviour_agreement(codes: np.ndarray, sequences: list[np.ndarray], *, level: int = 0) -> dict[str, float]:
    """How strongly codes follow behaviour: the share of consecutive training items (s_k, s_k+1)
    whose code at ``level`` agrees, against the share expected for unrelated items under the
    same code frequencies (sum of squared interaction-weighted code shares). Ratio > 1 means
    consecutive consumption clusters in code space."""
    codes = np.asarray(codes)
    firsts = [s[:-1] for s in sequences if len(s) > 1]
    if not firsts:
        return {"same_code_next": 0.0, "same_code_chance": 0.0, "lift": 0.0}
    a = np.concatenate(firsts)
    b = np.concatenate([s[1:] for s in sequences if len(s) > 1])
    same = float((codes[a, level] == codes[b, level]).mean())
    share = np.bincount(codes[np.concatenate([a, b]), level]).astype(np.float64)
    share /= share.sum()
    chance = float((share ** 2).sum())
    return {"same_code_next": same, "same_code_chance": chance, "lift": same / chance if chance else 0.0}


def fit_bbq(
    model: BBQTokenizer,
    inputs: TokenizerInputs,
    *,
    train_sequences: list[np.ndarray],
    seed: int = 0,
) -> dict:
    """Fit ``model`` (on the device of ``inputs``) with behaviour binding; returns a history."""
    cfg, b = model.cfg, model.bbq
    start = time.perf_counter()
    device = inputs.text.device
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    n = inputs.n_items
    sampler = PairSampler(train_sequences, window=b.seq_window, n_items=n)
    if len(sampler) == 0:
        raise DataError("BBQ needs user histories: no training sequence has two or more items")

    model.fit_standardisation(inputs)
    model.bind_items(n)
    model.quantise_active = b.warmup_steps == 0
    if model.quantise_active:
        model.init_codebooks(inputs, generator)
    main_params = model.main_parameters()
    club_params = model.estimator_parameters()
    opt = torch.optim.AdamW(main_params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    club_opt = torch.optim.Adam(club_params, lr=b.club_lr)
    last_reset = int(np.floor(b.steps * (1.0 - cfg.reset_stop_fraction)))
    sizes = model.codebook_sizes
    history: list[dict] = []
    sums: dict[str, float] = {}
    count = 0
    model.train()
    bar = progress(range(b.steps), desc="tokenizer[bbq]", unit="step")
    for step in bar:
        if step == b.warmup_steps and not model.quantise_active:
            model.quantise_active = True
            model.init_codebooks(inputs, generator)
        hist_np, tgt_np = sampler.next_batch(b.pair_batch, rng)
        extra = rng.integers(0, n, size=b.item_batch)
        items_np = np.unique(np.concatenate([hist_np[hist_np >= 0], tgt_np, extra]))
        hist_pos = np.where(hist_np >= 0, np.searchsorted(items_np, np.maximum(hist_np, 0)), -1)
        tgt_pos = np.searchsorted(items_np, tgt_np)
        items = torch.from_numpy(items_np).to(device)
        keep = torch.from_numpy(rng.random(len(items_np)) >= b.id_dropout).to(device)

        out = model.item_forward(inputs.rows(items), items, keep)
        con = model.contrastive_loss(out["rep"], torch.from_numpy(hist_pos).to(device),
                                     torch.from_numpy(tgt_pos).to(device))
        loss = (b.contrastive_weight * con + b.recon_weight * out["recon"]
                + b.mi_weight * out["mi"] + cfg.codebook_weight * out["codebook"])
        opt.zero_grad(set_to_none=True)
        club_opt.zero_grad(set_to_none=True)
        # The bound is minimised by the encoders only; the estimator fits q(s|b) by likelihood.
        loss.backward(inputs=main_params)
        if out["club_ll"].requires_grad:
            (-out["club_ll"]).backward(inputs=club_params)
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(main_params, cfg.grad_clip)
        opt.step()
        club_opt.step()

        for key, value in (("total", loss), ("contrastive", con), ("recon", out["recon"]),
                           ("mi", out["mi"]), ("codebook", out["codebook"]), ("club_ll", out["club_ll"])):
            sums[key] = sums.get(key, 0.0) + float(value.detach())
        count += 1
        done = step + 1 == b.steps
        if (step + 1) % b.reset_every == 0 or done:
            record = {"step": step + 1, **{k: v / count for k, v in sums.items()}}
            sums, count = {}, 0
            if model.quantise_active:
                util = utilization(model.encode_inputs(inputs).cpu().numpy(), sizes)
                record["utilization"] = util.tolist()
                if cfg.dead_code_reset and step + 1 <= last_reset and not done:
                    record["codes_reset"] = reset_dead_codes(model, inputs, generator)
            bar.set_postfix(con=f"{record['contrastive']:.3f}", recon=f"{record['recon']:.3f}",
                            mi=f"{record['mi']:.3f}")
            log.debug("bbq step %d: %s", step + 1, record)
            history.append(record)
    bar.close()
    model.eval()
    return {"epochs": history, "stopped_early": None, "seconds": time.perf_counter() - start}
