"""Gradient x input: the input times the gradient of the target logit.

Shrikumar, Greenside, Shcherbina and Kundaje, "Not Just a Black Box: Learning Important
Features Through Propagating Activation Differences", arXiv:1605.01713, 2016.
"""

from __future__ import annotations

from torch import Tensor, nn

from ._base import BATCH_SIZE, EXPLAINERS, Explainer, input_gradients


@EXPLAINERS.register()
class GradientXInput(Explainer):
    """``x * d f_target(x) / dx``, as captum's ``InputXGradient``.

    Parameters (keyword-only):
        batch_size: inputs per forward and backward pass, an int >= 1 or None for one
            pass (default 256).

    Shapes: ``x`` [N, ...] -> attributions [N, ...].

    Example:
        >>> import torch
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> GradientXInput()(net, torch.rand(2, 1, 2, 2), target=0).shape
        torch.Size([2, 1, 2, 2])
    """

    name = "gradient_x_input"
    constraints = {"batch_size": BATCH_SIZE}

    def __init__(self, *, batch_size: int | None = 256) -> None:
        self.batch_size = self._validated("batch_size", batch_size)

    def _attribute(self, model: nn.Module, x: Tensor, target: Tensor) -> tuple[Tensor, None]:
        return x * input_gradients(model, x, target, self.batch_size, type(self).__name__), None
