"""Fairness mitigation: before, during and after training.

* :mod:`.reweighing`: :func:`reweighing_weights`, :func:`reweighed_loss` and
  :func:`fit_reweighed` (Kamiran & Calders, KAIS 2012): per-sample weights that make the
  label independent of the group, as a weighted cross-entropy for ``fit``.
* :mod:`.regularised`: :class:`FairnessRegularisedLoss` and :func:`fit_regularised`
  (gap regularisation, Chuang & Mroueh, ICLR 2021): cross-entropy plus a demographic
  parity or equalized odds gap of the batch's soft predictions.
* :mod:`.thresholds`: :func:`fit_thresholds` and :class:`GroupThresholds` (Hardt, Price &
  Srebro, NeurIPS 2016): randomised per-group thresholds on held-out scores for
  demographic parity or equalized odds, as fairlearn's ``ThresholdOptimizer``.

:mod:`.losses`' :func:`mitigation_loss` is either of the first two by name. The first two
train through :func:`assay.core.training.fit` with an
:class:`~assay.core.training.IndexedLoss`; the third leaves the model alone and changes
its decisions.
"""

from __future__ import annotations

from .losses import TRAINED_MITIGATIONS, mitigation_loss
from .regularised import CONSTRAINTS, FairnessRegularisedLoss, fit_regularised
from .reweighing import fit_reweighed, reweighed_loss, reweighing_weights
from .thresholds import GroupThresholds, fit_thresholds, positive_class_scores

__all__ = ["CONSTRAINTS", "FairnessRegularisedLoss", "GroupThresholds", "TRAINED_MITIGATIONS",
           "fit_regularised", "fit_reweighed", "fit_thresholds", "mitigation_loss",
           "positive_class_scores", "reweighed_loss", "reweighing_weights"]
