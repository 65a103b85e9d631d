"""KernelSHAP: Shapley values of the features by a weighted linear regression over
coalitions, for tabular rows.

Lundberg and Lee, "A Unified Approach to Interpreting Model Predictions", NeurIPS 2017.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .._params import Int, Optional, Seed
from ..core.inference import batched_logits
from ..core.rng import seeded_generator
from ._base import BATCH_SIZE, EXPLAINERS, Baseline, Explainer, baseline_tensor, masked_outputs
from ._surrogate import require_rows, weighted_fit

EXACT_UP_TO = 2048  # coalitions (2^M - 2): below this all are enumerated and the values exact


def coalitions(features: int, samples: int | None,
               generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Coalitions [S, M] (bool, neither empty nor full) and their regression weights [S].

    Every coalition, with the Shapley kernel ``(M - 1) / (C(M, k) k (M - k))`` as weight,
    when ``samples`` is None and there are at most :data:`EXACT_UP_TO` of them: the fit
    then gives the exact Shapley values. Otherwise ``samples`` (None: 2048 + 2M, SHAP's
    default) drawn from the kernel itself (a size ``k`` with probability proportional to
    ``(M - 1) / (k (M - k))``, then a uniform subset of that size), each of weight 1.
    """
    total = 2 ** features - 2 if features < 63 else math.inf
    if samples is None and total <= EXACT_UP_TO:
        codes = torch.arange(1, 2 ** features - 1)
        masks = (codes[:, None] >> torch.arange(features)) & 1 == 1
        sizes = masks.sum(1)
        weights = torch.tensor([(features - 1) / (math.comb(features, int(k)) * k * (features - k))
                                for k in sizes.tolist()], dtype=torch.float64)
        return masks, weights
    count = samples if samples is not None else EXACT_UP_TO + 2 * features
    sizes = torch.arange(1, features)
    size_weights = (features - 1) / (sizes * (features - sizes)).double()
    drawn = sizes[torch.multinomial(size_weights, count, replacement=True, generator=generator)]
    scores = torch.rand(count, features, generator=generator)
    ranks = scores.argsort(dim=1).argsort(dim=1)
    return ranks < drawn[:, None], torch.ones(count, dtype=torch.float64)


@EXPLAINERS.register()
class KernelSHAP(Explainer):
    """Shapley values ``phi`` [N, M] of the target logit, with features absent from a
    coalition set to ``baseline``: the weighted least-squares fit of the model's outputs
    on the coalitions with the Shapley kernel, under the constraint ``sum(phi) = f(x) -
    f(baseline)`` (efficiency, so the values always add up).

    With up to 11 features (2046 coalitions) every coalition is used and the values are
    exact; beyond, ``samples`` coalitions are drawn from the kernel (default 2048 + 2M, as
    SHAP's). Defaults: a zero baseline (captum's ``KernelShap``); captum's 25 samples are
    far too few for Shapley values, and its fit imposes efficiency only approximately
    (through the full and the empty coalition, always added with weight 1e6). Fed the
    coalitions :func:`coalitions` draws, captum's ``KernelShap`` kernel and regression give
    the same values to about 1e-6 of the largest (tests/test_explain_tabular.py).

    Parameters (keyword-only):
        samples: coalitions to draw, an int >= 2, or None for exact / 2048 + 2M (default).
        baseline: the value of an absent feature, a number or a tensor broadcastable to
            ``x`` (default 0.0; the training data's mean is a common choice).
        seed: seeds the coalitions, an int >= 0 or None (default 0).
        batch_size: rows (inputs x coalitions) per forward pass, an int >= 1 or None for
            one pass (default 4096).

    Shapes: ``x`` [N, M] (tabular rows only) -> attributions [N, M].

    Example:
        >>> net = nn.Linear(3, 2)
        >>> x = torch.rand(4, 3)
        >>> phi = KernelSHAP()(net, x, target=1)
        >>> torch.allclose(phi, net.weight[1].detach() * x, atol=1e-5)
        True
    """

    name = "kernel_shap"
    constraints = {"samples": Optional(Int(low=2)), "baseline": Baseline(), "seed": Seed(),
                   "batch_size": BATCH_SIZE}

    def __init__(self, *, samples: int | None = None, baseline: float | Tensor = 0.0,
                 seed: int | None = 0, batch_size: int | None = 4096) -> None:
        self.samples = self._validated("samples", samples)
        self.baseline = self._validated("baseline", baseline)
        self.seed = self._validated("seed", seed)
        self.batch_size = self._validated("batch_size", batch_size)

    def _attribute(self, model: nn.Module, x: Tensor, target: Tensor) -> tuple[Tensor, None]:
        owner = type(self).__name__
        require_rows(x, owner)
        baseline = baseline_tensor(self.baseline, x, owner)
        features = x.shape[1]
        ends = batched_logits(model, torch.cat([x, baseline]), batch_size=self.batch_size,
                              owner=owner).gather(1, target.repeat(2)[:, None]).view(2, len(x))
        gap = (ends[0] - ends[1]).double()  # f(x) - f(baseline): what phi must add up to
        if features == 1:
            return gap.to(x.dtype)[:, None], None
        masks, weights = coalitions(features, self.samples, seeded_generator(self.seed))
        masks, weights = masks.to(x.device), weights.to(x.device)
        outputs = masked_outputs(model, x, baseline, masks, target, self.batch_size, owner)
        on = masks.double()
        # efficiency: phi_M = gap - sum(phi_<M); regress on z_j - z_M for j < M
        design = on[:, :-1] - on[:, -1:]
        response = outputs.double() - ends[1].double()[:, None] - on[:, -1] * gap[:, None]
        first = weighted_fit(design, weights, response)
        phi = torch.cat([first, (gap - first.sum(1))[:, None]], dim=1)
        return phi.to(x.dtype), None
