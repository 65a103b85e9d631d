"""Out-of-distribution detection metrics: AUROC, FPR at a TPR, AUPR-In and AUPR-Out.

Convention: a detector's score is **higher for in-distribution** inputs. In-distribution
samples are the positives for AUROC, FPR@TPR and AUPR-In; AUPR-Out takes OOD samples as
positives and ranks by the negated score. The evaluation protocol (AUROC, AUPR-In,
AUPR-Out, FPR at 95% TPR) is the one of Hendrycks & Gimpel, "A Baseline for Detecting
Misclassified and Out-of-Distribution Examples in Neural Networks", ICLR 2017.

Ties are handled exactly: all samples sharing a score enter the curves at one threshold,
so AUROC equals the Mann-Whitney statistic with ties counted one half (as
``sklearn.metrics.roc_auc_score``) and AUPR is the step-wise average precision without
interpolation (as ``sklearn.metrics.average_precision_score``). Pure torch, one sort.

Example::

    >>> import torch
    >>> from assay.metrics.ood import auroc, fpr_at_tpr
    >>> s_in, s_out = torch.tensor([0.9, 0.8, 0.7, 0.4]), torch.tensor([0.5, 0.3, 0.7])
    >>> round(auroc(s_in, s_out), 4)
    0.7917
    >>> fpr_at_tpr(s_in, s_out, tpr=0.75)
    0.3333333333333333
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .._params import check_float
from ._tensor_checks import real_vector

__all__ = ["OODMetrics", "aupr_in", "aupr_out", "auroc", "fpr_at_tpr", "ood_metrics"]


@dataclass(frozen=True)
class OODMetrics:
    """All four OOD metrics for one pair of score sets (floats in [0, 1]).

    Attributes:
        auroc: area under the ROC curve, in-distribution as positives.
        fpr_at_tpr: fraction of OOD samples accepted at the threshold that first
            accepts at least ``tpr`` of the in-distribution samples.
        aupr_in: average precision with in-distribution as positives.
        aupr_out: average precision with OOD as positives (score negated).
        tpr: the TPR level used for ``fpr_at_tpr``.
        n_in, n_out: sample counts.
    """

    auroc: float
    fpr_at_tpr: float
    aupr_in: float
    aupr_out: float
    tpr: float
    n_in: int
    n_out: int


def _inputs(scores_in: object, scores_out: object, owner: str) -> tuple[Tensor, Tensor]:
    s_in = real_vector("scores_in", scores_in, owner)
    s_out = real_vector("scores_out", scores_out, owner)
    return s_in.double(), s_out.to(s_in.device).double()


def _curve(pos: Tensor, neg: Tensor) -> tuple[Tensor, Tensor]:
    """True and false positive counts at each distinct threshold, thresholds descending.

    A sample is predicted positive when its score is >= the threshold; all samples sharing
    a score switch at the same threshold (one point per distinct score).
    """
    scores = torch.cat([pos, neg])
    is_pos = torch.cat([torch.ones_like(pos), torch.zeros_like(neg)])
    order = torch.argsort(scores, descending=True, stable=True)
    scores, is_pos = scores[order], is_pos[order]
    last_of_run = torch.nonzero(scores[1:] != scores[:-1]).squeeze(1)
    ends = torch.cat([last_of_run, last_of_run.new_tensor([scores.numel() - 1])])
    tps = torch.cumsum(is_pos, 0)[ends]
    fps = (ends + 1).to(tps.dtype) - tps
    return tps, fps


def _auroc(tps: Tensor, fps: Tensor) -> float:
    zero = tps.new_zeros(1)
    tpr = torch.cat([zero, tps / tps[-1]])
    fpr = torch.cat([zero, fps / fps[-1]])
    return float(torch.trapezoid(tpr, fpr))


def _average_precision(tps: Tensor, fps: Tensor) -> float:
    recall = tps / tps[-1]
    precision = tps / (tps + fps)
    steps = torch.diff(recall, prepend=recall.new_zeros(1))
    return float((steps * precision).sum())


def _fpr_at(tps: Tensor, fps: Tensor, tpr: float) -> float:
    reached = torch.nonzero(tps / tps[-1] >= tpr)
    return float(fps[reached[0, 0]] / fps[-1])


def auroc(scores_in: Tensor, scores_out: Tensor) -> float:
    """Area under the ROC curve with in-distribution as the positive class.

    Equals P(s_in > s_out) + 0.5 * P(s_in == s_out) over independent pairs.

    Parameters:
        scores_in: scores [N_in] of in-distribution samples (higher = more in-distribution).
        scores_out: scores [N_out] of OOD samples.

    Returns:
        AUROC in [0, 1]; 0.5 is chance, 1 is perfect separation.
    """
    tps, fps = _curve(*_inputs(scores_in, scores_out, "auroc"))
    return _auroc(tps, fps)


def fpr_at_tpr(scores_in: Tensor, scores_out: Tensor, *, tpr: float = 0.95) -> float:
    """False positive rate on OOD samples at the first threshold reaching ``tpr``.

    The threshold is the highest one that accepts (score >= threshold) at least a
    fraction ``tpr`` of the in-distribution samples; no interpolation between thresholds.

    Parameters:
        scores_in: in-distribution scores [N_in] (higher = more in-distribution).
        scores_out: OOD scores [N_out].
        tpr: target true positive rate, a number in (0, 1] (default 0.95, "FPR95").

    Returns:
        The fraction of OOD samples accepted at that threshold, in [0, 1].
    """
    check_float("tpr", tpr, "fpr_at_tpr", low=0.0, high=1.0, low_open=True)
    tps, fps = _curve(*_inputs(scores_in, scores_out, "fpr_at_tpr"))
    return _fpr_at(tps, fps, tpr)


def aupr_in(scores_in: Tensor, scores_out: Tensor) -> float:
    """Area under the precision-recall curve with in-distribution as positives (AUPR-In).

    Computed as average precision, sum over thresholds of (R_n - R_{n-1}) * P_n, as
    ``sklearn.metrics.average_precision_score``.

    Parameters:
        scores_in: in-distribution scores [N_in] (higher = more in-distribution).
        scores_out: OOD scores [N_out].
    """
    tps, fps = _curve(*_inputs(scores_in, scores_out, "aupr_in"))
    return _average_precision(tps, fps)


def aupr_out(scores_in: Tensor, scores_out: Tensor) -> float:
    """Area under the precision-recall curve with OOD samples as positives (AUPR-Out).

    OOD samples are ranked by the negated score; average precision as in :func:`aupr_in`.

    Parameters:
        scores_in: in-distribution scores [N_in] (higher = more in-distribution).
        scores_out: OOD scores [N_out].
    """
    s_in, s_out = _inputs(scores_in, scores_out, "aupr_out")
    tps, fps = _curve(-s_out, -s_in)
    return _average_precision(tps, fps)


def ood_metrics(scores_in: Tensor, scores_out: Tensor, *, tpr: float = 0.95) -> OODMetrics:
    """AUROC, FPR at ``tpr`` (default 0.95), AUPR-In and AUPR-Out in one frozen result."""
    owner = "ood_metrics"
    check_float("tpr", tpr, owner, low=0.0, high=1.0, low_open=True)
    s_in, s_out = _inputs(scores_in, scores_out, owner)
    tps, fps = _curve(s_in, s_out)
    tps_out, fps_out = _curve(-s_out, -s_in)
    return OODMetrics(auroc=_auroc(tps, fps), fpr_at_tpr=_fpr_at(tps, fps, tpr),
                      aupr_in=_average_precision(tps, fps),
                      aupr_out=_average_precision(tps_out, fps_out), tpr=float(tpr),
                      n_in=int(s_in.numel()), n_out=int(s_out.numel()))
