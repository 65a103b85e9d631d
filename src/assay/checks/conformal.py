"""Check ``conformal``: split conformal prediction sets and their coverage.

The evaluation split is divided at random (seeded) into a calibration part and a test
part; for each score (LAC, APS, RAPS) the check calibrates on the first and reports on the
second: ``coverage@<score>`` (gate it at the requested level 1 - alpha),
``set_size@<score>`` and ``class_coverage_gap@<score>`` (max over classes of
|coverage_c - (1 - alpha)|). ``target_coverage`` is 1 - alpha.
"""

from __future__ import annotations

from typing import Any

from ..defenses.calibration.conformal import (SCORES, SplitConformal, average_set_size,
                                              class_coverage_gap, marginal_coverage,
                                              size_stratified_coverage)
from ..results import LOWER_FRACTION, MetricInfo
from .base import Check, CheckContext, CheckOutput, Finding, Param, Plot, register


@register
class ConformalCheck(Check):
    name = "conformal"
    pillar = "uncertainty"
    summary = "Split conformal prediction: coverage and set size per score (LAC, APS, RAPS)."
    params = (
        Param("alpha", "float", 0.1, "miscoverage; sets aim at 1 - alpha coverage", low=0.001,
              high=0.999),
        Param("scores", "list[str]", ["lac", "aps", "raps"], "conformal scores", allowed=SCORES),
        Param("calibration_fraction", "float", 0.5, "share of the split used to calibrate",
              low=0.01, high=0.99),
        Param("n", "int", None, "use the first n samples; default all", low=1),
        Param("batch_size", "int", 512, "inputs per forward pass", low=1),
    )

    # Coverage above its target is bought with larger sets: neither alone is better when
    # it grows. The gap between classes' coverage is what should shrink.
    declared_metrics = {
        "target_coverage": MetricInfo("neutral", "fraction", (0.0, 1.0)),
        "coverage@*": MetricInfo("neutral", "fraction", (0.0, 1.0)),
        "set_size@*": MetricInfo("neutral", "classes", (0.0, None)),
        "class_coverage_gap@*": LOWER_FRACTION}

    def metric_names(self, params: dict[str, Any]) -> list[str]:
        names = ["target_coverage"]
        for score in params["scores"]:
            names += [f"coverage@{score}", f"set_size@{score}", f"class_coverage_gap@{score}"]
        return names

    def run(self, ctx: CheckContext, params: dict[str, Any]) -> CheckOutput:
        data = ctx.data.subset(params["n"])
        calibration, test = data.split_off(params["calibration_fraction"], seed=ctx.seed)
        logits_cal = ctx.model.predict_logits(calibration.x, batch_size=params["batch_size"])
        logits = ctx.model.predict_logits(test.x, batch_size=params["batch_size"])
        y_cal, y = calibration.y.to(logits.device), test.y.to(logits.device)
        alpha = params["alpha"]
        metrics: dict[str, float] = {"target_coverage": 1 - alpha}
        sizes, coverage_by_size, findings = {}, {}, []
        # Coverage of one finite test set fluctuates; warn beyond ~3 binomial std.
        slack = 3 * (alpha * (1 - alpha) / len(test)) ** 0.5
        for score in params["scores"]:
            predictor = SplitConformal(score=score, alpha=alpha, inputs="logits", seed=ctx.seed)
            sets = predictor.calibrate(logits_cal, y_cal).predict_sets(logits)
            coverage = marginal_coverage(sets, y)
            metrics[f"coverage@{score}"] = coverage
            metrics[f"set_size@{score}"] = average_set_size(sets)
            metrics[f"class_coverage_gap@{score}"] = class_coverage_gap(sets, y, alpha=alpha)
            strata = size_stratified_coverage(sets, y)
            sizes[score] = {str(k): v["count"] for k, v in strata.items()}
            coverage_by_size[score] = {str(k): v["coverage"] for k, v in strata.items()}
            if coverage < 1 - alpha - slack:
                findings.append(Finding("warn", "undercoverage",
                                        f"{score}: coverage {coverage:.3f} is below the target "
                                        f"{1 - alpha:.3f} by more than sampling noise "
                                        f"({slack:.3f}); calibration and test data may not be "
                                        "exchangeable."))
        all_sizes = sorted({int(k) for counts in sizes.values() for k in counts})
        plot = Plot(f"Prediction-set sizes (alpha = {alpha:g})", "set size", "samples",
                    [str(k) for k in all_sizes],
                    {score: [float(sizes[score].get(str(k), 0)) for k in all_sizes]
                     for score in params["scores"]}, kind="bar")
        return CheckOutput(metrics, findings, [plot], details={
            "calibration_samples": len(calibration), "test_samples": len(test),
            "set_size_counts": sizes, "coverage_by_set_size": coverage_by_size})
