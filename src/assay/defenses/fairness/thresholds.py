"""Post-processing: group-specific, randomised thresholds on a model's scores.

Reference: Moritz Hardt, Eric Price and Nathan Srebro, "Equality of Opportunity in
Supervised Learning", NeurIPS 2016. The same derived predictor as fairlearn's
``ThresholdOptimizer`` (Bird et al., MSR-TR-2020-32), written here from the paper.

Fitted on held-out scores (the positive class's probability) with labels and groups,
it picks, for each group, a rule "positive when score > t" or a random mix of two such
rules, so that the groups satisfy the constraint exactly *in expectation on the fitting
data* and accuracy is as high as it can be under it:

* ``"demographic_parity"``: every group gets the same selection rate r. Each group's
  achievable (selection rate, accuracy) pairs are the upper concave hull of its
  thresholds' points, since mixing two rules mixes their rates and accuracies linearly.
  Overall accuracy at rate r is the groups' hulls weighted by their sizes, a concave
  piecewise-linear function of r; its maximum lies on one of the hulls' vertices, so it
  is found exactly by trying each (fairlearn evaluates a grid of 1,001 rates).
* ``"equalized_odds"``: every group gets the same false and true positive rates (x, y).
  Each group's ROC hull gives its highest TPR h_g(x) at FPR x; a group above the lowest
  one, y(x) = min_g h_g(x), is brought down to it by ignoring the score with probability
  q_g = (h_g(x) - y(x)) / (h_g(x) - x) and then selecting with probability x, a point on
  the diagonal. Accuracy ``(N_- (1 - x) + N_+ y(x)) / N`` is concave piecewise linear in
  x; its maximum lies on a hull vertex or where two hulls cross, and every such point is
  tried.

Thresholds lie between consecutive distinct scores of the fitting data; ``t = 1`` selects
no one and ``t = -1`` everyone (scores lie in [0, 1]). The constraint holds on new data
only as far as its score distribution per group resembles the fitting data's: fit on a
held-out split (not the training set, whose scores are overconfident), and measure the
result on a third.

Example::

    >>> import torch
    >>> from assay.defenses.fairness import fit_thresholds
    >>> g = torch.Generator().manual_seed(0)
    >>> groups = torch.randint(0, 2, (4000,), generator=g)
    >>> y = (torch.rand(4000, generator=g) < 0.2 + 0.3 * groups).long()
    >>> scores = (0.3 * y + 0.7 * torch.rand(4000, generator=g)).clamp(0, 1)
    >>> rule = fit_thresholds(scores, y, groups, constraint="demographic_parity")
    >>> rates = [rule.positive_probability(scores, groups)[groups == k].mean() for k in (0, 1)]
    >>> abs(float(rates[0] - rates[1])) < 1e-9
    True
    >>> predictions = rule.predict(scores, groups, seed=0)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..._params import check_choice, check_int, check_optional_seed
from ...core.inference import batched_logits
from ...core.rng import seeded_generator
from ...errors import AssayValueError
from ._inputs import group_index, unit_scores

__all__ = ["GroupThresholds", "ThresholdConstraint", "fit_thresholds", "positive_class_scores"]

ThresholdConstraint = Literal["demographic_parity", "equalized_odds"]
_CONSTRAINTS = ("demographic_parity", "equalized_odds")
NO_ONE, EVERYONE = 1.0, -1.0  # thresholds of the rules "score > t" at the two ends


@dataclass(frozen=True)
class GroupThresholds:
    """The derived predictor of :func:`fit_thresholds`: per group, two thresholds and how
    often each is used, and (equalized odds) how often the score is ignored.

    A sample of group ``groups[k]`` with score s is positive with probability::

        (1 - ignore[k]) * (first_weight[k] * [s > thresholds[k][0]]
                           + (1 - first_weight[k]) * [s > thresholds[k][1]])
        + ignore[k] * constant_rate

    Attributes:
        constraint: "demographic_parity" or "equalized_odds".
        groups: the group codes it was fitted on, in increasing order.
        thresholds: per group, (first, second) threshold; equal when no mix is needed.
        first_weight: per group, the probability of using the first threshold, in [0, 1].
        ignore: per group, the probability of ignoring the score (0 for demographic
            parity).
        constant_rate: the selection probability when the score is ignored (equalized
            odds: the common FPR; 0 otherwise).
        target: the rates every group is given on the fitting data, in expectation:
            ``{"selection_rate": r}`` or ``{"false_positive_rate": x,
            "true_positive_rate": y}``.
        accuracy: the expected accuracy on the fitting data.
    """

    constraint: str
    groups: tuple[int, ...]
    thresholds: tuple[tuple[float, float], ...]
    first_weight: tuple[float, ...]
    ignore: tuple[float, ...]
    constant_rate: float
    target: Mapping[str, float]
    accuracy: float

    def _group_rows(self, groups: object, n: int, owner: str) -> Tensor:
        if not isinstance(groups, Tensor) or groups.ndim != 1 or groups.is_floating_point() \
                or groups.dtype == torch.bool:
            raise AssayValueError(f"The 'groups' parameter of {owner} must be a 1-D integer "
                                  "tensor of group codes.")
        if len(groups) != n:
            raise AssayValueError(f"The 'groups' parameter of {owner} must have one code per "
                                  f"score ({n}). Got {len(groups)} codes instead.")
        known = torch.tensor(self.groups, dtype=torch.int64, device=groups.device)
        position = torch.searchsorted(known, groups.long())
        position = position.clamp(max=len(known) - 1)
        unknown = known[position] != groups
        if bool(unknown.any()):
            code = int(groups[unknown][0])
            raise AssayValueError(f"The 'groups' parameter of {owner} holds code {code}, "
                                  f"which was not a group when the thresholds were fitted "
                                  f"(groups {list(self.groups)}). Fix: fit on data with "
                                  "every group, or leave those samples out.")
        return position

    def positive_probability(self, scores: Tensor, groups: Tensor) -> Tensor:
        """Each sample's probability of a positive prediction, float64 [N], on the
        scores' device."""
        owner = "GroupThresholds.positive_probability"
        scores = unit_scores(scores, None, owner).double()
        rows = self._group_rows(groups, len(scores), owner).to(scores.device)

        def per_group(values: Any) -> Tensor:
            return torch.tensor(values, dtype=torch.float64, device=scores.device)[rows]

        first, second = per_group(self.thresholds).unbind(dim=1)
        weight, ignore = per_group(self.first_weight), per_group(self.ignore)
        thresholded = weight * (scores > first) + (1 - weight) * (scores > second)
        return (1 - ignore) * thresholded + ignore * self.constant_rate

    def predict(self, scores: Tensor, groups: Tensor, seed: int | None = 0) -> Tensor:
        """Randomised 0/1 predictions, int64 [N]: positive when a uniform draw from
        ``seed`` (an int >= 0; None: torch's global generator) falls below
        :meth:`positive_probability`."""
        seed = check_optional_seed("seed", seed, "GroupThresholds.predict")
        probability = self.positive_probability(scores, groups)
        draws = torch.rand(len(probability), dtype=torch.float64, device=probability.device,
                           generator=seeded_generator(seed, probability.device))
        return (draws < probability).long()

    def to_dict(self) -> dict:
        """Plain data (JSON-ready); :meth:`from_dict` reads it back."""
        out = asdict(self)
        out["groups"] = list(self.groups)
        out["thresholds"] = [list(pair) for pair in self.thresholds]
        out["first_weight"], out["ignore"] = list(self.first_weight), list(self.ignore)
        out["target"] = dict(self.target)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GroupThresholds:
        """The predictor that :meth:`to_dict` wrote."""
        try:
            return cls(constraint=check_choice("constraint", data["constraint"], _CONSTRAINTS,
                                               "GroupThresholds"),
                       groups=tuple(int(v) for v in data["groups"]),
                       thresholds=tuple((float(a), float(b)) for a, b in data["thresholds"]),
                       first_weight=tuple(float(v) for v in data["first_weight"]),
                       ignore=tuple(float(v) for v in data["ignore"]),
                       constant_rate=float(data["constant_rate"]),
                       target={str(k): float(v) for k, v in data["target"].items()},
                       accuracy=float(data["accuracy"]))
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, AssayValueError):
                raise
            raise AssayValueError(f"GroupThresholds.from_dict: not a stored predictor "
                                  f"({err!r}). Fix: pass what to_dict returned.") from err


@dataclass(frozen=True)
class _Hull:
    """A group's upper concave hull: vertices x (strictly increasing, from 0 to 1), y,
    and the threshold of each vertex."""

    x: Tensor
    y: Tensor
    threshold: Tensor

    def at(self, points: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """For each point: the left vertex of its segment, the weight of that vertex, and
        the hull's value there."""
        left = (torch.searchsorted(self.x, points, right=True) - 1).clamp(0, len(self.x) - 2)
        x0, x1 = self.x[left], self.x[left + 1]
        weight = ((x1 - points) / (x1 - x0)).clamp(0, 1)
        return left, weight, weight * self.y[left] + (1 - weight) * self.y[left + 1]


def _operating_points(scores: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """For "score > t" at every t between distinct scores (from no one to everyone): the
    counts of false and true positives, float64 [K + 1], and the thresholds."""
    values, inverse = torch.unique(scores, sorted=True, return_inverse=True)
    values, inverse = values.flip(0), len(values) - 1 - inverse  # descending
    positives = torch.bincount(inverse, weights=y.double(), minlength=len(values))
    totals = torch.bincount(inverse, minlength=len(values)).double()
    zero = torch.zeros(1, dtype=torch.float64)
    tp = torch.cat([zero, positives.cumsum(0)])
    fp = torch.cat([zero, (totals - positives).cumsum(0)])
    between = (values[:-1] + values[1:]) / 2
    thresholds = torch.cat([torch.tensor([NO_ONE], dtype=torch.float64), between,
                            torch.tensor([EVERYONE], dtype=torch.float64)])
    return fp, tp, thresholds


def _upper_hull(x: Tensor, y: Tensor, threshold: Tensor) -> _Hull:
    """Andrew's monotone chain over points sorted by (x, y): the upper concave hull, a
    vertex per distinct x (the highest)."""
    xs, ys = x.tolist(), y.tolist()
    kept: list[int] = []
    for i in range(len(xs)):
        while len(kept) >= 2:
            a, b = kept[-2], kept[-1]
            # drop b when it lies on or below the line from a to i
            if (ys[b] - ys[a]) * (xs[i] - xs[a]) <= (ys[i] - ys[a]) * (xs[b] - xs[a]):
                kept.pop()
            else:
                break
        kept.append(i)
    # of vertices sharing an x (a vertical edge of the ROC hull at x = 0), keep the top one
    kept = [k for j, k in enumerate(kept) if j + 1 == len(kept) or xs[kept[j + 1]] != xs[k]]
    index = torch.tensor(kept)
    return _Hull(x[index], y[index], threshold[index])


def fit_thresholds(scores: Tensor, y: Tensor, groups: Tensor, *,
                   constraint: ThresholdConstraint = "demographic_parity") -> GroupThresholds:
    """Group-specific randomised thresholds that satisfy ``constraint`` with the highest
    accuracy (Hardt, Price & Srebro, NeurIPS 2016), fitted on held-out data.

    Parameters:
        scores: float [N], the positive class's probability, in [0, 1]
            (:func:`positive_class_scores`).
        y: the true labels [N], 0 or 1, both present in every group.
        groups: group codes [N], int64; at least 2 groups of at least 2 members.
        constraint: "demographic_parity" (default; equal selection rates) or
            "equalized_odds" (equal true and false positive rates).

    Returns:
        a :class:`GroupThresholds`; its ``predict(scores, groups, seed)`` applies it.
    """
    owner = "fit_thresholds"
    constraint = check_choice("constraint", constraint, _CONSTRAINTS, owner)
    scores = unit_scores(scores, None, owner).detach().double().cpu()  # fitting is one-off
    if not isinstance(y, Tensor) or y.ndim != 1 or y.is_floating_point() or len(y) != len(scores):
        raise AssayValueError(f"The 'y' parameter of {owner} must be a 1-D integer tensor of "
                              f"{len(scores)} labels (one per score).")
    labels = y.detach().long().cpu()
    if bool(((labels != 0) & (labels != 1)).any()):
        raise AssayValueError(f"The 'y' parameter of {owner} must hold binary labels 0 and 1. "
                              "Fix: for a multi-class model pick one class, e.g. "
                              "(y == k).long() with the scores of class k.")
    index, num_groups, codes = group_index(groups, len(scores), owner)
    index = index.cpu()
    hulls, sizes, negatives, positives = [], [], [], []
    for g in range(num_groups):
        member = index == g
        n_pos = int(labels[member].sum())
        n_neg = int(member.sum()) - n_pos
        if n_pos == 0 or n_neg == 0:
            missing = "positive" if n_pos == 0 else "negative"
            raise AssayValueError(f"The 'y' parameter of {owner} must give every group both "
                                  f"labels; group {int(codes[g])} has no {missing} sample, "
                                  "so its rates are undefined. Fix: fit on a larger held-out "
                                  "split, or merge that group with another.")
        fp, tp, thresholds = _operating_points(scores[member], labels[member])
        if constraint == "demographic_parity":
            x, rate = (fp + tp) / (n_pos + n_neg), (tp + n_neg - fp) / (n_pos + n_neg)
        else:
            x, rate = fp / n_neg, tp / n_pos
        hulls.append(_upper_hull(x, rate, thresholds))
        sizes.append(n_pos + n_neg)
        negatives.append(n_neg)
        positives.append(n_pos)
    candidates = torch.unique(torch.cat([h.x for h in hulls]))
    if constraint == "demographic_parity":
        weights = torch.tensor(sizes, dtype=torch.float64) / sum(sizes)
        accuracy = sum(w * h.at(candidates)[2] for w, h in zip(weights, hulls, strict=True))
        best = int(torch.argmax(accuracy))
        x_best, accuracy_best = float(candidates[best]), float(accuracy[best])
        target = {"selection_rate": x_best}
        ignore = [0.0] * num_groups
        constant_rate = 0.0
    else:
        candidates = torch.unique(torch.cat([candidates, _crossings(candidates, hulls)]))
        lowest = torch.stack([h.at(candidates)[2] for h in hulls]).amin(dim=0)
        n_neg, n_pos = sum(negatives), sum(positives)
        accuracy = (n_neg * (1 - candidates) + n_pos * lowest) / (n_neg + n_pos)
        best = int(torch.argmax(accuracy))
        x_best, y_best = float(candidates[best]), float(lowest[best])
        accuracy_best = float(accuracy[best])
        target = {"false_positive_rate": x_best, "true_positive_rate": y_best}
        ignore = []
        for h in hulls:
            height = float(h.at(torch.tensor([x_best], dtype=torch.float64))[2])
            # mix towards the diagonal point (x, x) until the TPR is down to y_best
            above = height - x_best
            ignore.append(min(max((height - y_best) / above, 0.0), 1.0) if above > 1e-12
                          else 0.0)
        constant_rate = x_best
    pairs, first_weight = [], []
    for h in hulls:
        left, weight, _ = h.at(torch.tensor([x_best], dtype=torch.float64))
        pairs.append((float(h.threshold[left]), float(h.threshold[left + 1])))
        first_weight.append(float(weight))
    return GroupThresholds(constraint=constraint, groups=tuple(int(c) for c in codes),
                           thresholds=tuple(pairs), first_weight=tuple(first_weight),
                           ignore=tuple(ignore), constant_rate=constant_rate, target=target,
                           accuracy=accuracy_best)


def _crossings(points: Tensor, hulls: list[_Hull]) -> Tensor:
    """The x where two hulls cross between consecutive ``points`` (every hull is linear
    between them), for every pair of hulls."""
    values = torch.stack([h.at(points)[2] for h in hulls])  # [G, P]
    found = []
    for a in range(len(hulls)):
        for b in range(a + 1, len(hulls)):
            diff = values[a] - values[b]
            change = diff[:-1] * diff[1:] < 0
            share = diff[:-1][change] / (diff[:-1][change] - diff[1:][change])
            left, right = points[:-1][change], points[1:][change]
            found.append(left + share * (right - left))
    return torch.cat(found) if found else points[:0]


def positive_class_scores(model: nn.Module, x: Tensor, *, positive_class: int = 1,
                          batch_size: int = 1024) -> Tensor:
    """The softmax probability of ``positive_class`` (default 1) for each row of ``x``,
    float [N] on the model's device: the scores :func:`fit_thresholds` takes."""
    owner = "positive_class_scores"
    check_int("positive_class", positive_class, owner, low=0)
    logits = batched_logits(model, x, batch_size=batch_size)
    if positive_class >= logits.shape[1]:
        raise AssayValueError(f"The 'positive_class' parameter of {owner} must be a class of "
                              f"the model (0..{logits.shape[1] - 1}). Got {positive_class} "
                              "instead.")
    return logits.softmax(dim=1)[:, positive_class]
