"""LIME: a weighted linear surrogate fitted to the model around one input, for tabular rows.

Ribeiro, Singh and Guestrin, "'Why Should I Trust You?': Explaining the Predictions of Any
Classifier", KDD 2016.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .._params import Float, Int, Optional, Seed
from ..core.rng import seeded_generator
from ._base import BATCH_SIZE, EXPLAINERS, Baseline, Explainer, baseline_tensor, masked_outputs
from ._surrogate import require_rows, weighted_fit


def perturbations(features: int, samples: int, generator: torch.Generator | None) -> Tensor:
    """The binary perturbations [samples, features] (bool, True: feature kept): each
    feature kept with probability 1/2, the first row the input itself (as lime's first
    sample), drawn on the CPU from ``generator``."""
    keep = torch.rand(samples, features, generator=generator) < 0.5
    keep[0] = True
    return keep


@EXPLAINERS.register()
class LIME(Explainer):
    """The coefficients [N, M] of a ridge regression (with intercept) of the target logit
    on ``samples`` binary perturbations ``z`` (each feature kept with probability 1/2, set
    to ``baseline`` otherwise; :func:`perturbations`), each weighted by
    ``exp(-d^2 / (2 width^2))`` with ``d`` the Euclidean distance of ``z`` from the input in
    the binary space (the square root of the features removed).

    Defaults follow the lime package's tabular explainer (by the paper's authors): the
    kernel ``sqrt(exp(-d^2 / width^2))`` (the same exponential kernel as captum's
    ``get_exp_kernel_similarity_function``), ``width`` 0.75 sqrt(M), a ridge penalty of
    1.0. captum's ``Lime`` defaults are not followed: its Lasso (alpha 0.01, fixed in
    logit units) sets small attributions to exactly 0 and needs an iterative solver per
    input, its cosine distance is measured in input space (removing a feature near the
    baseline counts for nothing) and its 25 samples leave a fit of more than a few
    features to chance. With the same perturbations, kernel and regression the
    coefficients are captum's (tests/test_explain_tabular.py). A feature's coefficient is
    the logit change its presence makes in the surrogate: ``w_j (x_j - baseline_j)`` for a
    linear model with ``ridge=0``.

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
    constraints = {"samples": Int(low=2), "width": Optional(Float(low=0.0, low_open=True)),
                   "ridge": Float(low=0.0), "baseline": Baseline(), "seed": Seed(),
                   "batch_size": BATCH_SIZE}

    def __init__(self, *, samples: int = 1000, width: float | None = None, ridge: float = 1.0,
                 baseline: float | Tensor = 0.0, seed: int | None = 0,
                 batch_size: int | None = 4096) -> None:
        self.samples = self._validated("samples", samples)
        self.width = self._validated("width", width)
        self.ridge = self._validated("ridge", ridge)
        self.baseline = self._validated("baseline", baseline)
        self.seed = self._validated("seed", seed)
        self.batch_size = self._validated("batch_size", batch_size)

    def _attribute(self, model: nn.Module, x: Tensor, target: Tensor) -> tuple[Tensor, None]:
        owner = type(self).__name__
        require_rows(x, owner)
        features = x.shape[1]
        keep = perturbations(features, self.samples, seeded_generator(self.seed)).to(x.device)
        width = self.width if self.width is not None else 0.75 * math.sqrt(features)
        removed = (~keep).sum(1).double()
        weights = torch.exp(-removed / (2 * width ** 2))  # d^2 = features removed
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
