"""Energy OOD score.

Reference: Weitang Liu, Xiaoyun Wang, John D. Owens and Yixuan Li, "Energy-based
Out-of-distribution Detection", NeurIPS 2020.

The free energy of an input is ``E(x; T) = -T * logsumexp(f(x) / T)``; the score is the
negative energy ``T * logsumexp(f(x) / T)``, higher = more in-distribution.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..._params import check_float
from ...core.features import check_inputs
from ...core.inference import batched_logits
from ._base import OODDetector


class Energy(OODDetector):
    """Negative free energy ``T * logsumexp(logits / T)`` (Liu et al., NeurIPS 2020).

    Post-hoc: no fit (the paper's energy-bounded fine-tuning is not part of this score).

    Parameters:
        temperature: T, a number > 0 (default 1.0, as in the paper's post-hoc results).
        batch_size: samples per forward pass, an int >= 1 (default 256).

    ``score(model, x)``: x [N, ...] -> scores [N], higher = more in-distribution.

    Example::

        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> Energy(temperature=1.0).score(model, torch.rand(5, 4)).shape
        torch.Size([5])
    """

    name = "energy"

    def __init__(self, *, temperature: float = 1.0, batch_size: int = 256) -> None:
        super().__init__(batch_size=batch_size)
        self.temperature = check_float("temperature", temperature, "Energy", low=0.0,
                                       low_open=True)

    def score(self, model: nn.Module, x: Tensor) -> Tensor:
        check_inputs(x, "Energy.score")
        logits = batched_logits(model, x, batch_size=self.batch_size)
        t = self.temperature
        return t * torch.logsumexp(logits / t, dim=1)
