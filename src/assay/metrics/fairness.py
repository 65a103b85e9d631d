"""Group-fairness metrics: per-group confusion rates, their gaps, and bootstrap intervals.

Everything is computed from one table of counts: rows are sorted into cells
(group x true label x prediction, and x score bin when scores are given) by a single
``torch.bincount``; every rate is a function of those counts, and the functions accept
leading batch dimensions (``[B, G, 2, 2]``), which is how the bootstrap evaluates 1,000
resamples at once. Labels and predictions are binary (0/1); audit class k of a
multi-class model against the rest with :func:`one_vs_rest`.

Conventions:

* A rate whose denominator is 0 (TPR of a group without positives, precision of a group
  with no predicted positives, any rate of an empty group) is NaN, never 0. fairlearn
  (through scikit-learn's ``zero_division``) reports 0 there, which would let an
  unmeasured group look perfect or awful.
* Gaps follow fairlearn's ``method="between_groups"``: difference = max - min and
  ratio = min / max over the *eligible* groups, those with at least ``min_group_size``
  members and a defined value. Fewer than two eligible groups: difference and ratio are
  NaN, and a NaN fails an assay gate, on purpose: a trust tool does not pass what it
  cannot measure. Ratio when every eligible value is 0 (max = 0): NaN, as in fairlearn
  (pandas' 0 / 0): no group is selected, so no ratio of selection rates exists, and a
  four-fifths verdict on it would be a guess.
* Equalized odds combines its two parts as fairlearn's ``agg="worst_case"``: the larger
  of the TPR and FPR differences, the smaller of the two ratios; if either part is NaN the
  result is NaN (fairlearn's Python ``max`` over a Series keeps or drops a NaN depending
  on its position).
* Intersectional groups (``Groups.intersect``) keep every combination, also those with no
  member (size 0): they are reported and never enter a gap, as in fairlearn.

References:
    Moritz Hardt, Eric Price and Nathan Srebro, "Equality of Opportunity in Supervised
    Learning", NeurIPS 2016 (equalized odds, equal opportunity).
    Michael Feldman, Sorelle A. Friedler, John Moeller, Carlos Scheidegger and Suresh
    Venkatasubramanian, "Certifying and Removing Disparate Impact", KDD 2015; and the
    EEOC's Uniform Guidelines on Employee Selection Procedures, 29 CFR 1607.4(D), 1978
    (disparate impact ratio, the four-fifths rule).
    Bradley Efron, "Bootstrap Methods: Another Look at the Jackknife", Annals of
    Statistics 1979 (percentile bootstrap).
    Michael Kearns, Seth Neel, Aaron Roth and Zhiwei Steven Wu, "Preventing Fairness
    Gerrymandering: Auditing and Learning for Subgroup Fairness", ICML 2018; Joy Buolamwini
    and Timnit Gebru, "Gender Shades: Intersectional Accuracy Disparities in Commercial
    Gender Classification", FAT* 2018 (intersectional subgroups).
    Sarah Bird, Miro Dudik, Richard Edgar, Brandon Horn, Roman Lutz, Vanessa Milan, Mehrnoosh
    Sameki, Hanna Wallach and Kathleen Walker, "Fairlearn: A toolkit for assessing and
    improving fairness in AI", Microsoft Tech Report MSR-TR-2020-32 (the reference
    implementation these functions are tested against).

Example::

    >>> import torch
    >>> from assay.metrics.fairness import Groups, demographic_parity_ratio, fairness_report
    >>> sex = Groups(torch.tensor([0, 0, 0, 1, 1, 1]), ("F", "M"), "sex")
    >>> y_true = torch.tensor([1, 0, 1, 1, 0, 0])
    >>> y_pred = torch.tensor([1, 0, 0, 1, 1, 1])
    >>> round(demographic_parity_ratio(y_true, y_pred, sex), 4)
    0.3333
    >>> report = fairness_report(y_true, y_pred, sex, min_group_size=1, n_bootstrap=0)
    >>> report.four_fifths_rule
    False
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._params import check_float, check_int
from ..core.rng import seeded_generator
from ..errors import AssayValueError
from ._tensor_checks import fail
from .calibration import _bin_index

__all__ = ["DEFAULT_MIN_GROUP_SIZE", "Disaggregated", "FOUR_FIFTHS", "FairnessReport", "Groups",
           "RATES", "SUMMARY_METRICS", "confusion_counts", "confusion_rates",
           "demographic_parity_difference", "demographic_parity_ratio", "disaggregate",
           "equal_opportunity_difference", "equal_opportunity_ratio",
           "equalized_odds_difference", "equalized_odds_ratio", "fairness_report", "group_ece",
           "multinomial_resample", "one_vs_rest", "summary_metrics", "value_label"]

# A rate over fewer than 30 members has a binomial standard error up to 0.5 / sqrt(30)
# = 0.09, as large as the gaps gates are set at (0.1), so a gap through such a group
# measures noise; 30 is also the usual floor for the normal approximation.
DEFAULT_MIN_GROUP_SIZE = 30

RATES: tuple[str, ...] = ("selection_rate", "accuracy", "tpr", "fpr", "fnr", "tnr", "precision")

# summary metric -> (per-group rate, "difference" or "ratio"); equalized odds is built
# from two of them in summary_metrics.
_GAPS: dict[str, tuple[str, str]] = {
    "demographic_parity_difference": ("selection_rate", "difference"),
    "demographic_parity_ratio": ("selection_rate", "ratio"),
    "equal_opportunity_difference": ("tpr", "difference"),
    "equal_opportunity_ratio": ("tpr", "ratio"),
    "predictive_parity_difference": ("precision", "difference"),
    "predictive_parity_ratio": ("precision", "ratio"),
    "accuracy_difference": ("accuracy", "difference"),
}
SUMMARY_METRICS: tuple[str, ...] = (*_GAPS, "equalized_odds_difference", "equalized_odds_ratio")

# the EEOC's four-fifths rule: a selection rate under 80% of the highest is adverse impact
FOUR_FIFTHS = 0.8


@dataclass(frozen=True)
class Groups:
    """Membership of N rows in G groups of one sensitive attribute.

    Attributes:
        codes: int64 [N], each row's group in [0, G).
        names: the G group labels (strings), in code order.
        attribute: the attribute's name ("sex"; "sex*race" for an intersection).
    """

    codes: Tensor
    names: tuple[str, ...]
    attribute: str

    def __post_init__(self) -> None:
        owner = "Groups"
        codes = self.codes
        if not isinstance(codes, Tensor) or codes.ndim != 1 or codes.numel() == 0 \
                or codes.dtype == torch.bool or codes.is_floating_point() or codes.is_complex():
            raise fail("codes", owner, "a non-empty 1-D integer tensor of group codes", codes)
        names = tuple(self.names) if isinstance(self.names, (tuple, list)) else None
        if not names or not all(isinstance(n, str) for n in names) or len(set(names)) < len(names):
            raise fail("names", owner, "a non-empty tuple of distinct strings", self.names)
        if not isinstance(self.attribute, str) or not self.attribute:
            raise fail("attribute", owner, "a non-empty string (the attribute's name)",
                       self.attribute)
        low, high = int(codes.min()), int(codes.max())
        if low < 0 or high >= len(names):
            raise AssayValueError(
                f"The 'codes' parameter of Groups must lie in [0, {len(names) - 1}] (one code "
                f"per name in 'names'). Got codes from {low} to {high}; give a name to every "
                "code.")
        object.__setattr__(self, "codes", codes.long())
        object.__setattr__(self, "names", names)

    @property
    def num_groups(self) -> int:
        return len(self.names)

    @classmethod
    def from_labels(cls, labels: Sequence[Any] | np.ndarray, attribute: str) -> Groups:
        """Groups from one label per row (strings or numbers); names are the sorted
        distinct labels as strings, so the order matches fairlearn's ``by_group``."""
        values = np.asarray(labels)
        if values.ndim != 1 or values.size == 0:
            raise fail("labels", "Groups.from_labels", "a non-empty 1-D sequence of labels",
                       labels)
        names, codes = np.unique(values, return_inverse=True)
        return cls(torch.from_numpy(codes.astype(np.int64)), tuple(str(n) for n in names),
                   attribute)

    @classmethod
    def from_dataset(cls, data: Any, spec: str) -> Groups:
        """The groups of ``data``'s sensitive attribute ``spec`` (a ``Dataset``'s
        ``attribute``), or of the intersection ``"sex*race"`` of several."""
        parts = []
        for name in spec.split("*"):
            codes, values = data.attribute(name)
            parts.append(cls(codes.cpu(), values, name))
        return parts[0].intersect(*parts[1:]) if len(parts) > 1 else parts[0]

    def intersect(self, *others: Groups) -> Groups:
        """Intersectional groups of this attribute and ``others`` (mixed-radix codes:
        ``code = c_1 * G_2 * ... * G_k + ... + c_k``); every combination is kept, those
        without members have size 0. Names join with "*": "Female*White"."""
        parts = (self, *others)
        n = self.codes.shape[0]
        for other in others:
            if not isinstance(other, Groups):
                raise fail("others", "Groups.intersect", "Groups", other)
            if other.codes.shape[0] != n:
                raise AssayValueError(
                    f"Groups.intersect needs the same rows in every attribute: "
                    f"'{self.attribute}' has {n} rows, '{other.attribute}' has "
                    f"{other.codes.shape[0]}.")
        codes = torch.zeros_like(self.codes)
        for part in parts:  # a handful of attributes
            codes = codes * part.num_groups + part.codes.to(codes.device)
        names = tuple("*".join(combo) for combo in itertools.product(*(p.names for p in parts)))
        return Groups(codes, names, "*".join(p.attribute for p in parts))


def value_label(value: str) -> str:
    """A group's value as it appears in a metric name (``selection_rate@race=Native_American``):
    spaces and ``<``/``>`` (which end a metric name in a gate) become ``_``."""
    return re.sub(r"[\s<>]+", "_", value.strip()) or "_"


def one_vs_rest(y: Tensor, positive_class: int) -> Tensor:
    """0/1 labels [N]: 1 where ``y == positive_class`` (int64), to audit class k of a
    multi-class model against the rest (apply to labels and predictions alike)."""
    owner = "one_vs_rest"
    if not isinstance(y, Tensor) or y.ndim != 1 or y.dtype == torch.bool \
            or y.is_floating_point() or y.is_complex():
        raise fail("y", owner, "a 1-D integer tensor of class indices", y)
    check_int("positive_class", positive_class, owner, low=0)
    return (y == positive_class).long()


def _binary(name: str, value: object, owner: str, n: int | None) -> Tensor:
    """A non-empty 1-D tensor of 0/1 values (any real dtype), as int64."""
    if not isinstance(value, Tensor) or value.ndim != 1 or value.numel() == 0 \
            or value.is_complex():
        raise fail(name, owner, "a non-empty 1-D tensor of 0/1 values", value)
    if n is not None and value.shape[0] != n:
        raise fail(name, owner, f"a 1-D tensor with {n} entries (one per row of y_true)", value)
    if not bool(((value == 0) | (value == 1)).all()):
        raise AssayValueError(
            f"The '{name}' parameter of {owner} must hold binary values 0/1. Got values "
            f"{torch.unique(value)[:5].tolist()}...; for a multi-class model audit one class "
            "against the rest with one_vs_rest(labels, k) and one_vs_rest(predictions, k).")
    return value.long()


def _inputs(y_true: object, y_pred: object, groups: object, owner: str
            ) -> tuple[Tensor, Tensor, Tensor, int]:
    if not isinstance(groups, Groups):
        raise fail("groups", owner, "a Groups (codes, names, attribute)", groups)
    yt = _binary("y_true", y_true, owner, None)
    yp = _binary("y_pred", y_pred, owner, yt.shape[0]).to(yt.device)
    if groups.codes.shape[0] != yt.shape[0]:
        raise AssayValueError(
            f"The 'groups' parameter of {owner} must have one code per row: y_true has "
            f"{yt.shape[0]} rows, groups '{groups.attribute}' has {groups.codes.shape[0]}.")
    return yt, yp, groups.codes.to(yt.device), groups.num_groups


def _scores(scores: object, owner: str, n: int, device: torch.device) -> Tensor:
    if not isinstance(scores, Tensor) or scores.ndim != 1 or not scores.is_floating_point() \
            or scores.shape[0] != n:
        raise fail("scores", owner,
                   f"a 1-D floating tensor of {n} positive-class probabilities", scores)
    if not bool(((scores >= 0) & (scores <= 1)).all()):  # also refuses NaN
        raise fail("scores", owner, "probabilities of the positive class in [0, 1] (apply "
                   "softmax or sigmoid to logits first)", scores)
    return scores.to(device, torch.float64)


def _cells(y_true: Tensor, y_pred: Tensor, codes: Tensor, num_groups: int,
           bins: Tensor | None = None, n_bins: int = 1, weights: Tensor | None = None
           ) -> Tensor:
    """Counts (or sums of ``weights``) per cell, one bincount: [G, 2, 2] or [G, 2, 2, bins]."""
    index = codes * 4 + 2 * y_true + y_pred
    if bins is not None:
        index = index * n_bins + bins
    size = num_groups * 4 * n_bins
    out = torch.bincount(index, weights=weights, minlength=size)
    shape = (num_groups, 2, 2) if bins is None else (num_groups, 2, 2, n_bins)
    return out.reshape(shape)


def confusion_counts(y_true: Tensor, y_pred: Tensor, groups: Groups) -> Tensor:
    """Confusion counts per group, int64 [G, 2, 2] indexed [group, y_true, y_pred].

    Parameters:
        y_true, y_pred: 0/1 tensors [N] (any real dtype holding only 0 and 1).
        groups: the rows' :class:`Groups`.
    """
    yt, yp, codes, g = _inputs(y_true, y_pred, groups, "confusion_counts")
    return _cells(yt, yp, codes, g)


def _divide(num: Tensor, den: Tensor) -> Tensor:
    return torch.where(den > 0, num / den.clamp_min(1), torch.full_like(num, math.nan))


def confusion_rates(counts: Tensor) -> dict[str, Tensor]:
    """Rates from confusion counts ``[..., 2, 2]`` (indexed [y_true, y_pred]) -> each
    ``[...]`` in float64: "count", then :data:`RATES`: selection_rate (predicted
    positive), accuracy, tpr, fpr, fnr, tnr and precision (positive predictive value).
    A rate with a zero denominator is NaN. Per group for [G, 2, 2], per resample and
    group for [B, G, 2, 2]; overall for ``counts.sum(-3)``."""
    c = counts.to(torch.float64)
    tn, fp, fn, tp = c[..., 0, 0], c[..., 0, 1], c[..., 1, 0], c[..., 1, 1]
    n, pos, neg, pred_pos = tn + fp + fn + tp, tp + fn, tn + fp, tp + fp
    return {
        "count": n,
        "selection_rate": _divide(pred_pos, n),
        "accuracy": _divide(tp + tn, n),
        "tpr": _divide(tp, pos),
        "fpr": _divide(fp, neg),
        "fnr": _divide(fn, pos),
        "tnr": _divide(tn, neg),
        "precision": _divide(tp, pred_pos),
    }


def _ece_from_cells(counts: Tensor, score_sums: Tensor) -> tuple[Tensor, Tensor]:
    """Per-group and overall ECE from [..., G, 2, 2, bins] counts and score sums."""
    hits = counts[..., 1, :, :].sum(-2).to(torch.float64)      # [..., G, bins]: y_true = 1
    conf = score_sums.sum((-3, -2))                             # [..., G, bins]
    sizes = counts.sum((-3, -2, -1)).to(torch.float64)         # [..., G]
    per_group = _divide((hits - conf).abs().sum(-1), sizes)
    overall = _divide((hits.sum(-2) - conf.sum(-2)).abs().sum(-1), sizes.sum(-1))
    return per_group, overall


def group_ece(y_true: Tensor, scores: Tensor, groups: Groups, *, n_bins: int = 15
              ) -> Tensor:
    """Per-group expected calibration error of the positive-class probability, [G] float64.

    What is binned: the score ``p = P(y = 1)`` of every row, into ``n_bins`` equal-width
    bins (0, 1/B], ..., ((B-1)/B, 1] (0 in the first), the binning of
    :func:`assay.metrics.calibration.ece`; per group g,
    ``ECE_g = sum_b (n_gb / n_g) |mean(y_true)_gb - mean(p)_gb|`` (the calibration of the
    positive class, not of the top-label confidence). One bincount over group x bin.
    Empty groups are NaN. Default 15 bins (Guo et al., ICML 2017).
    """
    owner = "group_ece"
    check_int("n_bins", n_bins, owner, low=1)
    # predictions do not enter the ECE: y_true fills their slot of the cells
    yt, _, codes, g = _inputs(y_true, y_true, groups, owner)
    p = _scores(scores, owner, yt.shape[0], yt.device)
    bins = _bin_index(p.unsqueeze(1), n_bins, "equal_width").squeeze(1)
    counts = _cells(yt, yt, codes, g, bins, n_bins)
    sums = _cells(yt, yt, codes, g, bins, n_bins, weights=p)
    return _ece_from_cells(counts, sums)[0]


@dataclass(frozen=True)
class Disaggregated:
    """One metric per group and its between-group gaps (tensors; batch dims lead).

    Attributes:
        overall: the metric on all rows, [] or [B].
        by_group: per group, [G] or [B, G].
        eligible: bool, same shape as by_group: size >= min_group_size and value defined.
        group_min, group_max: over eligible groups (NaN when none).
        difference: group_max - group_min; NaN with fewer than 2 eligible groups.
        ratio: group_min / group_max; NaN with fewer than 2 eligible groups, when
            group_max is 0 or when a value is negative (a ratio of rates).
    """

    overall: Tensor
    by_group: Tensor
    eligible: Tensor
    group_min: Tensor
    group_max: Tensor
    difference: Tensor
    ratio: Tensor


def disaggregate(values_by_group: Tensor, sizes: Tensor, *, min_group_size: int,
                 overall: Tensor | float) -> Disaggregated:
    """Gaps of any per-group metric, fairlearn's ``method="between_groups"``.

    Parameters:
        values_by_group: the metric per group, [G] or [B, G] (NaN where undefined).
        sizes: members per group, [G] (the observed sizes: in a bootstrap the same groups
            stay eligible in every resample).
        min_group_size: groups with fewer members are left out of the gaps (an int >= 0;
            0: every non-empty group counts, as in fairlearn).
        overall: the metric on all rows ([] or [B], or a float), carried along.

    Returns:
        A :class:`Disaggregated` (see there for NaN rules).
    """
    check_int("min_group_size", min_group_size, "disaggregate", low=0)
    values = values_by_group.to(torch.float64)
    sizes = sizes.to(values.device)
    if values.ndim not in (1, 2) or sizes.shape != values.shape[-1:]:
        raise AssayValueError(
            "The 'values_by_group' parameter of disaggregate must be [G] or [B, G] with G = "
            f"len(sizes) = {sizes.shape[-1] if sizes.ndim else 0}. Got shape "
            f"{tuple(values.shape)}.")
    eligible = (sizes >= min_group_size) & (sizes > 0) & ~torch.isnan(values)
    inf = torch.full_like(values, math.inf)
    n_eligible = eligible.sum(-1)
    nan = torch.full(n_eligible.shape, math.nan, dtype=torch.float64, device=values.device)
    group_max = torch.where(n_eligible > 0, torch.where(eligible, values, -inf).amax(-1), nan)
    group_min = torch.where(n_eligible > 0, torch.where(eligible, values, inf).amin(-1), nan)
    two = n_eligible >= 2
    difference = torch.where(two, group_max - group_min, nan)
    ratio_ok = two & (group_max > 0) & (group_min >= 0)
    ratio = torch.where(ratio_ok, group_min / torch.where(ratio_ok, group_max, 1.0), nan)
    overall_t = torch.as_tensor(overall, dtype=torch.float64, device=values.device)
    return Disaggregated(overall_t, values, eligible, group_min, group_max, difference, ratio)


def summary_metrics(gaps: dict[str, Disaggregated]) -> dict[str, Tensor]:
    """The summary metrics (:data:`SUMMARY_METRICS`) from the gaps of the rates
    (``{rate: Disaggregated}``, at least selection_rate, tpr, fpr, precision, accuracy)."""
    out = {name: getattr(gaps[rate], kind) for name, (rate, kind) in _GAPS.items()}
    tpr, fpr = gaps["tpr"], gaps["fpr"]
    # torch.maximum / minimum propagate NaN: either part unmeasured -> unmeasured.
    out["equalized_odds_difference"] = torch.maximum(tpr.difference, fpr.difference)
    out["equalized_odds_ratio"] = torch.minimum(tpr.ratio, fpr.ratio)
    return out


def _gaps_of(counts: Tensor, sizes: Tensor, min_group_size: int) -> dict[str, Disaggregated]:
    """Every rate of :data:`RATES` per group ([..., G, 2, 2] counts) and its gaps."""
    per_group, overall = confusion_rates(counts), confusion_rates(counts.sum(-3))
    return {rate: disaggregate(per_group[rate], sizes, min_group_size=min_group_size,
                               overall=overall[rate]) for rate in RATES}


def _summary(y_true: Tensor, y_pred: Tensor, groups: Groups, min_group_size: int,
             owner: str) -> dict[str, Tensor]:
    check_int("min_group_size", min_group_size, owner, low=0)
    yt, yp, codes, g = _inputs(y_true, y_pred, groups, owner)
    counts = _cells(yt, yp, codes, g)
    return summary_metrics(_gaps_of(counts, counts.sum((-2, -1)), min_group_size))


def demographic_parity_difference(y_true: Tensor, y_pred: Tensor, groups: Groups, *,
                                  min_group_size: int = 0) -> float:
    """Largest minus smallest selection rate P(y_pred = 1 | group) (fairlearn's function
    of the same name, ``method="between_groups"``; Feldman et al. 2015). Groups smaller
    than ``min_group_size`` (default 0: all, as in fairlearn) are left out."""
    return float(_summary(y_true, y_pred, groups, min_group_size,
                          "demographic_parity_difference")["demographic_parity_difference"])


def demographic_parity_ratio(y_true: Tensor, y_pred: Tensor, groups: Groups, *,
                             min_group_size: int = 0) -> float:
    """Smallest over largest selection rate, the disparate impact ratio of the
    four-fifths rule (EEOC 1978; Feldman et al. 2015); NaN when no group is selected.
    ``min_group_size`` as in :func:`demographic_parity_difference`."""
    return float(_summary(y_true, y_pred, groups, min_group_size,
                          "demographic_parity_ratio")["demographic_parity_ratio"])


def equalized_odds_difference(y_true: Tensor, y_pred: Tensor, groups: Groups, *,
                              min_group_size: int = 0) -> float:
    """The larger of the TPR and FPR differences between groups (Hardt et al. 2016;
    fairlearn's ``agg="worst_case"``). ``min_group_size`` as above (default 0)."""
    return float(_summary(y_true, y_pred, groups, min_group_size,
                          "equalized_odds_difference")["equalized_odds_difference"])


def equalized_odds_ratio(y_true: Tensor, y_pred: Tensor, groups: Groups, *,
                         min_group_size: int = 0) -> float:
    """The smaller of the TPR and FPR ratios between groups (Hardt et al. 2016;
    fairlearn's ``agg="worst_case"``). ``min_group_size`` as above (default 0)."""
    return float(_summary(y_true, y_pred, groups, min_group_size,
                          "equalized_odds_ratio")["equalized_odds_ratio"])


def equal_opportunity_difference(y_true: Tensor, y_pred: Tensor, groups: Groups, *,
                                 min_group_size: int = 0) -> float:
    """Largest minus smallest TPR between groups (Hardt et al. 2016).
    ``min_group_size`` as above (default 0)."""
    return float(_summary(y_true, y_pred, groups, min_group_size,
                          "equal_opportunity_difference")["equal_opportunity_difference"])


def equal_opportunity_ratio(y_true: Tensor, y_pred: Tensor, groups: Groups, *,
                            min_group_size: int = 0) -> float:
    """Smallest over largest TPR between groups (Hardt et al. 2016).
    ``min_group_size`` as above (default 0)."""
    return float(_summary(y_true, y_pred, groups, min_group_size,
                          "equal_opportunity_ratio")["equal_opportunity_ratio"])


def multinomial_resample(cell_counts: Tensor, n_resamples: int, *,
                         generator: torch.Generator | None = None) -> Tensor:
    """Cell counts of ``n_resamples`` bootstrap resamples of the rows, [n_resamples, *shape].

    Drawing N rows with replacement and counting them per cell is exactly a multinomial
    draw of N over the cells with the observed proportions, so the rows never need to be
    materialised. The multinomial is drawn as a chain of binomials,
    ``n_k ~ Binomial(N - n_1 - ... - n_{k-1}, c_k / (c_k + ... + c_K))`` (exact: each
    conditional of a multinomial is binomial), vectorised over the resamples, one
    ``torch.binomial`` per non-empty cell. float64 counts are exact up to 2**53 rows.
    """
    check_int("n_resamples", n_resamples, "multinomial_resample", low=1)
    flat = cell_counts.reshape(-1).to(torch.float64)
    filled = torch.nonzero(flat > 0).flatten().tolist()
    tail = flat.flip(0).cumsum(0).flip(0)  # c_k + ... + c_K
    cond = flat / tail.clamp_min(1)
    out = torch.zeros(n_resamples, flat.shape[0], dtype=torch.float64, device=flat.device)
    remaining = torch.full((n_resamples,), float(flat.sum()), dtype=torch.float64,
                           device=flat.device)
    for k in filled[:-1]:  # over cells (G * 4 [* bins]), never over rows
        draw = torch.binomial(remaining, cond[k].expand(n_resamples), generator=generator)
        out[:, k] = draw
        remaining = remaining - draw
    if filled:
        out[:, filled[-1]] = remaining
    return out.reshape(n_resamples, *cell_counts.shape)


@dataclass(frozen=True)
class FairnessReport:
    """Per-group rates, their gaps and bootstrap intervals for one sensitive attribute.

    Attributes:
        attribute, groups, sizes: the attribute, its group names and member counts.
        min_group_size: groups smaller than this are reported but left out of the gaps.
        too_small: the groups left out for size (empty intersections included).
        by_group: rate -> one value per group (float64 as float; NaN where undefined):
            the :data:`RATES`, and "ece" when scores were given.
        overall: rate -> value on all rows.
        summary: :data:`SUMMARY_METRICS` (and "ece_difference" with scores) -> value.
        summary_intervals: summary metric -> (low, high) percentile interval.
        by_group_intervals: rate -> one (low, high) per group.
        four_fifths_rule: demographic_parity_ratio >= 0.8 (EEOC 1978); False when the
            ratio is NaN.
        n_bootstrap, confidence, seed: the bootstrap's settings (0 resamples: no intervals).
        n_bins: score bins of the per-group ECE, None without scores.
    """

    attribute: str
    groups: tuple[str, ...]
    sizes: tuple[int, ...]
    min_group_size: int
    too_small: tuple[str, ...]
    by_group: dict[str, tuple[float, ...]]
    overall: dict[str, float]
    summary: dict[str, float]
    summary_intervals: dict[str, tuple[float, float]]
    by_group_intervals: dict[str, tuple[tuple[float, float], ...]]
    four_fifths_rule: bool
    n_bootstrap: int
    confidence: float
    seed: int
    n_bins: int | None

    def to_dict(self) -> dict[str, Any]:
        """Plain dicts, lists, strings and numbers (NaN stays a float NaN; pass the dict
        through :func:`assay.results.json_safe` for strict JSON)."""
        return {
            "attribute": self.attribute, "groups": list(self.groups), "sizes": list(self.sizes),
            "min_group_size": self.min_group_size, "too_small": list(self.too_small),
            "by_group": {k: list(v) for k, v in self.by_group.items()},
            "overall": dict(self.overall), "summary": dict(self.summary),
            "summary_intervals": {k: list(v) for k, v in self.summary_intervals.items()},
            "by_group_intervals": {k: [list(iv) for iv in v]
                                   for k, v in self.by_group_intervals.items()},
            "four_fifths_rule": self.four_fifths_rule, "n_bootstrap": self.n_bootstrap,
            "confidence": self.confidence, "seed": self.seed, "n_bins": self.n_bins,
        }


def _point_and_gaps(counts: Tensor, score_sums: Tensor | None, sizes: Tensor,
                    min_group_size: int) -> tuple[dict[str, Disaggregated], dict[str, Tensor]]:
    """Gaps of every rate (and ECE) and the summary metrics from cells with leading
    batch dims: [..., G, 2, 2] counts, or [..., G, 2, 2, bins] with score sums."""
    confusion = counts if score_sums is None else counts.sum(-1)
    gaps = _gaps_of(confusion, sizes, min_group_size)
    summary = summary_metrics(gaps)
    if score_sums is not None:
        per_group, overall = _ece_from_cells(counts, score_sums)
        gaps["ece"] = disaggregate(per_group, sizes, min_group_size=min_group_size,
                                   overall=overall)
        summary["ece_difference"] = gaps["ece"].difference
    return gaps, summary


def _percentile(samples: Tensor, confidence: float) -> tuple[Tensor, Tensor]:
    """Percentile interval over dim 0, NaN where more than 1 - confidence of the
    resamples leave the statistic undefined (the rest would be a selected subset)."""
    alpha = 1.0 - confidence
    q = torch.tensor([alpha / 2, 1 - alpha / 2], dtype=torch.float64, device=samples.device)
    ends = torch.nanquantile(samples, q, dim=0)
    undefined = torch.isnan(samples).to(torch.float64).mean(0) > alpha
    ends = torch.where(undefined, torch.full_like(ends, math.nan), ends)
    return ends[0], ends[1]


def fairness_report(y_true: Tensor, y_pred: Tensor, groups: Groups, *,
                    scores: Tensor | None = None, min_group_size: int = DEFAULT_MIN_GROUP_SIZE,
                    n_bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0,
                    n_bins: int = 15) -> FairnessReport:
    """Per-group table, gaps, summary metrics and bootstrap intervals for one attribute.

    Parameters:
        y_true, y_pred: 0/1 tensors [N] (see :func:`one_vs_rest` for multi-class).
        groups: the rows' :class:`Groups` (an intersection from ``Groups.intersect``).
        scores: optional positive-class probabilities [N] in [0, 1]; adds the per-group
            ECE (see :func:`group_ece` for what is binned) and "ece_difference".
        min_group_size: groups smaller than this (default 30, :data:`DEFAULT_MIN_GROUP_SIZE`:
            a rate of 30 members has a standard error up to 0.09) are reported, listed in
            ``too_small`` and left out of every gap.
        n_bootstrap: resamples for the intervals (default 1000; 0: no intervals).
        confidence: the intervals' level, in (0, 1) (default 0.95).
        seed: the bootstrap's seed, an int >= 0 (default 0; the same seed gives the same
            intervals).
        n_bins: equal-width score bins of the ECE (default 15).

    The bootstrap (Efron 1979, percentile intervals) resamples the N rows with
    replacement, which is exactly a multinomial draw of the cell counts
    (:func:`multinomial_resample`); 1,000 resamples of a million rows cost 1,000 draws of
    G x 4 cells. The groups that count in a gap are fixed by the observed sizes; a
    resample that leaves a group's rate undefined drops that group from that resample's
    gap, and an interval is NaN when more than 1 - confidence of the resamples leave its
    statistic undefined. With scores, the cells are also split by score bin; a
    resample's count of a cell is exact, its sum of scores is approximated by count x
    the cell's observed mean score (the rows within a cell are not tracked), so the ECE
    intervals ignore the spread of scores within a bin (width 1/n_bins), while every
    rate's interval stays exact in distribution.

    Returns:
        A :class:`FairnessReport`.
    """
    owner = "fairness_report"
    check_int("min_group_size", min_group_size, owner, low=0)
    check_int("n_bootstrap", n_bootstrap, owner, low=0)
    confidence = check_float("confidence", confidence, owner, low=0.0, high=1.0,
                             low_open=True, high_open=True)
    check_int("seed", seed, owner, low=0)
    check_int("n_bins", n_bins, owner, low=1)
    yt, yp, codes, g = _inputs(y_true, y_pred, groups, owner)
    if scores is None:
        counts = _cells(yt, yp, codes, g)
        cell_scores: Tensor | None = None
    else:
        p = _scores(scores, owner, yt.shape[0], yt.device)
        bins = _bin_index(p.unsqueeze(1), n_bins, "equal_width").squeeze(1)
        counts = _cells(yt, yp, codes, g, bins, n_bins)
        cell_scores = _cells(yt, yp, codes, g, bins, n_bins, weights=p)
    sizes = counts.reshape(g, -1).sum(-1)
    gaps, summary = _point_and_gaps(counts, cell_scores, sizes, min_group_size)

    summary_iv: dict[str, tuple[float, float]] = {}
    group_iv: dict[str, tuple[tuple[float, float], ...]] = {}
    if n_bootstrap:
        draws = multinomial_resample(counts, n_bootstrap,
                                     generator=seeded_generator(seed, yt.device))
        draw_scores = None
        if cell_scores is not None:
            mean_score = cell_scores / counts.clamp_min(1)
            draw_scores = draws * mean_score
        boot_gaps, boot_summary = _point_and_gaps(draws, draw_scores, sizes, min_group_size)
        for name, values in boot_summary.items():
            low, high = _percentile(values, confidence)
            summary_iv[name] = (float(low), float(high))
        for rate, gap in boot_gaps.items():
            lows, highs = _percentile(gap.by_group, confidence)
            group_iv[rate] = tuple(zip(lows.tolist(), highs.tolist()))

    names = groups.names
    size_list = [int(s) for s in sizes.tolist()]
    dp_ratio = float(summary["demographic_parity_ratio"])
    return FairnessReport(
        attribute=groups.attribute, groups=names, sizes=tuple(size_list),
        min_group_size=min_group_size,
        too_small=tuple(n for n, s in zip(names, size_list) if s < min_group_size or s == 0),
        by_group={rate: tuple(gap.by_group.tolist()) for rate, gap in gaps.items()},
        overall={rate: float(gap.overall) for rate, gap in gaps.items()},
        summary={name: float(v) for name, v in summary.items()},
        summary_intervals=summary_iv, by_group_intervals=group_iv,
        four_fifths_rule=bool(dp_ratio >= FOUR_FIFTHS),  # NaN >= 0.8 is False
        n_bootstrap=n_bootstrap, confidence=confidence, seed=seed,
        n_bins=None if scores is None else n_bins,
    )
