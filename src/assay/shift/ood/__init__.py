"""Out-of-distribution detectors: one score per input, higher = more in-distribution.

Every detector has keyword-only settings in ``__init__``, ``fit(model, x_in_train,
y_in_train=None) -> self`` (a no-op for the post-hoc ones) and ``score(model, x) ->
Tensor[N]``. ``DETECTORS`` is their registry (each name -> its class; other packages add
detectors through the ``assay.ood_detectors`` entry-point group).

=============  ===============================================================  =======
name           method                                                           fit
=============  ===============================================================  =======
msp            max softmax probability (Hendrycks & Gimpel, ICLR 2017)          no
maxlogit       max logit (Hendrycks et al., ICML 2022)                          no
energy         negative free energy (Liu et al., NeurIPS 2020)                  no
odin           temperature + input preprocessing (Liang et al., ICLR 2018)      no
mahalanobis    min class Mahalanobis distance (Lee et al., NeurIPS 2018)        yes
knn            k-th nearest neighbour distance (Sun et al., ICML 2022)          yes
vim            virtual-logit matching (Wang et al., CVPR 2022)                  yes
=============  ===============================================================  =======

Evaluate with :func:`assay.metrics.ood.ood_metrics`.
"""

from __future__ import annotations

from ...registry import Registry
from ._base import OODDetector
from .energy import Energy
from .knn import KNN
from .mahalanobis import Mahalanobis
from .maxlogit import MaxLogit
from .msp import MSP
from .odin import ODIN
from .vim import ViM

DETECTORS: Registry[type[OODDetector]] = Registry("OOD detector", group="assay.ood_detectors")
for _detector in (MSP, MaxLogit, Energy, ODIN, Mahalanobis, KNN, ViM):
    DETECTORS.add(_detector.name, _detector)

__all__ = ["DETECTORS", "KNN", "MSP", "ODIN", "Energy", "Mahalanobis", "MaxLogit",
           "OODDetector", "ViM"]
