"""Losses on logits shared by the attacks and the evaluation diagnostics."""

from __future__ import annotations

from torch import Tensor

__all__ = ["margin"]


def margin(logits: Tensor, y: Tensor) -> Tensor:
    """The logit margin ``z_y - max_{j != y} z_j`` per sample: [N] for logits [N, K] and
    labels [N]; negative exactly when some other class scores higher than ``y``.

    Differentiable in ``logits`` (the gradient goes to ``z_y`` and to the largest other
    logit).
    """
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    return z_y - other
