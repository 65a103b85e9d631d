"""BadNets: a small patch trigger in a corner, stamped on a share of the training images
whose labels become the target.

Reference: T. Gu, B. Dolan-Gavitt, S. Garg. "BadNets: Identifying Vulnerabilities in the
Machine Learning Model Supply Chain". arXiv 1708.06733, 2017 (MNIST: a pattern in the
bottom-right corner; all-to-one and all-to-all). Defaults follow BackdoorBench's BadNets
configuration (a 3x3 patch in the bottom-right corner, target 0, 10% poisoned), read for
understanding only.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..._params import Choice, Float, Int
from ...core.dataset import Dataset
from .base import POISONING_ATTACKS, BackdoorAttack, check_patch_fits

POSITIONS = ("bottom_right", "bottom_left", "top_right", "top_left")


@POISONING_ATTACKS.register("badnets")
class BadNets(BackdoorAttack):
    """A ``patch_size`` x ``patch_size`` patch at ``position``, with a ``margin`` of pixels
    from the edges, set to 1 (``pattern="white"``) or to a checkerboard of 1 and 0
    (``"checkerboard"``, the top-left pixel 1) in every channel.

    Parameters (keyword-only)
    -------------------------
    target : int >= 0, default 0 - the class triggered inputs go to (all-to-one)
    rate : float in (0, 1), default 0.1 - share of the training set poisoned
    patch_size : int >= 1, default 3
    position : {"bottom_right", "bottom_left", "top_right", "top_left"}, default
        "bottom_right"
    margin : int >= 0, default 0 - pixels between the patch and the image's edges
    pattern : {"white", "checkerboard"}, default "checkerboard"
    mode : {"all_to_one", "all_to_all"}, default "all_to_one"
    seed : int >= 0, default 0 - which samples are poisoned

    Example
    -------
    >>> from assay.core.loaders import load_digits
    >>> poisoned = BadNets(target=3, rate=0.1).poison(load_digits("train"))
    >>> poisoned.rate > 0.09, bool((poisoned.data.y[poisoned.poisoned] == 3).all())
    (True, True)
    """

    name = "badnets"
    constraints = {
        "target": Int(low=0), "rate": Float(low=0.0, high=1.0, low_open=True, high_open=True),
        "patch_size": Int(low=1), "position": Choice(POSITIONS), "margin": Int(low=0),
        "pattern": Choice(("white", "checkerboard")),
        "mode": Choice(("all_to_one", "all_to_all")), "seed": Int(low=0),
    }

    def __init__(self, *, target: int = 0, rate: float = 0.1, patch_size: int = 3,
                 position: str = "bottom_right", margin: int = 0,
                 pattern: str = "checkerboard", mode: str = "all_to_one",
                 seed: int = 0) -> None:
        self.target = self._validated("target", target)
        self.rate = self._validated("rate", rate)
        self.patch_size = self._validated("patch_size", patch_size)
        self.position = self._validated("position", position)
        self.margin = self._validated("margin", margin)
        self.pattern = self._validated("pattern", pattern)
        self.mode = self._validated("mode", mode)
        self.seed = self._validated("seed", seed)

    def _stamp(self, x: Tensor, data: Dataset | None) -> Tensor:
        height, width = x.shape[-2:]
        size, margin = self.patch_size, self.margin
        check_patch_fits(type(self).__name__, size + margin, height, width)
        top = margin if self.position.startswith("top") else height - margin - size
        left = margin if self.position.endswith("left") else width - margin - size
        patch = torch.ones(size, size, dtype=x.dtype, device=x.device)
        if self.pattern == "checkerboard":
            rows = torch.arange(size, device=x.device)
            patch = ((rows[:, None] + rows[None, :]) % 2 == 0).to(x.dtype)
        x[..., top:top + size, left:left + size] = patch
        return x
