"""Accuracy and its confidence interval."""

from __future__ import annotations

import math

from torch import Tensor


def accuracy(pred: Tensor, y: Tensor) -> float:
    """Fraction of ``pred == y``; NaN for empty input."""
    return float((pred == y).float().mean()) if len(y) else float("nan")


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval (95% by default) for a proportion; (nan, nan) when n == 0.

    E. B. Wilson. "Probable inference, the law of succession, and statistical inference".
    JASA 1927.
    """
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
