"""Post-hoc calibration and uncertainty sets: temperature scaling and split conformal prediction.

* :mod:`.temperature`: :func:`fit_temperature` and the :class:`TemperatureScaled` wrapper
  (Guo et al., ICML 2017).
* :mod:`.conformal`: :class:`SplitConformal` with the LAC, APS and RAPS scores, and the
  coverage metrics of prediction sets.
"""

from __future__ import annotations

from .conformal import (SCORES, SplitConformal, average_set_size, class_coverage,
                        class_coverage_gap, conformal_quantile, marginal_coverage,
                        size_stratified_coverage)
from .temperature import TemperatureScaled, fit_temperature

__all__ = ["SCORES", "SplitConformal", "TemperatureScaled", "average_set_size",
           "class_coverage", "class_coverage_gap", "conformal_quantile", "fit_temperature",
           "marginal_coverage", "size_stratified_coverage"]
