"""In-processing: cross-entropy plus a penalty on the fairness gap of the batch.

Reference: Ching-Yao Chuang and Youssef Mroueh, "Fair Mixup: Fairness via
Interpolation", ICLR 2021: the gap regularisation they compare Fair Mixup with penalises
the demographic parity gap of the model's soft predictions, ``|E_{g=0} f(x) - E_{g=1}
f(x)|``, estimated on each batch, and for equalized odds the same gap within each label.

For a batch with softmax probabilities ``p_i`` of the positive class, the penalty is

* ``"demographic_parity"``: ``gap = max_g m_g - min_g m_g``, where ``m_g`` is the mean of
  ``p_i`` over the batch's members of group g (the difference of selection rates, made
  soft so that it has a gradient);
* ``"equalized_odds"``: the same gap among the samples of each label, positive class and
  the rest (a soft TPR and FPR gap); the larger of the two, as the equalized odds
  difference takes the worse of its parts.

The loss is ``CE + lam * gap ** 2`` (``penalty="squared"``, smooth at 0) or ``CE + lam *
gap`` (``"absolute"``). Groups with no member in the batch (or in a label, for equalized
odds) do not count; with fewer than two groups present the gap is 0. With ``lam = 0`` the
loss, and so training, is exactly the plain cross-entropy. The gap of a batch is a noisy
estimate of the population's: larger batches make the penalty steadier.

Example::

    >>> import torch
    >>> from torch import nn
    >>> from assay.core.dataset import Dataset
    >>> from assay.core.training import TrainConfig, fit
    >>> from assay.defenses.fairness import FairnessRegularisedLoss
    >>> g = torch.Generator().manual_seed(0)
    >>> sex = torch.randint(0, 2, (200,), generator=g)
    >>> x = torch.randn(200, 3, generator=g) + sex[:, None]
    >>> data = Dataset(x, (x[:, 0] > 0.5).long(), "toy", "train", ("no", "yes"),
    ...                attributes={"sex": sex})
    >>> loss = FairnessRegularisedLoss(lam=2.0).loss(data.attributes["sex"])
    >>> history = fit(nn.Linear(3, 2), data, TrainConfig(epochs=1), loss_fn=loss,
    ...               show_progress=False)
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..._params import Choice, Configured, Constraint, Float, Int
from ...core.data import Dataset
from ...core.training import IndexedLoss, TrainConfig, TrainHistory, fit
from ...errors import AssayValueError
from ._inputs import batch_lookup, group_index

__all__ = ["CONSTRAINTS", "FairnessRegularisedLoss", "fit_regularised"]

GapConstraint = Literal["demographic_parity", "equalized_odds"]
CONSTRAINTS: tuple[str, ...] = ("demographic_parity", "equalized_odds")


class FairnessRegularisedLoss(Configured):
    """Cross-entropy plus ``lam`` times a demographic parity or equalized odds gap of the
    batch's soft positive-class probabilities (gap regularisation, Chuang & Mroueh, ICLR
    2021).

    Parameters (keyword-only):
        lam: the penalty's weight, a number >= 0 (default 1.0; 0 gives plain
            cross-entropy).
        constraint: "demographic_parity" (default) or "equalized_odds".
        penalty: "squared" (default: ``lam * gap ** 2``) or "absolute" (``lam * gap``).
        positive_class: the class whose probability is the score, an int >= 0 (default 1);
            for equalized odds the labels are split into this class and the rest.

    :meth:`loss` binds it to the training set's groups as an
    :class:`~assay.core.training.IndexedLoss` for :func:`~assay.core.training.fit`.
    """

    constraints: ClassVar[dict[str, Constraint]] = {
        "lam": Float(low=0.0),
        "constraint": Choice(CONSTRAINTS),
        "penalty": Choice(("squared", "absolute")),
        "positive_class": Int(low=0),
    }

    def __init__(self, *, lam: float = 1.0, constraint: GapConstraint = "demographic_parity",
                 penalty: Literal["squared", "absolute"] = "squared",
                 positive_class: int = 1) -> None:
        self.lam: float = self._validated("lam", lam)
        self.constraint: GapConstraint = self._validated("constraint", constraint)
        self.penalty: str = self._validated("penalty", penalty)
        self.positive_class: int = self._validated("positive_class", positive_class)

    def gap(self, probs: Tensor, y: Tensor, groups: Tensor, num_groups: int) -> Tensor:
        """The batch's gap (a differentiable scalar): ``probs`` [B] positive-class
        probabilities, ``y`` [B] labels, ``groups`` [B] group indices in 0..num_groups-1."""
        if self.constraint == "equalized_odds":
            strata = (y == self.positive_class).long()  # 0: the rest (FPR), 1: positives (TPR)
            num_strata = 2
        else:
            strata = torch.zeros_like(groups)
            num_strata = 1
        cell = strata * num_groups + groups
        size = num_strata * num_groups
        sums = torch.zeros(size, dtype=probs.dtype, device=probs.device).index_add(0, cell, probs)
        counts = torch.bincount(cell, minlength=size).to(probs.dtype)
        present = (counts > 0).reshape(num_strata, num_groups)
        means = (sums / counts.clamp(min=1)).reshape(num_strata, num_groups)
        highest = means.masked_fill(~present, -torch.inf).amax(dim=1)
        lowest = means.masked_fill(~present, torch.inf).amin(dim=1)
        # a label with fewer than two groups in the batch has no gap to measure
        gaps = torch.where(present.sum(dim=1) >= 2, highest - lowest, torch.zeros_like(highest))
        return gaps.amax()

    def loss(self, groups: Tensor) -> IndexedLoss:
        """The loss for :func:`~assay.core.training.fit` on a training set whose samples
        have the group codes ``groups`` [N] (int64; at least 2 groups of 2 members)."""
        owner = type(self).__name__
        index, num_groups, _ = group_index(groups, None, owner)
        group_of = batch_lookup(index, owner, "group codes given to loss()")

        def loss_fn(model: nn.Module, x: Tensor, y: Tensor, batch: Tensor) -> Tensor:
            groups_here = group_of(batch, y.device)
            logits = model(x)
            if self.positive_class >= logits.shape[1]:
                raise AssayValueError(
                    f"The 'positive_class' parameter of {owner} must be a class of the "
                    f"model (0..{logits.shape[1] - 1}). Got {self.positive_class} instead.")
            probs = logits.softmax(dim=1)[:, self.positive_class]
            gap = self.gap(probs, y, groups_here, num_groups)
            penalty = gap ** 2 if self.penalty == "squared" else gap
            return F.cross_entropy(logits, y) + self.lam * penalty

        return IndexedLoss(loss_fn)


def fit_regularised(model: nn.Module, data: Dataset, attribute: str,
                    regulariser: FairnessRegularisedLoss,
                    config: TrainConfig = TrainConfig(), *,
                    show_progress: bool = False) -> TrainHistory:
    """Train ``model`` in place on ``data`` with ``regulariser``'s loss for the sensitive
    attribute ``attribute`` (a name in ``data.attributes``) through the one training loop.

    Returns :func:`~assay.core.training.fit`'s history.
    """
    if not isinstance(regulariser, FairnessRegularisedLoss):
        raise AssayValueError("The 'regulariser' parameter of fit_regularised must be a "
                              "FairnessRegularisedLoss. Got "
                              f"{type(regulariser).__name__} instead.")
    codes, _ = data.attribute(attribute)
    return fit(model, data, config, loss_fn=regulariser.loss(codes),
               show_progress=show_progress)
