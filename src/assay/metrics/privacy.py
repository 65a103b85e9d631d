"""Metrics of a membership-inference attack, from its scores on members and non-members.

A score is higher for samples the attack believes were trained on; a threshold ``t``
calls every sample with score ``>= t`` a member. Every function here is exact on ties:
tied scores fall on the same side of every threshold, so no threshold separates them, and
the ROC has one point per distinct score (Carlini et al., "Membership Inference Attacks
From First Principles", IEEE S&P 2022, report the TPR at a low FPR on a log-scale ROC).

* :func:`roc_points`: the exact ROC, ``(fpr, tpr)`` from (0, 0) to (1, 1);
* :func:`tpr_at_fpr`: the largest TPR of a threshold whose FPR is at most the target, and
  the count of members it catches (for :func:`clopper_pearson`);
* :func:`auc_with_interval`: the Mann-Whitney AUC (ties count one half) with DeLong's
  interval (DeLong, DeLong & Clarke-Pearson, Biometrics 1988);
* :func:`advantage`: the membership advantage max(TPR - FPR) (Yeom et al., CSF 2018);
* :func:`clopper_pearson`: the exact binomial interval (Clopper & Pearson, Biometrika 1934).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from scipy import stats
from torch import Tensor

from ..errors import AssayValueError

__all__ = ["MembershipMetrics", "advantage", "auc_with_interval", "clopper_pearson",
           "membership_metrics", "roc_points", "tpr_at_fpr"]


def _scores(members: Tensor, nonmembers: Tensor) -> tuple[Tensor, Tensor]:
    for name, scores in (("members", members), ("nonmembers", nonmembers)):
        if not isinstance(scores, Tensor) or scores.ndim != 1 or len(scores) == 0:
            raise AssayValueError(f"The {name!r} scores must be a non-empty 1-D tensor. Got "
                                  f"{getattr(scores, 'shape', type(scores).__name__)} instead.")
        if not bool(torch.isfinite(scores).all()):
            raise AssayValueError(f"The {name!r} scores hold NaN or infinite values; an attack "
                                  "must score every sample with a finite number.")
    return members.detach().double().cpu(), nonmembers.detach().double().cpu()


def roc_points(members: Tensor, nonmembers: Tensor) -> tuple[Tensor, Tensor]:
    """The exact ROC of scores ``members`` [N1] and ``nonmembers`` [N0]: ``(fpr, tpr)``,
    float64 tensors, one point per distinct score (threshold ``>=`` that score) after the
    point (0, 0) of a threshold above every score; both non-decreasing, ending at (1, 1)."""
    members, nonmembers = _scores(members, nonmembers)
    thresholds = torch.unique(torch.cat([members, nonmembers]), sorted=True).flip(0)
    caught = len(members) - torch.searchsorted(members.sort().values, thresholds, right=False)
    false = len(nonmembers) - torch.searchsorted(nonmembers.sort().values, thresholds,
                                                 right=False)
    zero = torch.zeros(1, dtype=torch.float64)
    return (torch.cat([zero, false.double() / len(nonmembers)]),
            torch.cat([zero, caught.double() / len(members)]))


def tpr_at_fpr(members: Tensor, nonmembers: Tensor, fpr: float) -> tuple[float, int]:
    """The largest TPR of a threshold whose FPR is at most ``fpr``, and the number of
    members that threshold calls members. No interpolation between ROC points: a block of
    tied non-member scores is crossed whole or not at all."""
    if not 0.0 <= fpr <= 1.0:
        raise AssayValueError(f"The 'fpr' parameter of tpr_at_fpr must lie in [0, 1]. Got "
                              f"{fpr!r} instead.")
    false, true = roc_points(members, nonmembers)
    allowed = false <= fpr + 1e-12  # 1e-12: k / N0 against a target typed as a decimal
    tpr = float(true[allowed].max())
    return tpr, round(tpr * len(members))


def _midranks(values: Tensor) -> Tensor:
    """Ranks 1..N of ``values``, tied values sharing the mean of their ranks."""
    unique, inverse, counts = torch.unique(values, return_inverse=True, return_counts=True)
    first = torch.cumsum(counts, 0) - counts  # ranks below each distinct value
    return (first.double() + (counts.double() + 1) / 2)[inverse]


def auc_with_interval(members: Tensor, nonmembers: Tensor,
                      confidence: float = 0.95) -> tuple[float, float, float]:
    """The AUC (the chance that a random member outscores a random non-member, ties
    counting one half) and DeLong's normal interval at ``confidence``, clipped to [0, 1].
    Scores that say nothing (all equal) give exactly (0.5, 0.5, 0.5)."""
    members, nonmembers = _scores(members, nonmembers)
    n1, n0 = len(members), len(nonmembers)
    both = _midranks(torch.cat([members, nonmembers]))
    # DeLong's structural components: each member's share of non-members below it, and
    # each non-member's share of members above it.
    v10 = (both[:n1] - _midranks(members)) / n0
    v01 = 1 - (both[n1:] - _midranks(nonmembers)) / n1
    auc = float(v10.mean())
    var = (float(v10.var()) / n1 if n1 > 1 else 0.0) + (float(v01.var()) / n0 if n0 > 1 else 0.0)
    half = float(stats.norm.ppf(0.5 + confidence / 2)) * math.sqrt(max(var, 0.0))
    return auc, max(0.0, auc - half), min(1.0, auc + half)


def advantage(members: Tensor, nonmembers: Tensor) -> float:
    """Membership advantage: max over thresholds of TPR - FPR (0 for an attack that does
    no better than chance at any threshold)."""
    false, true = roc_points(members, nonmembers)
    return float((true - false).max())


def clopper_pearson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper-Pearson) interval of a binomial proportion ``successes / n``;
    (nan, nan) for ``n == 0``."""
    if n == 0:
        return math.nan, math.nan
    alpha = 1 - confidence
    low = 0.0 if successes == 0 else float(stats.beta.ppf(alpha / 2, successes,
                                                          n - successes + 1))
    high = 1.0 if successes == n else float(stats.beta.ppf(1 - alpha / 2, successes + 1,
                                                           n - successes))
    return low, high


@dataclass(frozen=True)
class MembershipMetrics:
    """What one attack achieved: AUC and its interval, TPR at each target FPR with its
    Clopper-Pearson interval, the advantage, and the ROC on a log-spaced FPR grid."""

    auc: tuple[float, float, float]
    tpr: dict[float, tuple[float, float, float]]  # fpr -> (tpr, low, high)
    advantage: float
    curve_fpr: list[float]
    curve_tpr: list[float]


def membership_metrics(members: Tensor, nonmembers: Tensor, fprs: tuple[float, ...] = (1e-3, 1e-2),
                       *, curve_points: int = 40) -> MembershipMetrics:
    """Every metric above for one attack's scores; the curve holds the exact TPR at
    ``curve_points`` FPRs spaced evenly in log scale from ``1 / N0`` (the smallest FPR
    the non-members can show) to 1."""
    tprs = {}
    for fpr in fprs:
        tpr, caught = tpr_at_fpr(members, nonmembers, fpr)
        tprs[fpr] = (tpr, *clopper_pearson(caught, len(members)))
    false, true = roc_points(members, nonmembers)
    grid = torch.logspace(-math.log10(len(nonmembers)), 0, curve_points, dtype=torch.float64)
    # the last ROC point at or below each grid FPR (the first point is (0, 0))
    last = torch.searchsorted(false, grid * (1 + 1e-12), right=True) - 1
    return MembershipMetrics(auc_with_interval(members, nonmembers), tprs,
                             advantage(members, nonmembers), grid.tolist(), true[last].tolist())
