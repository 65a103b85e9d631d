"""Backdoor defenses. Data-side (they need the training set and the model trained on it):
:class:`SpectralSignatures` (Tran et al. 2018) and :class:`ActivationClustering` (Chen et
al. 2019), each a suspicion score per training sample (:class:`PoisonScan`), its TPR, FPR
and AUROC against known poison, and the training set without the flagged samples for
retraining. Model-side (the model and a few hundred clean images): :class:`NeuralCleanse`
(Wang et al. 2019), the smallest trigger of every class and their anomaly index, and
:class:`MaxMargin` (MM-BD, Wang et al. 2024), the largest logit margin of every class and
its p-value, needing no clean data; :func:`trojan_verdict` joins the two into one trojan
probability. Run-time: :class:`STRIP` (Gao et al. 2019), which flags inputs whose
predictions stay put under superimposed images. Removal (:mod:`.removal`): Neural Cleanse
unlearning and Fine-Pruning (Liu et al. 2018).
"""

from .activation_clustering import ActivationClustering
from .max_margin import MarginScan, MaxMargin, margin_p_value
from .neural_cleanse import NeuralCleanse, TriggerScan
from .scan import PoisonScan
from .spectral import SpectralSignatures
from .strip import STRIP, STRIPDetector
from .verdict import (POPULATION_DATA, POPULATION_LOGISTIC, TrojanLogistic, TrojanVerdict,
                      evidence, evidence_of, load_logistic, trojan_verdict)

__all__ = ["ActivationClustering", "MarginScan", "MaxMargin", "NeuralCleanse",
           "POPULATION_DATA", "POPULATION_LOGISTIC", "PoisonScan", "STRIP", "STRIPDetector",
           "SpectralSignatures", "TriggerScan", "TrojanLogistic", "TrojanVerdict", "evidence",
           "evidence_of", "load_logistic", "margin_p_value", "trojan_verdict"]
