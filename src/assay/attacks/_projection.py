"""Norm-ball geometry shared by the evasion attacks: projections, steepest-ascent steps
and random starts, batched over the first dimension.

Norms: "linf", "l2" and "l1". For L1 the projection is the exact Euclidean projection of
J. Duchi, S. Shalev-Shwartz, Y. Singer, T. Chandra, "Efficient projections onto the
l1-ball for learning in high dimensions", ICML 2008 (sort-based, O(d log d) per sample),
and the ascent step is the sparse L1 descent (SLIDE) of F. Tramer, D. Boneh, "Adversarial
training and robustness for multiple perturbations", NeurIPS 2019."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

Norm = Literal["linf", "l2", "l1"]
_TINY = 1e-12
L1_PERCENTILE = 99.0
"""Default SLIDE percentile q: the step keeps the coordinates with |grad| at or above the
q-th percentile, i.e. the top (100 - q)% and at least one. q = 99 is the default of cleverhans'
SparseL1Descent (grad_sparsity=99), which implements SLIDE. On a small input (the
64-pixel digits) it keeps a single coordinate, which is the exact steepest-ascent
direction for the L1 norm (the one ART uses at every size)."""


def _per_sample_norm(t: Tensor) -> Tensor:
    """L2 norm of each sample, shaped to broadcast against ``t``."""
    return t.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (t.ndim - 1)))


def _project_l1(delta: Tensor, eps: float) -> Tensor:
    """Exact Euclidean projection of each sample onto the L1 ball (Duchi et al. 2008).

    For ``||v||_1 > eps`` the projection is ``sign(v) * max(|v| - theta, 0)`` where, with
    ``mu`` the magnitudes sorted in decreasing order and ``c_j`` their partial sums,
    ``rho = max{j : mu_j > (c_j - eps) / j}`` and ``theta = (c_rho - eps) / rho``.
    Samples already inside the ball are returned unchanged.
    """
    flat = delta.flatten(1)
    magnitude = flat.abs()
    if eps <= 0:
        return torch.zeros_like(delta)
    inside = magnitude.sum(dim=1) <= eps
    if bool(inside.all()):
        return delta
    mu = magnitude.sort(dim=1, descending=True).values
    partial = mu.cumsum(dim=1) - eps
    ranks = torch.arange(1, flat.shape[1] + 1, device=flat.device, dtype=flat.dtype)
    positive = mu * ranks > partial  # true for j = 1..rho, false afterwards
    rho = positive.sum(dim=1, keepdim=True).clamp_min(1)
    theta = partial.gather(1, rho - 1) / rho.to(flat.dtype)
    projected = flat.sign() * (magnitude - theta).clamp_min(0)
    projected = torch.where(inside.unsqueeze(1), flat, projected)
    return projected.view_as(delta)


def project(delta: Tensor, norm: Norm, eps: float) -> Tensor:
    """The closest point (in L2) to ``delta`` in the ``norm`` ball of radius ``eps``."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    if norm == "l1":
        return _project_l1(delta, eps)
    scale = (eps / _per_sample_norm(delta).clamp_min(_TINY)).clamp(max=1.0)
    return delta * scale


def ascent_direction(grad: Tensor, norm: Norm, *, percentile: float = L1_PERCENTILE) -> Tensor:
    """The unit-norm ascent direction: sign(g) for Linf, g/||g||_2 for L2, and for L1 the
    sparse SLIDE step of Tramer & Boneh (2019).

    L1: keep the ``k = max(1, ceil((100 - percentile) / 100 * d))`` coordinates of largest
    |g| (ties broken by index), take their signs and divide by their count, so the
    direction has unit L1 norm. ``percentile`` is ignored for the other norms. Callers
    working in a box should first zero the gradient of coordinates that sit at a bound and
    would be pushed outwards (as PGD does, after Croce & Hein's L1-APGD), so the budget is
    not spent on moves that clipping undoes.
    """
    if norm == "linf":
        return grad.sign()
    if norm == "l1":
        flat = grad.flatten(1)
        k = max(1, math.ceil((100.0 - percentile) / 100.0 * flat.shape[1]))
        k = min(k, flat.shape[1])
        top = flat.abs().topk(k, dim=1).indices
        direction = torch.zeros_like(flat).scatter_(1, top, flat.gather(1, top).sign())
        count = direction.abs().sum(dim=1, keepdim=True).clamp_min(1.0)
        return (direction / count).view_as(grad)
    return grad / _per_sample_norm(grad).clamp_min(_TINY)


def random_in_ball(shape: torch.Size, norm: Norm, eps: float, *, device: torch.device,
                   dtype: torch.dtype, generator: torch.Generator | None) -> Tensor:
    """A random start inside the ``norm`` ball of radius ``eps``, per sample.

    Linf: uniform in the box. L2: a uniform direction at a radius drawn uniformly from
    [0, eps] (not uniform in volume, which in high dimension puts every start on the
    surface; on the digits CNN that start left PGD-20 about 1.3 points weaker).
    L1: the same radial rule with a direction uniform on the L1 unit sphere: magnitudes
    Exp(1) normalised to sum 1 (a flat Dirichlet, uniform on the simplex) with random
    signs. The start is therefore not uniform in the L1 ball's volume either.
    """
    if norm == "linf":
        u = torch.rand(shape, device=device, dtype=dtype, generator=generator)
        return (2 * u - 1) * eps
    if norm == "l1":
        u = torch.rand(shape, device=device, dtype=dtype, generator=generator)
        magnitude = -torch.log1p(-u)  # Exp(1), finite since u < 1
        signs = torch.rand(shape, device=device, dtype=dtype, generator=generator) < 0.5
        direction = torch.where(signs, -magnitude, magnitude)
        direction = direction / direction.flatten(1).abs().sum(dim=1).clamp_min(_TINY).view(
            -1, *([1] * (len(shape) - 1)))
    else:
        direction = torch.randn(shape, device=device, dtype=dtype, generator=generator)
        direction = direction / _per_sample_norm(direction).clamp_min(_TINY)
    radius = torch.rand(shape[0], device=device, dtype=dtype, generator=generator)
    return direction * (eps * radius).view(-1, *([1] * (len(shape) - 1)))


def distance(x_adv: Tensor, x: Tensor, norm: Norm) -> Tensor:
    """Per-sample distance ``||x_adv - x||`` in ``norm``."""
    diff = (x_adv - x).flatten(1)
    if norm == "linf":
        return diff.abs().amax(dim=1)
    if norm == "l1":
        return diff.abs().sum(dim=1)
    return diff.norm(p=2, dim=1)
