"""CLUB: a contrastive log-ratio upper bound on mutual information (Cheng et al., ICML 2020).

With a variational conditional ``q(y | x) = N(mu(x), diag(exp(logvar(x))))`` fitted to the joint
by maximum likelihood,

    I_CLUB(x; y) = E_{p(x, y)}[log q(y | x)] - E_{p(x)} E_{p(y)}[log q(y | x)]

upper-bounds I(x; y) whenever q is a good fit. Two roles, two optimisers:

* the estimator (``mu``, ``logvar``) maximises :meth:`CLUB.log_likelihood` on *detached* pairs;
* the encoders that produce x and y minimise :meth:`CLUB.forward` (gradient flows into x and y,
  the estimator's weights are not stepped by that loss).

The Gaussian normalisers ``-0.5 * logvar - 0.5 * log(2 pi)`` depend on x only and cancel between
the two expectations, so both estimates below leave them out. :meth:`CLUB.forward` averages the
negative term over *all* B x B pairs of a batch in O(B d) using the moments of y;
:func:`club_reference` loops over the pairs and is the test oracle.
"""

from __future__ import annotations

import torch
from torch import nn


class CLUB(nn.Module):
    """Variational MI upper bound between ``x`` [B, d_x] and ``y`` [B, d_y]."""

    def __init__(self, x_dim: int, y_dim: int, hidden: int) -> None:
        super().__init__()
        self.mu = nn.Sequential(nn.Linear(x_dim, hidden), nn.ReLU(), nn.Linear(hidden, y_dim))
        # tanh keeps the variance in [e^-1, e^1]: an unbounded log-variance lets the estimator
        # shrink it to fit a few pairs and blow the bound up.
        self.logvar = nn.Sequential(nn.Linear(x_dim, hidden), nn.ReLU(), nn.Linear(hidden, y_dim), nn.Tanh())

    def log_likelihood(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean Gaussian log-likelihood of y under q(. | x) (full normaliser included); the
        estimator's training objective (maximise it on detached inputs)."""
        mu, logvar = self.mu(x), self.logvar(x)
        ll = -0.5 * ((y - mu).pow(2) / logvar.exp() + logvar + 1.8378770664093453)
        return ll.sum(-1).mean()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The CLUB estimate over all pairs of the batch (0 for fewer than two rows)."""
        if x.shape[0] < 2:
            return torch.zeros((), device=x.device, dtype=x.dtype)
        mu, logvar = self.mu(x), self.logvar(x)
        inv_var = (-logvar).exp()
        positive = -0.5 * ((y - mu).pow(2) * inv_var).sum(-1)
        # mean_j (y_j - mu_i)^2 = E[y^2] - 2 mu_i E[y] + mu_i^2, per dimension.
        y_mean = y.mean(0, keepdim=True)
        y_sq = y.pow(2).mean(0, keepdim=True)
        negative = -0.5 * ((y_sq - 2.0 * mu * y_mean + mu.pow(2)) * inv_var).sum(-1)
        return (positive - negative).mean()


@torch.no_grad()
def club_reference(club: CLUB, x: torch.Tensor, y: torch.Tensor) -> float:
    """Slow, obviously correct CLUB estimate: an explicit double loop over (i, j) pairs."""
    n = x.shape[0]
    if n < 2:
        return 0.0
    mu, logvar = club.mu(x), club.logvar(x)

    def log_q(i: int, j: int) -> float:  # log q(y_j | x_i) without the x-only normaliser
        return float(-0.5 * ((y[j] - mu[i]).pow(2) / logvar[i].exp()).sum())

    positive = sum(log_q(i, i) for i in range(n)) / n
    negative = sum(log_q(i, j) for i in range(n) for j in range(n)) / (n * n)
    return positive - negative
