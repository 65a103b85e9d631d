"""Maximum softmax probability (MSP) OOD score.

Reference: Dan Hendrycks and Kevin Gimpel, "A Baseline for Detecting Misclassified and
Out-of-Distribution Examples in Neural Networks", ICLR 2017.

Score: ``max_k softmax(f(x))_k``; higher = more in-distribution.
"""

from __future__ import annotations

from torch import Tensor, nn

from ...core.features import check_inputs
from ...core.inference import batched_logits
from ._base import OODDetector


class MSP(OODDetector):
    """Maximum softmax probability (Hendrycks & Gimpel, ICLR 2017). Post-hoc: no fit.

    Parameters:
        batch_size: samples per forward pass, an int >= 1 (default 256).

    ``score(model, x)``: x [N, ...] -> scores [N] in (0, 1], higher = more in-distribution.

    Example::

        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> MSP().score(model, torch.rand(5, 4)).shape
        torch.Size([5])
    """

    name = "msp"

    def __init__(self, *, batch_size: int = 256) -> None:
        super().__init__(batch_size=batch_size)

    def score(self, model: nn.Module, x: Tensor) -> Tensor:
        check_inputs(x, "MSP.score")
        logits = batched_logits(model, x, batch_size=self.batch_size)
        return logits.softmax(dim=1).amax(dim=1)
