"""Auditing a differential-privacy claim with one training run.

T. Steinke, M. Nasr, M. Jagielski. "Privacy Auditing with One (1) Training Run".
NeurIPS 2023 (arXiv 2305.08846).

The protocol: ``m`` canaries, each included in the training set by an independent fair
coin ``S_i``; after training, the auditor scores every canary, guesses "in" for the ``k+``
highest scores and "out" for the ``k-`` lowest, abstains on the rest, and counts the
``v`` correct guesses out of ``r = k+ + k-``. Their main theorem: if training is
(epsilon, delta)-DP (add or remove one record), then

    P[v correct or more] <= P[Bin(r, q) >= v]
                            + 2 m delta max_{1 <= i <= v} P[v - i <= Bin(r, q) < v] / i

with ``q = e^eps / (1 + e^eps)`` (the accuracy of eps-DP randomised response); with
delta = 0 the first term alone. :func:`audit_p_value` computes that bound (the p-value of
their Appendix D), and :func:`epsilon_lower_bound` the largest epsilon it rejects at
confidence ``1 - beta``: the training is then not (epsilon, delta)-DP for any smaller
epsilon, with that confidence. It is a lower bound: a low one proves nothing about the
claim.

The guess counts (their experiments vary them): assay guesses symmetrically,
``k+ = k- = k``, and searches ``k`` over :func:`guess_grid` (halvings of ``m / 2`` down to
5), each count tested at confidence ``1 - beta / G`` for ``G`` counts (Bonferroni), so
that the best of them still holds at ``1 - beta``; a given ``k`` is one test at
``1 - beta``.

The canaries (:func:`insert_canaries`) are input-space canaries: training samples
relabelled to a seeded random other class (mislabelled samples are memorised, not
generalised, so they are the points whose inclusion shows most), scored black-box by minus
the cross-entropy on the canary label (:func:`canary_scores`).

    >>> round(epsilon_lower_bound(1000, 200, 200, delta=0.0, confidence=0.95), 3)
    4.194
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import special, stats
from torch import Tensor, nn

from ..._params import check_float, check_int
from ...core.data import Dataset
from ...core.inference import batched_logits
from ...core.rng import seeded_generator
from ...errors import AssayValueError
from .scores import threshold_scores

__all__ = ["CanaryRun", "OneRunBound", "audit_p_value", "canary_scores", "epsilon_lower_bound",
           "guess_grid", "insert_canaries", "one_run_audit"]

_OWNER = "one-run audit"
SMALLEST_GUESSES = 5  # k per side: 10 guesses all right show epsilon 1.05 at 95%, no more
_BISECTIONS = 50


def _check_counts(canaries: int, guesses: int, correct: int) -> None:
    check_int("canaries", canaries, _OWNER, low=1)
    check_int("guesses", guesses, _OWNER, low=0, high=canaries)
    check_int("correct", correct, _OWNER, low=0, high=guesses)


def _check_confidence(confidence: float) -> float:
    return check_float("confidence", confidence, _OWNER, low=0.0, high=1.0, low_open=True,
                       high_open=True)


def audit_p_value(canaries: int, guesses: int, correct: int, epsilon: float,
                  delta: float) -> float:
    """The probability bound of ``correct`` or more right guesses out of ``guesses`` on
    ``canaries`` canaries under the hypothesis that training is (``epsilon``,
    ``delta``)-DP (the theorem in the module docstring); 1 at most."""
    _check_counts(canaries, guesses, correct)
    check_float("epsilon", epsilon, _OWNER, low=0.0)
    check_float("delta", delta, _OWNER, low=0.0, high=1.0)
    q = float(special.expit(epsilon))
    tail = float(stats.binom.sf(correct - 1, guesses, q))  # P[Bin(r, q) >= v]
    if delta == 0.0 or correct == 0:
        return min(tail, 1.0)
    # P[v - i <= Bin(r, q) < v] for i = 1..v, summed from the top so no mass is lost
    below = np.cumsum(stats.binom.pmf(np.arange(correct - 1, -1, -1), guesses, q))
    alpha = float(np.max(below / np.arange(1, correct + 1)))
    return min(tail + 2 * canaries * delta * alpha, 1.0)


def epsilon_lower_bound(canaries: int, guesses: int, correct: int, *, delta: float,
                        confidence: float) -> float:
    """The largest epsilon that ``correct`` right guesses of ``guesses`` on ``canaries``
    canaries reject at ``confidence`` (p-value below ``1 - confidence``), by bisection to
    about 1e-12; 0 when even epsilon 0 is not rejected."""
    beta = 1 - _check_confidence(confidence)

    def rejected(epsilon: float) -> bool:
        return audit_p_value(canaries, guesses, correct, epsilon, delta) < beta

    if guesses == 0 or not rejected(0.0):
        return 0.0
    low, high = 0.0, 1.0
    while rejected(high):  # q rounds to 1 by epsilon 40, where the tail is 1
        low, high = high, 2 * high
    for _ in range(_BISECTIONS):
        middle = (low + high) / 2
        low, high = (middle, high) if rejected(middle) else (low, middle)
    return low  # rejected: the bound keeps the confidence


def guess_grid(canaries: int) -> tuple[int, ...]:
    """The guesses per side ``k`` that :func:`one_run_audit` tries for ``canaries``
    canaries: ``m // 2`` halved down to :data:`SMALLEST_GUESSES` (just ``m // 2`` when
    that is smaller)."""
    check_int("canaries", canaries, _OWNER, low=2)
    counts = [canaries // 2]
    while counts[-1] // 2 >= SMALLEST_GUESSES:
        counts.append(counts[-1] // 2)
    return tuple(counts)


@dataclass(frozen=True)
class OneRunBound:
    """The outcome of a one-run audit: ``epsilon`` (the lower bound at ``confidence``),
    the guesses per side ``k`` that gave it, the ``guesses`` and ``correct`` of that
    count, each candidate count as ``(k, correct, bound)``, the confidence of each test
    (``per_test_confidence``, Bonferroni over the candidates) and ``ceiling``: the bound
    all-correct guesses would give, the most these canaries can show."""

    epsilon: float
    k: int
    guesses: int
    correct: int
    candidates: tuple[tuple[int, int, float], ...]
    confidence: float
    per_test_confidence: float
    ceiling: float
    delta: float
    canaries: int

    def to_dict(self) -> dict:
        return {"epsilon": self.epsilon, "k": self.k, "guesses": self.guesses,
                "correct": self.correct, "candidates": [list(c) for c in self.candidates],
                "confidence": self.confidence, "per_test_confidence": self.per_test_confidence,
                "ceiling": self.ceiling, "delta": self.delta, "canaries": self.canaries}


def one_run_audit(scores: Tensor, included: Tensor, *, delta: float, confidence: float = 0.95,
                  k: int | None = None) -> OneRunBound:
    """The lower bound on epsilon from canary ``scores`` [m] (higher: more likely
    included) and the coins ``included`` [m] (bool): guess "in" for the ``k`` highest
    scores and "out" for the ``k`` lowest (ties in index order, which the coins do not
    depend on).

    delta : float in [0, 1) - the claimed delta (no default)
    confidence : float in (0, 1), default 0.95
    k : int in [1, m // 2] or None, default None - None searches :func:`guess_grid`,
        Bonferroni-corrected; an int is one test
    """
    if scores.ndim != 1 or included.shape != scores.shape or included.dtype != torch.bool:
        raise AssayValueError(f"one_run_audit needs scores [m] and bool coins [m]; got "
                              f"{list(scores.shape)} and {list(included.shape)} "
                              f"{included.dtype}.")
    if not bool(torch.isfinite(scores).all()):
        raise AssayValueError("one_run_audit: the canary scores hold NaN or infinite values.")
    canaries = len(scores)
    check_float("delta", delta, _OWNER, low=0.0, high=1.0, high_open=True)
    _check_confidence(confidence)
    counts = guess_grid(canaries) if k is None else (check_int("k", k, _OWNER, low=1,
                                                               high=canaries // 2),)
    per_test = 1 - (1 - confidence) / len(counts)
    order = torch.argsort(scores.detach().cpu().double(), descending=True, stable=True)
    ranked = included.cpu()[order]
    candidates = []
    for count in counts:
        correct = int(ranked[:count].sum()) + int((~ranked[len(ranked) - count:]).sum())
        bound = epsilon_lower_bound(canaries, 2 * count, correct, delta=delta,
                                    confidence=per_test)
        candidates.append((count, correct, bound))
    best = max(candidates, key=lambda c: (c[2], c[0]))  # ties: the most guesses
    ceiling = max(epsilon_lower_bound(canaries, 2 * count, 2 * count, delta=delta,
                                      confidence=per_test) for count in counts)
    return OneRunBound(epsilon=best[2], k=best[0], guesses=2 * best[0], correct=best[1],
                       candidates=tuple(candidates), confidence=confidence,
                       per_test_confidence=per_test, ceiling=ceiling, delta=delta,
                       canaries=canaries)


@dataclass(frozen=True)
class CanaryRun:
    """The training set of a one-run audit: ``train`` (the samples that are no canary,
    then the included canaries with their canary labels), every canary's input ``x``
    [m, ...] and canary label ``y`` [m], its coin ``included`` [m] and its ``positions``
    [m] in the data it was drawn from."""

    train: Dataset
    x: Tensor
    y: Tensor
    included: Tensor
    positions: Tensor


def insert_canaries(data: Dataset, canaries: int, num_classes: int, *, seed: int) -> CanaryRun:
    """Draw ``canaries`` samples of ``data`` (seeded), relabel each to a uniformly drawn
    other class of ``num_classes``, and include each by a fair coin: the training set of
    the audited run. The canaries left out are left out altogether."""
    check_int("canaries", canaries, _OWNER, low=1, high=len(data))
    check_int("num_classes", num_classes, _OWNER, low=2)
    generator = seeded_generator(seed)
    positions = torch.randperm(len(data), generator=generator)[:canaries]
    shift = torch.randint(1, num_classes, (canaries,), generator=generator)
    labels = (data.y[positions] + shift) % num_classes
    included = torch.rand(canaries, generator=generator) < 0.5
    relabelled_y = data.y.clone()
    relabelled_y[positions] = labels
    relabelled = Dataset(data.x, relabelled_y, data.name, data.split, data.classes,
                         source=data.source, attributes=data.attributes,
                         attribute_values=data.attribute_values, schema=data.schema)
    others = torch.ones(len(data), dtype=torch.bool)
    others[positions] = False
    keep = torch.cat([torch.nonzero(others).flatten(), positions[included]])
    return CanaryRun(train=relabelled.take(keep, f"{data.split}+canaries"),
                     x=data.x[positions], y=labels, included=included, positions=positions)


def canary_scores(model: nn.Module, run: CanaryRun, *, batch_size: int = 256) -> Tensor:
    """Minus each canary's cross-entropy on its canary label under ``model`` [m], on the
    CPU: higher for a canary the model fits, i.e. more likely trained on (``batch_size``
    inputs a forward pass, default 256)."""
    logits = batched_logits(model, run.x, batch_size=batch_size, output_device="cpu")
    return threshold_scores(logits, run.y, "loss")
