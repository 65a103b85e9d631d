"""Calibration metrics: ECE, classwise ECE, MCE, NLL, Brier score, reliability-diagram data.

Every function takes the model's outputs ``values`` [N, K] and the labels [N], and says
what ``values`` holds with ``inputs``: ``"probs"`` (default; rows must be probabilities
summing to 1, checked, so logits passed by mistake raise) or ``"logits"`` (a softmax is
applied first; :func:`nll` then works on log-softmax directly, exactly).

Binning (``binning``), for the ECE family and the reliability diagram:

* ``"equal_width"`` (default): ``n_bins`` intervals (0, 1/B], (1/B, 2/B], ..., ((B-1)/B, 1]
  (a confidence of exactly 0 falls in the first), as in Guo et al. 2017 and Naeini et
  al. 2015;
* ``"equal_mass"``: samples sorted by confidence (stable sort) and cut into ``n_bins``
  groups of sizes differing by at most one, the adaptive binning of Nixon et al. 2019;
  equal confidences may straddle a cut.

References:
    Chuan Guo, Geoff Pleiss, Yu Sun and Kilian Q. Weinberger, "On Calibration of Modern
    Neural Networks", ICML 2017 (ECE, MCE, reliability diagrams; 15 bins).
    Mahdi Pakdaman Naeini, Gregory F. Cooper and Milos Hauskrecht, "Obtaining Well
    Calibrated Probabilities Using Bayesian Binning", AAAI 2015 (ECE and MCE).
    Jeremy Nixon, Michael W. Dusenberry, Linchuan Zhang, Ghassen Jerfel and Dustin Tran,
    "Measuring Calibration in Deep Learning", CVPR Workshops 2019 (equal-mass binning).
    Meelis Kull, Miquel Perello-Nieto, Markus Kaengsepp, Telmo Silva Filho, Hao Song and
    Peter Flach, "Beyond temperature scaling: Obtaining well-calibrated multiclass
    probabilities with Dirichlet calibration", NeurIPS 2019 (classwise ECE).
    Glenn W. Brier, "Verification of Forecasts Expressed in Terms of Probability",
    Monthly Weather Review 1950 (Brier score).

Example::

    >>> import torch
    >>> from assay.metrics.calibration import ece, nll
    >>> probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    >>> labels = torch.tensor([0, 1, 1])
    >>> round(ece(probs, labels, n_bins=2), 4)
    0.0667
    >>> round(nll(probs.log(), labels, inputs="logits"), 4)
    0.4594
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .._params import check_choice, check_int
from ._tensor_checks import INPUTS, Inputs, as_probs, float_matrix, labels_vector

__all__ = ["BINNINGS", "Binning", "Inputs", "ReliabilityDiagram", "brier", "classwise_ece",
           "ece", "mce", "nll", "reliability_diagram_data"]

Binning = Literal["equal_width", "equal_mass"]
BINNINGS: tuple[str, ...] = ("equal_width", "equal_mass")


@dataclass(frozen=True)
class ReliabilityDiagram:
    """Per-bin data of a reliability diagram (plain floats and ints, JSON-ready).

    Attributes:
        bin_lower, bin_upper: the bin's interval. Equal-width: the fixed edges k/B.
            Equal-mass: the lowest and highest confidence in the bin (None if empty).
        confidence: mean confidence of the bin's samples (None if empty).
        accuracy: fraction of the bin's samples predicted correctly (None if empty).
        count: number of samples in the bin.
        ece: the expected calibration error from the same bins.
        n_bins, binning: the settings used.
    """

    bin_lower: tuple[float | None, ...]
    bin_upper: tuple[float | None, ...]
    confidence: tuple[float | None, ...]
    accuracy: tuple[float | None, ...]
    count: tuple[int, ...]
    ece: float
    n_bins: int
    binning: str


def _settings(owner: str, n_bins: int, binning: str, inputs: str) -> None:
    check_int("n_bins", n_bins, owner, low=1)
    check_choice("binning", binning, BINNINGS, owner)
    check_choice("inputs", inputs, INPUTS, owner)


def _probs_labels(values: Tensor, labels: Tensor, inputs: str, owner: str
                  ) -> tuple[Tensor, Tensor]:
    check_choice("inputs", inputs, INPUTS, owner)
    probs = as_probs(values, inputs, owner, name="values")
    y = labels_vector("labels", labels, owner, probs.shape[0], probs.shape[1])
    return probs.double(), y.to(probs.device)


def _bin_index(conf: Tensor, n_bins: int, binning: str) -> Tensor:
    """Bin of each confidence, per column of ``conf`` [N, C] -> [N, C] in [0, n_bins)."""
    if binning == "equal_width":
        inner = torch.linspace(0.0, 1.0, n_bins + 1, dtype=conf.dtype, device=conf.device)[1:-1]
        return torch.bucketize(conf, inner, right=False)  # (edge_{b}, edge_{b+1}]
    n = conf.shape[0]
    order = torch.argsort(conf, dim=0, stable=True)
    ranks = torch.empty_like(order).scatter_(
        0, order, torch.arange(n, device=conf.device).unsqueeze(1).expand_as(order))
    return ranks * n_bins // n


def _top_label_bins(probs: Tensor, labels: Tensor, n_bins: int, binning: str
                    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Confidence, correctness, bin index and per-bin (count, sum conf, sum correct)."""
    conf, pred = probs.max(dim=1)
    correct = (pred == labels).to(conf.dtype)
    index = _bin_index(conf.unsqueeze(1), n_bins, binning).squeeze(1)
    count = torch.bincount(index, minlength=n_bins)
    sum_conf = conf.new_zeros(n_bins).index_add_(0, index, conf)
    sum_correct = conf.new_zeros(n_bins).index_add_(0, index, correct)
    return conf, index, count, sum_conf, sum_correct


def ece(values: Tensor, labels: Tensor, *, n_bins: int = 15, binning: Binning = "equal_width",
        inputs: Inputs = "probs") -> float:
    """Expected calibration error of the top-label confidence (Guo et al., ICML 2017).

    ``ECE = sum_b (n_b / N) * |acc_b - conf_b|`` over bins of the confidence
    ``max_k p_k``; ``acc_b`` is the fraction of the bin whose argmax equals the label.

    Parameters:
        values: probabilities or logits [N, K] (see ``inputs``).
        labels: integer labels [N] in [0, K).
        n_bins: number of bins B, an int >= 1 (default 15, as in Guo et al.).
        binning: "equal_width" (default) or "equal_mass".
        inputs: "probs" (default) or "logits".

    Returns:
        ECE in [0, 1].
    """
    owner = "ece"
    _settings(owner, n_bins, binning, inputs)
    probs, y = _probs_labels(values, labels, inputs, owner)
    _, _, _, sum_conf, sum_correct = _top_label_bins(probs, y, n_bins, binning)
    return float((sum_correct - sum_conf).abs().sum() / probs.shape[0])


def mce(values: Tensor, labels: Tensor, *, n_bins: int = 15, binning: Binning = "equal_width",
        inputs: Inputs = "probs") -> float:
    """Maximum calibration error: ``max_b |acc_b - conf_b|`` over non-empty bins.

    Reference: Naeini et al., AAAI 2015; Guo et al., ICML 2017. Parameters as :func:`ece`
    (default 15 equal-width bins, ``inputs="probs"``). Returns a float in [0, 1].
    """
    owner = "mce"
    _settings(owner, n_bins, binning, inputs)
    probs, y = _probs_labels(values, labels, inputs, owner)
    _, _, count, sum_conf, sum_correct = _top_label_bins(probs, y, n_bins, binning)
    filled = count > 0
    gaps = (sum_correct[filled] - sum_conf[filled]).abs() / count[filled]
    return float(gaps.max())


def classwise_ece(values: Tensor, labels: Tensor, *, n_bins: int = 15,
                  binning: Binning = "equal_width", inputs: Inputs = "probs") -> float:
    """Classwise ECE (Kull et al., NeurIPS 2019): the mean over classes of each class's ECE.

    For class c, the probabilities ``p_c`` of all N samples are binned and compared with
    the frequency of label c in each bin:
    ``classwise-ECE = (1/K) sum_c sum_b (n_bc / N) |freq_bc - conf_bc|``.

    Parameters as :func:`ece` (default 15 equal-width bins, ``inputs="probs"``); with
    equal-mass binning each class's probabilities are cut into their own quantile bins.
    Returns a float in [0, 1].
    """
    owner = "classwise_ece"
    _settings(owner, n_bins, binning, inputs)
    probs, y = _probs_labels(values, labels, inputs, owner)
    n, k = probs.shape
    hits = F.one_hot(y, k).to(probs.dtype)
    index = _bin_index(probs, n_bins, binning) + n_bins * torch.arange(k, device=probs.device)
    flat = index.reshape(-1)
    sum_conf = probs.new_zeros(n_bins * k).index_add_(0, flat, probs.reshape(-1))
    sum_hits = probs.new_zeros(n_bins * k).index_add_(0, flat, hits.reshape(-1))
    return float((sum_hits - sum_conf).abs().sum() / (n * k))


def nll(values: Tensor, labels: Tensor, *, inputs: Inputs = "probs") -> float:
    """Mean negative log-likelihood of the labels, ``-(1/N) sum_i log p_{i, y_i}``.

    Parameters:
        values: probabilities or logits [N, K] (see ``inputs``). With ``"logits"`` it is
            the cross-entropy of the logits (computed with log-softmax, exact for
            confident models); with ``"probs"``, probabilities are clamped below at the
            smallest positive float of their dtype so a zero gives a large finite value.
        labels: integer labels [N] in [0, K).
        inputs: "probs" (default) or "logits".

    Returns:
        NLL in nats, >= 0.
    """
    owner = "nll"
    check_choice("inputs", inputs, INPUTS, owner)
    if inputs == "logits":
        logits = float_matrix("values", values, owner)
        y = labels_vector("labels", labels, owner, logits.shape[0], logits.shape[1])
        return float(F.cross_entropy(logits.double(), y.to(logits.device)))
    probs = as_probs(values, inputs, owner, name="values")
    y = labels_vector("labels", labels, owner, probs.shape[0], probs.shape[1])
    picked = probs.gather(1, y.to(probs.device).unsqueeze(1)).squeeze(1)
    tiny = torch.finfo(probs.dtype).tiny
    return float(-picked.double().clamp_min(tiny).log().mean())


def brier(values: Tensor, labels: Tensor, *, inputs: Inputs = "probs") -> float:
    """Multi-class Brier score (Brier, 1950): ``(1/N) sum_i sum_k (p_ik - 1[y_i = k])^2``.

    Summed over classes as in Brier's definition (range [0, 2]); divide by K for the
    per-class mean that some libraries report.

    Parameters:
        values: probabilities or logits [N, K] (see ``inputs``).
        labels: integer labels [N] in [0, K).
        inputs: "probs" (default) or "logits".
    """
    owner = "brier"
    probs, y = _probs_labels(values, labels, inputs, owner)
    onehot = F.one_hot(y, probs.shape[1]).to(probs.dtype)
    return float(((probs - onehot) ** 2).sum(dim=1).mean())


def reliability_diagram_data(values: Tensor, labels: Tensor, *, n_bins: int = 15,
                             binning: Binning = "equal_width",
                             inputs: Inputs = "probs") -> ReliabilityDiagram:
    """Per-bin confidence, accuracy and count of the top-label confidence, for a plot.

    Parameters as :func:`ece` (default 15 equal-width bins, ``inputs="probs"``).

    Returns:
        A frozen :class:`ReliabilityDiagram`; its ``ece`` equals :func:`ece` with the same
        settings. Empty bins have ``count`` 0 and None for confidence and accuracy.
    """
    owner = "reliability_diagram_data"
    _settings(owner, n_bins, binning, inputs)
    probs, y = _probs_labels(values, labels, inputs, owner)
    conf, index, count, sum_conf, sum_correct = _top_label_bins(probs, y, n_bins, binning)
    n = probs.shape[0]
    filled = count > 0
    denom = count.clamp_min(1).to(conf.dtype)
    mean_conf, accuracy = sum_conf / denom, sum_correct / denom
    if binning == "equal_width":
        edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64)
        lower: list[float | None] = [float(e) for e in edges[:-1]]
        upper: list[float | None] = [float(e) for e in edges[1:]]
    else:
        lows = conf.new_full((n_bins,), float("inf")).scatter_reduce(0, index, conf, "amin")
        highs = conf.new_full((n_bins,), float("-inf")).scatter_reduce(0, index, conf, "amax")
        lower = [float(v) if f else None for v, f in zip(lows.tolist(), filled.tolist())]
        upper = [float(v) if f else None for v, f in zip(highs.tolist(), filled.tolist())]
    fill = filled.tolist()
    return ReliabilityDiagram(
        bin_lower=tuple(lower), bin_upper=tuple(upper),
        confidence=tuple(float(v) if f else None for v, f in zip(mean_conf.tolist(), fill)),
        accuracy=tuple(float(v) if f else None for v, f in zip(accuracy.tolist(), fill)),
        count=tuple(int(c) for c in count.tolist()),
        ece=float((sum_correct - sum_conf).abs().sum() / n),
        n_bins=n_bins, binning=binning,
    )
