"""LIME: a weighted linear surrogate fitted to the model around one input, for tabular rows.

Ribeiro, Singh and Guestrin, "'Why Should I Trust You?': Explaining the Predictions of Any
Classifier", KDD 2016.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .._params import check_float, check_int, check_optional_seed
from ..core.rng import seeded_generator
from ..attacks.evasion.base import check_batch_size
from ._base import (EXPLAINERS, Explainer, baseline_tensor, check_baseline,
                    masked_outputs)
from ._surrogate import require_rows, weighted_fit


@EXPLAINERS.register()
class LIME(Explainer):
    """The coefficients [N, M] of a ridge regression (with intercept) of the target logit
    on ``samples`` binary perturbations ``z`` (each feature kept with probability 1/2, set
    to ``baseline`` otherwise), each weighted by ``exp(-d^2 / width^2)`` with ``d`` the
    Euclidean distance of ``z`` from the input (the square root of the features removed).

    Defaults follow the lime package's tabular explainer: ``width`` 0.75 sqrt(M), ridge
    penalty 1.0; captum's ``Lime`` fits a Lasso (an iterative solver) on cosine distances
    instead. A feature's coefficient is the logit change its presence makes in the
    surrogate: ``w_j (x_j - baseline_j)`` for a linear model with ``ridge=0``.

    Parameters (keyword-only):
        samples: perturbations, an int >= 2 (default 1000).
        width: kernel width, a number > 0 or None for 0.75 sqrt(M) (default None).
        ridge: L2 penalty of the surrogate's coefficients, a number >= 0 (default 1.0).
        baseline: the value of a removed feature, a number or a tensor broadcastable to
            ``x`` (default 0.0).
        seed: seeds the perturbations, an int >= 0 or None (default 0).
        batch_size: rows (inputs x perturbations) per forward pass, an int >= 1 or None
            for one pass (default 4096).

    Shapes: ``x`` [N, M] (tabular rows only) -> attributions [N, M].

    Example:
        >>> net = nn.Linear(3, 2)
        >>> x = torch.rand(4, 3)
        >>> w = LIME(ridge=0.0)(net, x, target=0)
        >>> torch.allclose(w, net.weight[0].detach() * x, atol=1e-4)
        True
    """

    name = "lime"

    def __init__(self, *, samples: int = 1000, width: float | None = None, ridge: float = 1.0,
                 baseline: float | Tensor = 0.0, seed: int | None = 0,
                 batch_size: int | None = 4096) -> None:
        owner = type(self).__name__
        self.samples = check_int("samples", samples, owner, low=2)
        self.width = None if width is None else check_float("width", width, owner, low=0.0,
                                                            low_open=True)
        self.ridge = check_float("ridge", ridge, owner, low=0.0)
        self.baseline = check_baseline(baseline, owner)
        self.seed = check_optional_seed("seed", seed, owner)
        self.batch_size = check_batch_size(batch_size, owner)

    def _attribute(self, model: nn.Module, x: Tensor, target: Tensor) -> tuple[Tensor, None]:
        owner = type(self).__name__
        require_rows(x, owner)
        features = x.shape[1]
        generator = seeded_generator(self.seed)
        keep = torch.rand(self.samples, features, generator=generator) < 0.5
        keep[0] = True  # the input itself, as lime's first sample
        keep = keep.to(x.device)
        width = self.width if self.width is not None else 0.75 * math.sqrt(features)
        removed = (~keep).sum(1).double()
        weights = torch.exp(-removed / width ** 2)  # d^2 = features removed
        outputs = masked_outputs(model, x, baseline_tensor(self.baseline, x, owner), keep,
                                 target, self.batch_size, owner)
        # centre with the weighted means, so the intercept is not penalised
        on = keep.double()
        total = weights.sum()
        on_mean = (weights[:, None] * on).sum(0) / total
        out_mean = (outputs.double() * weights).sum(1, keepdim=True) / total
        coefficients = weighted_fit(on - on_mean, weights, outputs.double() - out_mean,
                                    ridge=self.ridge)
        return coefficients.to(x.dtype), None
