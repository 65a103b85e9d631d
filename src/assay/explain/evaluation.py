"""The explanation evaluation: each method's faithfulness against a random attribution and
its sanity under model randomisation, with a verdict per method.

- Faithful: its deletion AUC (Petsiuk et al. 2018) is lower than that of a random
  attribution of the same inputs, beyond doubt: the upper end of the 95% interval of the
  paired difference (normal approximation) is below 0. A random attribution fails this.
- Sane: after every layer has been re-initialised (Adebayo et al. 2018, cascading from
  the top), the mean Spearman correlation of its maps with the trained model's is below
  ``max_spearman`` (default 0.5). An explanation that ignores the model (an edge detector,
  a fixed random map) keeps a correlation of 1 and fails.

On the digits CNN of the tests (64 test images): deletion AUC 0.05 for IG, gradient x
input and occlusion, 0.17 saliency, 0.40 Grad-CAM (its last conv map is 2x2) against 0.44
for random; Spearman after full randomisation -0.03 to 0.22 for the gradient methods and
1.0 for an edge detector.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from .._params import check_float, check_int, check_optional_seed
from ._base import Explainer, resolve_target
from .metrics import (Curve, RandomisationResult, cascading_randomisation, completeness_error,
                      deletion_curve, insertion_curve, random_attribution)

Z95 = 1.959964  # two-sided 95% normal quantile


@dataclass(frozen=True)
class MethodEvaluation:
    """One method's maps, curves, randomisation and verdicts.

    ``deletion_gain`` is the mean of random minus method deletion AUC (> 0: better than
    random), ``gain_interval`` its 95% interval; ``spearman`` the mean rank correlation
    after full randomisation, ``ssim`` the mean SSIM there (None for tabular data);
    ``completeness`` the mean completeness error where the method has a delta."""

    attributions: Tensor
    deletion: Curve
    insertion: Curve
    randomisation: RandomisationResult
    deletion_gain: float
    gain_interval: tuple[float, float]
    spearman: float
    ssim: float | None
    completeness: float | None
    faithful: bool
    sane: bool


@dataclass(frozen=True)
class ExplanationEvaluation:
    target: Tensor
    random_deletion: Curve
    random_insertion: Curve
    methods: dict[str, MethodEvaluation]


def evaluate_explanations(model: nn.Module, x: Tensor, explainers: Mapping[str, Explainer], *,
                          target: int | Tensor | None = None, steps: int = 16,
                          max_spearman: float = 0.5, seed: int | None = 0,
                          batch_size: int | None = 256) -> ExplanationEvaluation:
    """Evaluate each of ``explainers`` (name -> explainer) on ``x`` for ``target``
    (default: the predicted classes): deletion and insertion curves of ``steps`` shares
    (default 16), the same for a seeded random attribution, and the cascading
    randomisation; verdicts as the module says."""
    owner = "evaluate_explanations"
    steps = check_int("steps", steps, owner, low=1)
    max_spearman = check_float("max_spearman", max_spearman, owner, low=-1.0, high=1.0)
    seed = check_optional_seed("seed", seed, owner)
    target = resolve_target(model, x, target, owner, batch_size)
    curves: dict[str, Any] = {"steps": steps, "batch_size": batch_size}
    noise = random_attribution(x, seed)
    random_deletion = deletion_curve(model, x, noise, target, **curves)
    random_insertion = insertion_curve(model, x, noise, target, **curves)
    results = {}
    for name, explainer in explainers.items():
        run = explainer.run(model, x, target)
        deletion = deletion_curve(model, x, run.attributions, target, **curves)
        gain = random_deletion.auc - deletion.auc
        mean = float(gain.mean())
        half = Z95 * float(gain.std()) / math.sqrt(len(gain)) if len(gain) > 1 else math.inf
        randomised = cascading_randomisation(model, x, target, explainer,
                                             seed=0 if seed is None else seed,
                                             reference=run.attributions)
        spearman = float(randomised.spearman[-1].mean())
        results[name] = MethodEvaluation(
            run.attributions, deletion,
            insertion_curve(model, x, run.attributions, target, **curves), randomised,
            mean, (mean - half, mean + half), spearman,
            None if randomised.ssim is None else float(randomised.ssim[-1].mean()),
            None if run.delta is None else float(completeness_error(run).mean()),
            faithful=mean - half > 0, sane=spearman < max_spearman)
    return ExplanationEvaluation(target, random_deletion, random_insertion, results)
