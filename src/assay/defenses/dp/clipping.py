"""Per-sample clipping, shared by both ways of computing it (:mod:`.sgd`, :mod:`.ghost`):
each sample's gradient scaled to a flat L2 norm of at most the clipping norm ``C``
(Abadi et al. CCS 2016, algorithm 1)."""

from __future__ import annotations

import torch
from torch import Tensor

Gradients = dict[str, Tensor]


def per_sample_norms(grads: Gradients) -> Tensor:
    """Each sample's gradient norm ``[B]``: the L2 norm over all parameters flattened
    into one vector."""
    squares = [g.reshape(len(g), -1).pow(2).sum(dim=1) for g in grads.values()]
    return torch.stack(squares).sum(dim=0).sqrt()


def clipping_factors(norms: Tensor, max_grad_norm: float) -> Tensor:
    """The factor that scales each sample's gradient to norm at most ``max_grad_norm``
    (1 for gradients already within it), as Opacus computes it: ``C / (norm + 1e-6)``
    capped at 1."""
    return (max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
