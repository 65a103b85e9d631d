"""Label flipping: a share of the training labels changed, the inputs untouched.

Reference: B. Biggio, B. Nelson, P. Laskov. "Poisoning Attacks against Support Vector
Machines". ICML 2012 (label noise as the baseline poisoning); targeted flipping of one
class into another as in Xiao, Xiao & Eckert, "Adversarial Label Flips Attack on Support
Vector Machines", ECAI 2012. No trigger: it degrades the model (random) or one class's
recall (targeted) rather than planting a backdoor.
"""

from __future__ import annotations

import torch

from ..._params import Choice, Float, Int, Optional
from ...core.dataset import Dataset
from ...core.rng import seeded_generator
from ...errors import AssayValueError
from .base import (POISONING_ATTACKS, PoisonedData, PoisoningAttack, check_poisoning_data,
                   choose, copy_with_labels)


@POISONING_ATTACKS.register("label_flip")
class LabelFlip(PoisoningAttack):
    """``mode="random"``: ``round(rate * N)`` samples each get a label drawn uniformly from
    the other classes. ``mode="targeted"``: samples of class ``source`` get label
    ``target``; ``rate`` is then the share of the whole training set flipped, all from
    ``source``.

    Parameters (keyword-only)
    -------------------------
    rate : float in (0, 1), default 0.1
    mode : {"random", "targeted"}, default "random"
    source, target : int >= 0 or None - the classes of a targeted flip (required then)
    seed : int >= 0, default 0
    """

    name = "label_flip"
    constraints = {
        "rate": Float(low=0.0, high=1.0, low_open=True, high_open=True),
        "mode": Choice(("random", "targeted")), "source": Optional(Int(low=0)),
        "target": Optional(Int(low=0)), "seed": Int(low=0),
    }

    def __init__(self, *, rate: float = 0.1, mode: str = "random", source: int | None = None,
                 target: int | None = None, seed: int = 0) -> None:
        self.rate = self._validated("rate", rate)
        self.mode = self._validated("mode", mode)
        self.source = self._validated("source", source)
        self.target = self._validated("target", target)
        self.seed = self._validated("seed", seed)
        if self.mode == "targeted" and (self.source is None or self.target is None
                                        or self.source == self.target):
            raise AssayValueError("LabelFlip(mode='targeted') needs two different classes "
                                  "'source' and 'target'.")

    def poison(self, data: Dataset) -> PoisonedData:
        check_poisoning_data(self, data, needs_images=False)
        y = data.y.clone()
        owner = type(self).__name__
        if self.mode == "targeted" and self.source is not None and self.target is not None:
            if self.source >= data.num_classes:
                raise AssayValueError(f"The 'source' parameter of {owner} is {self.source}, "
                                      f"but {data.label} has {data.num_classes} classes.")
            chosen = choose(torch.arange(len(data))[data.y.cpu() == self.source], self.rate,
                            len(data), self.seed, owner)
            originals = y[chosen.to(y.device)].clone()
            y[chosen.to(y.device)] = self.target
        else:
            chosen = choose(torch.arange(len(data)), self.rate, len(data), self.seed, owner)
            originals = y[chosen.to(y.device)].clone()
            shift = torch.randint(1, data.num_classes, (len(chosen),),
                                  generator=seeded_generator(self.seed + 1))
            y[chosen.to(y.device)] = (originals + shift.to(y.device)) % data.num_classes
        return copy_with_labels(data, y, chosen, originals, self, self.target)
