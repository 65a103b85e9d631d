"""Evasion attacks: adversarial examples within a norm ball."""
from .base import AttackResult, EvasionAttack
from .pgd import PGD

__all__ = ["AttackResult", "EvasionAttack", "PGD"]
