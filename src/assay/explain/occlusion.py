"""Occlusion: how much the target logit drops when a window of the input is covered.

Zeiler and Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .._params import Float, Optional
from ..core.inference import batched_logits
from ..errors import AssayValueError
from ._base import BATCH_SIZE, EXPLAINERS, Explainer, Sides, masked_outputs


def window_masks(shape: tuple[int, ...], window: tuple[int, ...],
                 strides: tuple[int, ...]) -> Tensor:
    """One bool mask [*shape] per window position [W, *shape], positions as captum's
    ``Occlusion``: ``ceil((size - window) / stride) + 1`` per dimension, starting at
    multiples of the stride, the last one cut at the edge."""
    starts = [range(0, stride * math.ceil((size - side) / stride) + 1, stride)
              for size, side, stride in zip(shape, window, strides)]
    corners = list(itertools.product(*starts))
    masks = torch.zeros(len(corners), *shape, dtype=torch.bool)
    for index, corner in enumerate(corners):
        window_slices = tuple(slice(c, c + side) for c, side in zip(corner, window))
        masks[index][window_slices] = True
    return masks


def default_window(shape: tuple[int, ...]) -> tuple[int, ...]:
    """All channels and a square of a seventh of the image's side (at least 1): 4x4 on
    MNIST and CIFAR-10, single pixels on 8x8 digits; one feature at a time for tabular rows."""
    if len(shape) != 3:
        return (1,) * len(shape)
    side = max(1, min(shape[1:]) // 7)
    return (shape[0], side, side)


@EXPLAINERS.register()
class Occlusion(Explainer):
    """For each feature, the mean over the windows covering it of ``f_target(x) -
    f_target(x with the window set to baseline)``, as captum's ``Occlusion``.

    Parameters (keyword-only):
        window: the window's shape over one input's dimensions (e.g. (1, 4, 4) for
            [1, 28, 28] images), or None for :func:`default_window` (default None).
        strides: the step between windows, an int or one int per dimension (default 1,
            captum's); at most the window's side where the window is smaller than the input.
        baseline: the value covering a window (default 0.0).
        batch_size: rows (inputs x windows) per forward pass, an int >= 1 or None for one
            pass (default 256).

    Shapes: ``x`` [N, ...] -> attributions [N, ...].

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> Occlusion(window=(1, 1, 1))(net, torch.rand(2, 1, 2, 2), target=0).shape
        torch.Size([2, 1, 2, 2])
    """

    name = "occlusion"
    # whether the window and strides fit the inputs is checked at call time
    constraints = {"window": Optional(Sides()), "strides": Sides(scalar=True),
                   "baseline": Float(), "batch_size": BATCH_SIZE}

    def __init__(self, *, window: Sequence[int] | None = None, strides: int | Sequence[int] = 1,
                 baseline: float = 0.0, batch_size: int | None = 256) -> None:
        self.window: tuple[int, ...] | None = self._validated("window", window)
        self.strides: tuple[int, ...] = self._validated("strides", strides)
        self.baseline = self._validated("baseline", baseline)
        self.batch_size = self._validated("batch_size", batch_size)

    def _attribute(self, model: nn.Module, x: Tensor, target: Tensor) -> tuple[Tensor, None]:
        owner = type(self).__name__
        shape = tuple(x.shape[1:])
        window = self.window or default_window(shape)
        strides = self.strides * len(shape) if len(self.strides) == 1 else self.strides
        if len(window) != len(shape) or len(strides) != len(shape):
            raise AssayValueError(f"The 'window' and 'strides' parameters of {owner} must have "
                                  f"one entry per input dimension {list(shape)}. Got window "
                                  f"{list(window)} and strides {list(strides)} instead.")
        if any(w > s for w, s in zip(window, shape)) or any(
                st > w for st, w, s in zip(strides, window, shape) if w < s):
            raise AssayValueError(f"The 'window' parameter of {owner} must fit the inputs "
                                  f"{list(shape)} and each stride be at most the window's side "
                                  f"where the window is smaller. Got window {list(window)}, "
                                  f"strides {list(strides)} instead.")
        masks = window_masks(shape, window, strides).to(x.device)
        clean = batched_logits(model, x, batch_size=self.batch_size, owner=owner)
        clean = clean.gather(1, target[:, None])  # [N, 1]
        covered = masked_outputs(model, x, torch.full_like(x, self.baseline), ~masks, target,
                                 self.batch_size, owner)
        drops = clean - covered
        total = torch.einsum("nw,wf->nf", drops, masks.flatten(1).to(x.dtype))
        counts = masks.flatten(1).sum(0).to(x.dtype)
        return (total / counts).view_as(x), None
