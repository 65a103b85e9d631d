"""Blended: a full-image pattern mixed into a share of the training images.

Reference: X. Chen, C. Liu, B. Li, K. Lu, D. Song. "Targeted Backdoor Attacks on Deep
Learning Systems Using Data Poisoning". arXiv 1712.05526, 2017 (the blended injection
strategy: ``x' = alpha * pattern + (1 - alpha) * x``, with a random-noise pattern among
the keys). Defaults follow BackdoorBench's Blended configuration (alpha 0.2, target 0,
10% poisoned); the pattern here is seeded uniform noise of the image's shape, as the
paper's random-pattern key, rather than its Hello Kitty image.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..._params import Choice, Float, Int
from ...core.dataset import Dataset
from ...core.rng import seeded_generator
from .base import POISONING_ATTACKS, BackdoorAttack


@POISONING_ATTACKS.register("blended")
class Blended(BackdoorAttack):
    """``alpha * pattern + (1 - alpha) * x`` with a seeded uniform-noise ``pattern`` in
    [0, 1] of the image's shape (the same for every image).

    Parameters (keyword-only)
    -------------------------
    target : int >= 0, default 0
    rate : float in (0, 1), default 0.1
    alpha : float in (0, 1], default 0.2 - the pattern's weight
    pattern_seed : int >= 0, default 1 - draws the pattern (the key the attacker keeps)
    mode : {"all_to_one", "all_to_all"}, default "all_to_one"
    seed : int >= 0, default 0 - which samples are poisoned
    """

    name = "blended"
    constraints = {
        "target": Int(low=0), "rate": Float(low=0.0, high=1.0, low_open=True, high_open=True),
        "alpha": Float(low=0.0, high=1.0, low_open=True), "pattern_seed": Int(low=0),
        "mode": Choice(("all_to_one", "all_to_all")), "seed": Int(low=0),
    }

    def __init__(self, *, target: int = 0, rate: float = 0.1, alpha: float = 0.2,
                 pattern_seed: int = 1, mode: str = "all_to_one", seed: int = 0) -> None:
        self.target = self._validated("target", target)
        self.rate = self._validated("rate", rate)
        self.alpha = self._validated("alpha", alpha)
        self.pattern_seed = self._validated("pattern_seed", pattern_seed)
        self.mode = self._validated("mode", mode)
        self.seed = self._validated("seed", seed)

    def pattern(self, shape: tuple[int, ...]) -> Tensor:
        """The blended pattern for images of ``shape`` (C, H, W), on the CPU."""
        return torch.rand(shape, generator=seeded_generator(self.pattern_seed))

    def _stamp(self, x: Tensor, data: Dataset | None) -> Tensor:
        key = self.pattern(tuple(x.shape[1:])).to(device=x.device, dtype=x.dtype)
        return self.alpha * key + (1 - self.alpha) * x
