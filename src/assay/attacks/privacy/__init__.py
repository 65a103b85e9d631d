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

The other leakage attacks: :class:`KnockoffNets` (Orekondy et al. 2019; labels only:
Copycat CNN) copies a model from its answers to queries (``model_extraction``);
:class:`AttributeInference` (Fredrikson et al. 2014, Yeom et al. 2018) infers a sensitive
input attribute of tabular rows, against the data-only :class:`ImputationBaseline`
(``attribute_inference``).
"""

from .label_only import LabelOnlyBoundaryDistance
from .lira import LiRA
from .attribute_inference import (AttributeColumn, AttributeInference, ImputationBaseline,
                                  attribute_column, value_prior)
from .extraction import (NOISE_QUERIES, AdaptiveQueries, AdaptiveSampling, KnockoffNets,
                         agreement, noise_queries, query_order)
from .gradient_leakage import (DLG, IDLG, GradientLeakage, InvertingGradients,
                               labels_from_gradient, victim_gradient)
from .inversion import InversionResult, ModelInversion
from .one_run import (CanaryRun, OneRunBound, audit_p_value, canary_scores,
                      epsilon_lower_bound, insert_canaries, one_run_audit)
from .reference import membership_matrix, reference_scores, train_reference
from .rmia import RMIA
from .shadow import ShadowModelAttack
from .scores import (THRESHOLD_ATTACKS, image_queries, logit_confidence, query_scores,
                     threshold_scores)

__all__ = ["RMIA", "THRESHOLD_ATTACKS", "LabelOnlyBoundaryDistance", "LiRA", "ShadowModelAttack",
           "image_queries", "logit_confidence", "membership_matrix", "query_scores",
           "reference_scores", "threshold_scores", "train_reference"]
# model extraction and attribute inference (issue 14)
__all__ += ["NOISE_QUERIES", "AdaptiveQueries", "AdaptiveSampling", "AttributeColumn",
            "AttributeInference", "ImputationBaseline", "KnockoffNets", "agreement",
            "attribute_column", "noise_queries", "query_order", "value_prior"]
# gradient leakage and model inversion (issue 14)
__all__ += ["DLG", "IDLG", "GradientLeakage", "InversionResult", "InvertingGradients",
            "ModelInversion", "labels_from_gradient", "victim_gradient"]
# auditing a DP claim in one training run (issue 14)
__all__ += ["CanaryRun", "OneRunBound", "audit_p_value", "canary_scores", "epsilon_lower_bound",
            "insert_canaries", "one_run_audit"]
