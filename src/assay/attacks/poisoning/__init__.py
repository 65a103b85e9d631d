"""Poisoning attacks on a training pipeline: each returns a poisoned copy of a training
split (:class:`PoisonedData`: which samples changed, their old labels, the target), and a
backdoor also stamps its trigger on test inputs (``apply_trigger``). Train the backdoored
model with :func:`assay.core.training.fit` on ``poisoned.data``.

| name       | what                                                                     |
|------------|--------------------------------------------------------------------------|
| badnets    | a corner patch (Gu et al. 2017)                                          |
| blended    | a noise pattern blended at alpha (Chen et al. 2017)                      |
| wanet      | a smooth warp, with its noise mode (Nguyen & Tran 2021)                  |
| label_flip | labels changed at random or from one class to another                   |
| label_consistent | target-class images made hard by PGD, then stamped; labels kept (Turner |
|            | et al. 2019)                                                             |
| feature_collision | base-class images that collide with one target image in feature     |
|            | space, labels kept (Poison Frogs, Shafahi et al. 2018)                   |
"""

from .badnets import BadNets
from .base import (POISONING_ATTACKS, BackdoorAttack, PoisonedData, PoisoningAttack,
                   load_trigger)
from .blended import Blended
from .feature_collision import FeatureCollision
from .label_consistent import LabelConsistent
from .label_flip import LabelFlip
from .wanet import WaNet

__all__ = ["BackdoorAttack", "BadNets", "Blended", "FeatureCollision", "LabelConsistent",
           "LabelFlip", "POISONING_ATTACKS", "PoisonedData", "PoisoningAttack", "WaNet",
           "load_trigger"]
