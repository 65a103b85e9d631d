"""The training-time mitigations as one loss each, for :func:`assay.core.training.fit`:
what ``assay harden fairness`` and the fairness check's trade-off both train with."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from ..._params import check_choice
from ...core.training import IndexedLoss
from .regularised import FairnessRegularisedLoss, GapConstraint
from .reweighing import reweighed_loss, reweighing_weights

TrainedMitigation = Literal["reweighing", "regularised"]
TRAINED_MITIGATIONS: tuple[str, ...] = ("reweighing", "regularised")


def mitigation_loss(method: TrainedMitigation | str, y: Tensor, groups: Tensor, *,
                    constraint: GapConstraint = "demographic_parity", lam: float = 1.0,
                    positive_class: int = 1) -> IndexedLoss:
    """The :class:`~assay.core.training.IndexedLoss` of ``method`` for a training set with
    labels ``y`` and group codes ``groups``: "reweighing" (Kamiran & Calders 2012) or
    "regularised" (cross-entropy plus ``lam`` times the batch's ``constraint`` gap). The
    regulariser's penalty is the absolute gap: at ``lam`` 1 it brought the demographic
    parity ratio of the Adult MLP from 0.36 to 0.92 (benchmarks/fairness_mitigation.py),
    where the squared gap pushes less for the same ``lam``."""
    check_choice("method", method, TRAINED_MITIGATIONS, "mitigation_loss")
    if method == "reweighing":
        return reweighed_loss(reweighing_weights(y, groups))
    return FairnessRegularisedLoss(lam=lam, constraint=constraint, penalty="absolute",
                                   positive_class=positive_class).loss(groups)
