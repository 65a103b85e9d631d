"""What KernelSHAP and LIME share: tabular rows only, and a weighted linear fit solved once
for all inputs (their coalitions and weights are the same for every input, so the design
matrix is too)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import AssayValueError


def require_rows(x: Tensor, owner: str) -> None:
    if x.ndim != 2:
        raise AssayValueError(f"{owner}: x must be tabular rows [N, features]; got shape "
                              f"{list(x.shape)}. Fix: use occlusion, saliency or "
                              "integrated_gradients for images.")


def weighted_fit(design: Tensor, weights: Tensor, outputs: Tensor, ridge: float = 0.0) -> Tensor:
    """Least-squares coefficients [N, P] of ``outputs`` [N, S] on ``design`` [S, P] with
    sample ``weights`` [S] and an L2 penalty ``ridge`` on the coefficients, in float64.
    The pseudo-inverse of the normal equations, as a sampled design can be rank-deficient
    (a feature on in every coalition)."""
    root = weights.double().sqrt()[:, None]
    scaled = design.double() * root
    gram = scaled.T @ scaled
    if ridge:
        gram = gram + ridge * torch.eye(len(gram), dtype=gram.dtype, device=gram.device)
    right = scaled.T @ (outputs.double().T * root)  # [P, N]
    return (torch.linalg.pinv(gram, hermitian=True) @ right).T
