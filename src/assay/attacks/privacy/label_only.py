"""The label-only boundary-distance attack (Choquette-Choo, Tramer, Carlini & Papernot,
"Label-Only Membership Inference Attacks", ICML 2021).

A model that memorised a sample tends to classify it correctly and far from the decision
boundary. With the predicted labels alone, the attack measures each sample's L2 distance
to the boundary with HopSkipJump (Chen, Jordan & Wainwright, S&P 2020; assay's
:class:`~assay.attacks.evasion.HopSkipJump`, untargeted): the score is 0 for a
misclassified sample, the distance to the closest adversarial point found otherwise, and
the diameter of the input box (as far as any point can be) where none was found.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..._params import check_int
from ..evasion.base import model_bounds
from ..evasion.hopskipjump import HopSkipJump

__all__ = ["LabelOnlyBoundaryDistance"]


@dataclass(frozen=True)
class LabelOnlyBoundaryDistance:
    """Boundary distance from labels alone.

    num_iterations : int >= 0, default 20 - HopSkipJump iterations (its own default: 40)
    max_num_evals : int >= 1, default 1000 - directions per gradient estimate, at most
    seed : int, default 0 - HopSkipJump's noise and directions

    Call with ``model``, ``x`` [N, ...] in the model's bounds and labels ``y`` [N];
    returns scores [N] (float32, on ``x``'s device), higher for members.
    """

    num_iterations: int = 20
    max_num_evals: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        owner = "LabelOnlyBoundaryDistance"
        check_int("num_iterations", self.num_iterations, owner, low=0)
        check_int("max_num_evals", self.max_num_evals, owner, low=1)
        check_int("seed", self.seed, owner, low=0)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        attack = HopSkipJump(norm="l2", num_iterations=self.num_iterations,
                             max_num_evals=self.max_num_evals,
                             init_num_evals=min(100, self.max_num_evals), seed=self.seed)
        result = attack.run(model, x, y)
        distance = (result.x_adv - x).flatten(1).norm(dim=1).float()
        low, high = model_bounds(model)
        diameter = (high - low) * math.sqrt(x[0].numel())
        return torch.where(result.success, distance, torch.full_like(distance, diameter))
