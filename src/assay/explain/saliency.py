"""Saliency: the gradient of the target logit with respect to the input.

Simonyan, Vedaldi and Zisserman, "Deep Inside Convolutional Networks: Visualising Image
Classification Models and Saliency Maps", ICLR workshop 2014.
"""

from __future__ import annotations

from torch import Tensor, nn

from .._params import Bool
from ._base import BATCH_SIZE, EXPLAINERS, Explainer, input_gradients


@EXPLAINERS.register()
class Saliency(Explainer):
    """``|d f_target(x) / dx|`` (the signed gradient with ``abs=False``), as captum's
    ``Saliency``, whose default is the absolute value too.

    Parameters (keyword-only):
        abs: take the absolute value of the gradient (default True).
        batch_size: inputs per forward and backward pass, an int >= 1 or None for one
            pass (default 256).

    Shapes: ``x`` [N, ...] -> attributions [N, ...].

    Example:
        >>> import torch
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> Saliency()(net, torch.rand(2, 1, 2, 2)).shape
        torch.Size([2, 1, 2, 2])
    """

    name = "saliency"
    constraints = {"abs": Bool(), "batch_size": BATCH_SIZE}

    def __init__(self, *, abs: bool = True, batch_size: int | None = 256) -> None:
        self.abs = self._validated("abs", abs)
        self.batch_size = self._validated("batch_size", batch_size)

    def _attribute(self, model: nn.Module, x: Tensor, target: Tensor) -> tuple[Tensor, None]:
        grad = input_gradients(model, x, target, self.batch_size, type(self).__name__)
        return (grad.abs() if self.abs else grad), None
