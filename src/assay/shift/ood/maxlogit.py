"""Maximum logit OOD score.

Reference: Dan Hendrycks, Steven Basart, Mantas Mazeika, Andy Zou, Joseph Kwon,
Mohammadreza Mostajabi, Jacob Steinhardt and Dawn Song, "Scaling Out-of-Distribution
Detection for Real-World Settings", ICML 2022.

Score: ``max_k f(x)_k`` (the unnormalised logit); higher = more in-distribution.
"""

from __future__ import annotations

from torch import Tensor, nn

from ...core.features import check_inputs
from ...core.inference import batched_logits
from ._base import OODDetector


class MaxLogit(OODDetector):
    """Maximum logit (Hendrycks et al., ICML 2022). Post-hoc: no fit.

    Parameters:
        batch_size: samples per forward pass, an int >= 1 (default 256).

    ``score(model, x)``: x [N, ...] -> scores [N], higher = more in-distribution.

    Example::

        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> MaxLogit().score(model, torch.rand(5, 4)).shape
        torch.Size([5])
    """

    name = "maxlogit"

    def __init__(self, *, batch_size: int = 256) -> None:
        super().__init__(batch_size=batch_size)

    def score(self, model: nn.Module, x: Tensor) -> Tensor:
        check_inputs(x, "MaxLogit.score")
        return batched_logits(model, x, batch_size=self.batch_size).amax(dim=1)
