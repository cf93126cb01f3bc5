"""Codebooks: k-means, cosine / Euclidean vector quantisation, EMA updates, dead-code reset.

A :class:`Codebook` maps latents to the index of one of its ``size`` codewords:

* ``metric="cosine"`` (MMQ): latents and codewords live on the unit sphere and the code is
  ``argmax_j cos(z, C[j])``; the quantised vector is the unit codeword.
* ``metric="l2"``: the code is the nearest codeword in Euclidean distance (RQ-VAE, and the MMQ
  "without cosine" ablation); the quantised vector is the raw codeword.

Codewords learn either by the VQ-VAE codebook loss (``update="loss"``, gradient) or by an
exponential moving average of the latents assigned to them (``update="ema"``, done in the forward
pass while the module is in training mode, like BatchNorm statistics). Both add the commitment
term ``beta * ||z - sg(c)||^2`` that pulls the encoder towards its codeword.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _prepare(x: torch.Tensor, spherical: bool) -> torch.Tensor:
    return F.normalize(x, dim=-1) if spherical else x


def similarity(x: torch.Tensor, centers: torch.Tensor, *, spherical: bool) -> torch.Tensor:
    """[N, K] scores, higher = closer: cosine (inputs already unit) or minus squared distance."""
    if spherical:
        return x @ centers.T
    # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2; the ||x||^2 term is kept so the value is a distance.
    return -(x.pow(2).sum(1, keepdim=True) - 2.0 * (x @ centers.T) + centers.pow(2).sum(1)[None, :])


def kmeans(
    x: torch.Tensor,
    k: int,
    *,
    iters: int,
    generator: torch.Generator,
    spherical: bool = False,
    balanced: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means with k-means++ seeding; returns (centers [k, d], assignment [N]).

    ``balanced=True`` caps every cluster at ceil(N / k) points during the Lloyd iterations
    (see :func:`balanced_assign`): in high dimensions plain k-means puts most points in one
    cluster near the mean and spends the other centres on outliers.
    ``spherical=True`` clusters directions (unit inputs, unit centres, cosine assignment).
    Empty clusters are re-seeded with the point worst served by its centre, so every centre
    ends up owning a point whenever there are at least k distinct points.
    When there are fewer points than k, the missing centres are jittered copies of points.
    """
    x = _prepare(x.detach().float(), spherical)
    n, d = x.shape
    if n == 0:
        raise ValueError("k-means needs at least one point")
    device = x.device
    if n <= k:
        extra = torch.randint(0, n, (k - n,), generator=generator).to(device)
        noise = 1e-3 * torch.randn(k - n, d, generator=generator).to(device)
        centers = torch.cat([x, x[extra] + noise])
        centers = _prepare(centers, spherical)
        return centers, torch.arange(n, device=device)

    # k-means++: each next seed drawn with probability proportional to its squared distance.
    first = int(torch.randint(0, n, (1,), generator=generator))
    chosen = [first]
    best = (x - x[first]).pow(2).sum(1)
    for _ in range(1, k):
        weights = best.clamp_min(0).cpu()
        if float(weights.sum()) <= 0:
            nxt = int(torch.randint(0, n, (1,), generator=generator))
        else:
            nxt = int(torch.multinomial(weights, 1, generator=generator))
        chosen.append(nxt)
        best = torch.minimum(best, (x - x[nxt]).pow(2).sum(1))
    centers = x[torch.tensor(chosen, device=device)].clone()
    return _lloyd(x, centers, iters, spherical, balanced)


def balanced_assign(scores: torch.Tensor, capacity: int) -> torch.Tensor:
    """Assign each row to its best-scoring column that still has room (at most ``capacity``
    rows per column); rows whose best score is highest choose first."""
    s = scores.detach().cpu().double().numpy()
    n, k = s.shape
    if capacity * k < n:
        raise ValueError(f"capacity {capacity} x {k} columns cannot hold {n} rows")
    room = np.full(k, capacity)
    out = np.empty(n, dtype=np.int64)
    for i in np.argsort(-s.max(1), kind="stable"):
        row = np.where(room > 0, s[i], -np.inf)
        j = int(row.argmax())
        out[i] = j
        room[j] -= 1
    return torch.from_numpy(out).to(scores.device)


def _lloyd(x: torch.Tensor, centers: torch.Tensor, iters: int, spherical: bool,
           balanced: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    k = centers.shape[0]
    capacity = -(-x.shape[0] // k)

    def assign_all(c: torch.Tensor) -> torch.Tensor:
        score = similarity(x, c, spherical=spherical)
        return balanced_assign(score, capacity) if balanced else score.argmax(1)

    assign = assign_all(centers)
    for _ in range(iters):
        sums = torch.zeros_like(centers).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        filled = counts > 0
        centers[filled] = sums[filled] / counts[filled, None]
        centers = _prepare(centers, spherical)
        if bool((~filled).any()):
            # Re-seed empty centres on the points farthest from their current centre.
            score = similarity(x, centers, spherical=spherical)
            fit = score.gather(1, assign[:, None]).squeeze(1)
            order = torch.argsort(fit, stable=True)
            empty = torch.nonzero(~filled).flatten()
            centers[empty] = x[order[: len(empty)]]
        new_assign = assign_all(centers)
        if torch.equal(new_assign, assign) and bool(filled.all()):
            break
        assign = new_assign
    return centers, assign


class Codebook(nn.Module):
    """One codebook of ``size`` codewords of width ``dim`` (see module docstring)."""

    def __init__(
        self,
        size: int,
        dim: int,
        *,
        metric: str = "cosine",
        update: str = "ema",
        decay: float = 0.95,
        beta: float = 0.25,
    ) -> None:
        super().__init__()
        if metric not in ("cosine", "l2") or update not in ("ema", "loss"):
            raise ValueError(f"bad codebook metric/update {metric!r}/{update!r}")
        self.size = size
        self.dim = dim
        self.metric = metric
        self.update = update
        self.decay = decay
        self.beta = beta
        init = torch.randn(size, dim)
        init = F.normalize(init, dim=-1) if metric == "cosine" else init
        if update == "loss":
            self.embed = nn.Parameter(init)
        else:
            self.register_buffer("embed", init)
            self.register_buffer("ema_count", torch.ones(size))
            self.register_buffer("ema_sum", init.clone())

    @property
    def spherical(self) -> bool:
        return self.metric == "cosine"

    def prepare(self, z: torch.Tensor) -> torch.Tensor:
        """The latent in the codebook's space (unit-normalised for cosine)."""
        return _prepare(z, self.spherical)

    def codewords(self) -> torch.Tensor:
        return _prepare(self.embed, self.spherical)

    def scores(self, z: torch.Tensor) -> torch.Tensor:
        """[B, K] similarity of prepared latents to every codeword (higher = closer)."""
        return similarity(self.prepare(z), self.codewords(), spherical=self.spherical)

    def assign(self, z: torch.Tensor) -> torch.Tensor:
        return self.scores(z).argmax(dim=-1)

    def soft(self, z: torch.Tensor, tau: float) -> torch.Tensor:
        """Straight-through one-hot: forward value is exactly one_hot(argmax), gradient is that
        of softmax(scores / tau)."""
        s = self.scores(z)
        p = torch.softmax(s / tau, dim=-1)
        hard = F.one_hot(s.argmax(dim=-1), self.size).to(p.dtype)
        # hard + (p - sg(p)) is bit-exactly `hard` in the forward pass (p - p == 0).
        return hard + (p - p.detach())

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantise ``z`` [B, dim]: returns (quantised [B, dim], codes [B], codebook loss)."""
        zp = self.prepare(z)
        codes = similarity(zp, self.codewords(), spherical=self.spherical).argmax(dim=-1)
        q = self.codewords()[codes]
        commit = (zp - q.detach()).pow(2).sum(-1).mean()
        if self.update == "loss":
            loss = (q - zp.detach()).pow(2).sum(-1).mean() + self.beta * commit
        else:
            loss = self.beta * commit
            if self.training:
                self._ema_step(zp.detach(), codes)
        return q, codes, loss

    @torch.no_grad()
    def _ema_step(self, zp: torch.Tensor, codes: torch.Tensor) -> None:
        counts = torch.bincount(codes, minlength=self.size).to(zp.dtype)
        sums = torch.zeros_like(self.ema_sum).index_add_(0, codes, zp)
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        # Laplace smoothing keeps rarely used codewords from dividing by ~0.
        total = self.ema_count.sum()
        smoothed = (self.ema_count + 1e-5) / (total + self.size * 1e-5) * total
        self.embed.copy_(_prepare(self.ema_sum / smoothed[:, None], self.spherical))

    @torch.no_grad()
    def set_codewords(self, index: torch.Tensor, vectors: torch.Tensor, *, count: float = 1.0) -> None:
        """Overwrite codewords ``index`` with ``vectors`` (k-means init, dead-code reset)."""
        vectors = _prepare(vectors.to(self.embed.dtype), self.spherical)
        self.embed[index] = vectors
        if self.update == "ema":
            self.ema_count[index] = count
            self.ema_sum[index] = vectors * count


@torch.no_grad()
def init_residual_codebooks(
    model: "torch.nn.Module", inputs: "object", generator: torch.Generator, *, count: float = 1.0
) -> None:
    """Initialise a residual stack level by level: level l on the residuals left by the already
    initialised levels (k-means, or random latents when ``cfg.kmeans_init`` is off)."""
    for level, cb in enumerate(model.codebooks):
        r, _ = model.position_latents(inputs)[level]
        if model.cfg.kmeans_init:
            centers, _ = kmeans(r, cb.size, iters=model.cfg.kmeans_iters, generator=generator)
        else:
            centers = r[torch.randint(0, r.shape[0], (cb.size,), generator=generator).to(r.device)]
        cb.set_codewords(torch.arange(cb.size, device=r.device), centers, count=count)


def residual_quantise(
    codebooks: "list[Codebook] | torch.nn.ModuleList", z: torch.Tensor
) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Residual quantisation through a stack of codebooks.

    Returns (the residual each level quantised, codes per level, z_q, summed codebook loss).
    Residuals are detached between levels so each level's loss trains only its own codebook.
    """
    r, zq = z, torch.zeros_like(z)
    residuals, codes, losses = [], [], []
    for cb in codebooks:
        residuals.append(r)
        q, c, loss = cb(r)
        codes.append(c)
        losses.append(loss)
        zq = zq + q
        r = r - q.detach()
    return residuals, codes, zq, torch.stack(losses).sum()


def residual_soft_codes(
    codebooks: "list[Codebook] | torch.nn.ModuleList", z: torch.Tensor, tau: float
) -> list[torch.Tensor]:
    """Differentiable residual quantisation: each level's soft assignment of what the levels
    before it left. ``ind @ C`` equals the hard codeword in the forward pass and lets gradient
    reach the codebook ``C``."""
    out, r = [], z
    for cb in codebooks:
        ind = cb.soft(r, tau)
        out.append(ind)
        r = r - ind @ cb.codewords()
    return out
