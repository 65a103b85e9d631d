"""Membership inference: does a model give away which samples it was trained on?

* :mod:`.scores`: the threshold attacks' scores (loss, confidence, entropy; Yeom et al.
  2018, Salem et al. 2019), the logit-scaled confidence and the augmented queries;
* :mod:`.reference`: the membership matrix and the training of reference models;
* :class:`LabelOnlyBoundaryDistance` (Choquette-Choo et al. 2021): the distance to the
  decision boundary that HopSkipJump finds from labels alone;
* :class:`LiRA` (Carlini et al. 2022, online and offline), :class:`RMIA` (Zarifzadeh
  et al. 2024) and :class:`ShadowModelAttack` (Shokri et al. 2017), which compare the
  target model with the reference models.

Their metrics (ROC exact on ties, TPR at low FPR with Clopper-Pearson intervals, AUC,
advantage) are in :mod:`assay.metrics.privacy`; the ``membership_inference`` check runs
the protocol.
"""

from .label_only import LabelOnlyBoundaryDistance
from .lira import LiRA
from .reference import membership_matrix, reference_scores, train_reference
from .rmia import RMIA
from .shadow import ShadowModelAttack
from .scores import (THRESHOLD_ATTACKS, image_queries, logit_confidence, query_scores,
                     threshold_scores)

__all__ = ["RMIA", "THRESHOLD_ATTACKS", "LabelOnlyBoundaryDistance", "LiRA", "ShadowModelAttack",
           "image_queries", "logit_confidence", "membership_matrix", "query_scores",
           "reference_scores", "threshold_scores", "train_reference"]
