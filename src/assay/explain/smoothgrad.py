"""SmoothGrad: the gradient averaged over noisy copies of the input.

Smilkov, Thorat, Kim, Viegas and Wattenberg, "SmoothGrad: removing noise by adding noise",
ICML workshop on visualization for deep learning, 2017.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._params import Bool, Float, Int, Seed
from ..core.rng import seeded_generator
from ._base import BATCH_SIZE, EXPLAINERS, Explainer, expanded_blocks, target_gradient


@EXPLAINERS.register()
class SmoothGrad(Explainer):
    """``mean_k |d f_target(x + e_k) / dx|`` over ``samples`` draws ``e_k ~ N(0, sigma^2)``,
    ``sigma = noise * (high - low)`` for the model's input bounds (default [0, 1]); with
    ``abs=False`` the signed gradients are averaged.

    Defaults follow the paper (50 samples, noise 15% of the input range, its middle
    choice of 10-20%), not captum's ``NoiseTunnel`` (5 samples, sigma 1.0 whatever the
    range). With the same draws the result is captum's ``NoiseTunnel(Saliency(model))``
    (``abs=True``) or ``NoiseTunnel(Saliency(model), abs=False)``: the noise of each block
    of inputs is ``torch.randn([n * samples, ...]) * sigma`` from the seeded generator,
    sample-minor (input 0's draws first), as ``NoiseTunnel`` draws it for one block.

    Parameters (keyword-only):
        samples: noisy copies per input, an int >= 1 (default 50).
        noise: sigma as a share of the input range, a number >= 0 (default 0.15).
        abs: average the absolute gradients (default True, as captum's Saliency).
        seed: seeds the noise, an int >= 0 or None for torch's default generator
            (default 0).
        batch_size: rows (inputs x samples) per forward and backward pass, an int >= 1
            or None for one pass (default 256).

    Shapes: ``x`` [N, ...] -> attributions [N, ...].

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> SmoothGrad(samples=4)(net, torch.rand(2, 1, 2, 2), target=0).shape
        torch.Size([2, 1, 2, 2])
    """

    name = "smoothgrad"
    constraints = {"samples": Int(low=1), "noise": Float(low=0.0), "abs": Bool(),
                   "seed": Seed(), "batch_size": BATCH_SIZE}

    def __init__(self, *, samples: int = 50, noise: float = 0.15, abs: bool = True,
                 seed: int | None = 0, batch_size: int | None = 256) -> None:
        self.samples = self._validated("samples", samples)
        self.noise = self._validated("noise", noise)
        self.abs = self._validated("abs", abs)
        self.seed = self._validated("seed", seed)
        self.batch_size = self._validated("batch_size", batch_size)

    def _attribute(self, model: nn.Module, x: Tensor, target: Tensor) -> tuple[Tensor, None]:
        owner = type(self).__name__
        low, high = getattr(model, "bounds", (0.0, 1.0))
        sigma = self.noise * (high - low)
        generator = seeded_generator(self.seed, x.device)
        total = torch.zeros_like(x)
        for inputs, draws in expanded_blocks(len(x), self.samples, self.batch_size):
            block = x[inputs]
            k = draws.stop - draws.start
            rows = block.repeat_interleave(k, dim=0)
            rows = rows + torch.randn(rows.shape, generator=generator, device=x.device,
                                      dtype=x.dtype) * sigma
            grad, _ = target_gradient(model, rows, target[inputs].repeat_interleave(k), owner)
            grad = grad.abs() if self.abs else grad
            total[inputs] += grad.view(len(block), k, *x.shape[1:]).sum(1)
        return total / self.samples, None
