"""Evasion attacks: adversarial examples within a norm ball. ``ATTACKS`` is their registry
(entry-point group ``assay.attacks``)."""
from .base import ATTACKS, AttackResult, EvasionAttack
from .pgd import PGD
from .fgsm import FGSM
from .apgd import APGD, APGDT
from .mifgsm import MIFGSM
from .transfer import transfer_attack
from .deepfool import DeepFool
from .cw import CarliniWagnerL2
from .fab import FABT
from .square import Square
from .hopskipjump import HopSkipJump
from .eot import ExpectationOverTransformation
from .evaluation import (APGDCrossEntropy, Ensemble, EvaluationResult, PGDRestarts, Protocol,
                         SingleStep, SquareOnly, Stage, StageReport, evaluate_robustness)

__all__ = ["ATTACKS", "AttackResult", "EvasionAttack", "PGD", "FGSM", "APGD", "APGDT", "MIFGSM",
           "transfer_attack", "DeepFool", "CarliniWagnerL2", "FABT", "Square", "HopSkipJump",
           "ExpectationOverTransformation",
           "EvaluationResult",
           "Stage", "StageReport", "evaluate_robustness",
           "Protocol", "Ensemble", "PGDRestarts", "APGDCrossEntropy", "SquareOnly", "SingleStep"]
