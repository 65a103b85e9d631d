"""MM-BD: the largest logit margin each class can reach; a trojan's target reaches one far
beyond the others, whatever the trigger's form (patch, blend, warp).

Reference: H. Wang, Z. Xiang, D. J. Miller, G. Kesidis. "MM-BD: Post-Training Detection
of Backdoor Attacks with Arbitrary Backdoor Pattern Types Using a Maximum Margin
Statistic". IEEE S&P 2024. For every class k, ``starts`` (30) random inputs, uniform in
the model's input bounds, climb the margin ``f_k(x) - max_{j != k} f_j(x)`` (logits) by
gradient ascent (SGD, lr 1e-2, 300 steps, the input clamped to the bounds in the
forward pass); the class's statistic is the largest margin its starts reach. No clean
data is needed. A gamma distribution (shape, location and scale by maximum likelihood) is
fitted to the statistics of all classes but the largest; the p-value of the largest is
``1 - F(r_max) ** K``, the chance that the largest of K null statistics reaches it. A
p-value under ``alpha`` (0.05) flags that class.

Defaults are the reference implementation's (``univ_bd.py``). It stops a class when its
loss changes by under 1e-5 relative; here every class runs all its steps, in one batched
search of ``K x starts`` inputs, so the margins found can only be as large or larger.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats
from torch import Tensor, nn

from ..._params import Configured, Float, Int
from ...core.inference import eval_mode, model_device
from ...core.rng import seeded_generator
from ...errors import AssayValueError


@dataclass(frozen=True)
class MarginScan:
    """MM-BD's result.

    margins [K]: each class's largest margin; p_value: of the largest margin under the
    gamma fitted to the others; suspected_target: the class of the largest margin when
    ``p_value < alpha``, else -1; seconds_per_class; alpha: the level it was flagged at.
    """

    margins: Tensor
    p_value: float
    suspected_target: int
    seconds_per_class: float
    alpha: float

    @classmethod
    def of(cls, margins: Tensor, alpha: float, seconds_per_class: float) -> MarginScan:
        """The scan of these ``margins`` [K], flagged at ``alpha``."""
        margins = margins.double().cpu()
        p_value = margin_p_value(margins)
        top = int(margins.argmax())
        return cls(margins, p_value, top if p_value < alpha else -1, seconds_per_class, alpha)

    @property
    def top_class(self) -> int:
        """The class of the largest margin, flagged or not."""
        return int(self.margins.argmax())


class MaxMargin(Configured):
    """Parameters (keyword-only)
    -------------------------
    starts : int >= 1, default 30 - random inputs per class
    steps : int >= 1, default 300 - gradient-ascent steps
    lr : float > 0, default 0.01
    alpha : float in (0, 1), default 0.05 - the p-value under which a class is flagged
    seed : int >= 0, default 0 - the random starts
    """

    constraints = {"starts": Int(low=1), "steps": Int(low=1),
                   "lr": Float(low=0.0, low_open=True),
                   "alpha": Float(low=0.0, high=1.0, low_open=True, high_open=True),
                   "seed": Int(low=0)}

    def __init__(self, *, starts: int = 30, steps: int = 300, lr: float = 1e-2,
                 alpha: float = 0.05, seed: int = 0) -> None:
        self.starts: int = self._validated("starts", starts)
        self.steps: int = self._validated("steps", steps)
        self.lr: float = self._validated("lr", lr)
        self.alpha: float = self._validated("alpha", alpha)
        self.seed: int = self._validated("seed", seed)

    def scan(self, model: nn.Module, input_shape: tuple[int, ...],
             bounds: tuple[float, float] = (0.0, 1.0)) -> MarginScan:
        """The largest margin of every class of ``model`` on inputs of ``input_shape`` (no
        batch dimension) within ``bounds``, and the p-value of the largest."""
        low, high = bounds
        if not high > low:
            raise AssayValueError(f"MaxMargin needs bounds with high > low; got {bounds}.")
        device = model_device(model)
        started = time.perf_counter()
        with eval_mode(model):
            margins = self._margins(model, tuple(input_shape), low, high, device)
        seconds = time.perf_counter() - started
        if not bool(torch.isfinite(margins).all()):
            raise AssayValueError("MaxMargin: the model's logits became NaN or infinite on "
                                  "inputs within its bounds; no margin can be compared.")
        return MarginScan.of(margins, self.alpha, seconds / len(margins))

    def _margins(self, model: nn.Module, shape: tuple[int, ...], low: float, high: float,
                 device: torch.device) -> Tensor:
        with torch.no_grad():
            classes = int(model(torch.full((1, *shape), (low + high) / 2, device=device)
                                ).shape[1])
        if classes < 3:
            raise AssayValueError(f"MaxMargin compares the margins of the classes; a model of "
                                  f"{classes} classes leaves too few to fit the null "
                                  "distribution.")
        gen = seeded_generator(self.seed)
        x = (low + (high - low) * torch.rand(classes * self.starts, *shape, generator=gen)
             ).to(device).requires_grad_(True)
        own = torch.eye(classes, dtype=torch.bool, device=device).repeat_interleave(
            self.starts, dim=0)  # [K * starts, K]: each row's own class
        optimizer = torch.optim.SGD([x], lr=self.lr)
        for _ in range(self.steps):
            margin = _margin(model(x.clamp(low, high)), own)
            optimizer.zero_grad(set_to_none=True)
            (-margin.sum()).backward()
            optimizer.step()
        with torch.no_grad():
            margin = _margin(model(x.clamp(low, high)), own)
        return margin.view(classes, self.starts).amax(1).double().cpu()


def _margin(logits: Tensor, own: Tensor) -> Tensor:
    return logits[own] - logits.masked_fill(own, float("-inf")).amax(1)


def margin_p_value(margins: Tensor) -> float:
    """The p-value of the largest of ``margins`` [K] under a gamma distribution fitted (by
    maximum likelihood, shape, location and scale) to the other K - 1: ``1 - F(max) ** K``.
    When the others do not vary, 0 if the largest exceeds them, else 1; when the fit is
    degenerate, a normal distribution fitted to the others stands in for the gamma."""
    values = margins.double().cpu().numpy()
    top = int(values.argmax())
    largest, null = float(values[top]), np.delete(values, top)
    if float(np.ptp(null)) <= 1e-12 * max(1.0, float(np.abs(null).max())):
        return 0.0 if largest > float(null.max()) else 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the optimiser's overflow probes
        shape, loc, scale = stats.gamma.fit(null)
    below = float(stats.gamma.cdf(largest, shape, loc=loc, scale=scale))
    if math.isnan(below):  # a degenerate fit: a normal one instead, never no answer
        below = float(stats.norm.cdf(largest, loc=null.mean(), scale=null.std(ddof=1)))
    return min(1.0, max(0.0, 1.0 - below ** len(values)))
