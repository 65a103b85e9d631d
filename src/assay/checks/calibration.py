"""Check ``calibration``: is the model's confidence its accuracy?

Metrics on the evaluation split: ECE (15 equal-width bins, Guo et al. 2017; and the
equal-mass variant), classwise ECE, MCE, NLL and Brier score. Temperature scaling is then
fitted on a held-out part of the split and the same metrics are reported for the rest,
before (``ece``) and after (``ece_ts``), with the fitted ``temperature``.
"""

from __future__ import annotations

from typing import Any

import torch

from ..defenses.calibration.temperature import fit_temperature
from ..metrics.calibration import (brier, classwise_ece, ece, mce, nll,
                                   reliability_diagram_data)
from ..results import MetricInfo
from .base import Check, CheckContext, CheckOutput, Finding, Param, Plot, register

_METRICS = ("ece", "ece_equal_mass", "classwise_ece", "mce", "nll", "brier")


def _calibration_metrics(logits: torch.Tensor, y: torch.Tensor, n_bins: int,
                         suffix: str = "") -> dict[str, float]:
    return {
        f"ece{suffix}": ece(logits, y, n_bins=n_bins, inputs="logits"),
        f"ece_equal_mass{suffix}": ece(logits, y, n_bins=n_bins, binning="equal_mass",
                                       inputs="logits"),
        f"classwise_ece{suffix}": classwise_ece(logits, y, n_bins=n_bins, inputs="logits"),
        f"mce{suffix}": mce(logits, y, n_bins=n_bins, inputs="logits"),
        f"nll{suffix}": nll(logits, y, inputs="logits"),
        f"brier{suffix}": brier(logits, y, inputs="logits"),
    }


@register
class CalibrationCheck(Check):
    name = "calibration"
    pillar = "uncertainty"
    summary = "Calibration error (ECE, MCE, NLL, Brier) before and after temperature scaling."
    params = (
        Param("n_bins", "int", 15, "confidence bins", low=2),
        Param("holdout_fraction", "float", 0.5,
              "share of the evaluation split used to fit the temperature", low=0.01, high=0.99),
        Param("n", "int", None, "use the first n samples; default all", low=1),
        Param("batch_size", "int", 512, "inputs per forward pass", low=1),
    )

    # Every error before and after temperature scaling ("_ts") is lower-is-better; the
    # temperature is a fitted setting.
    declared_metrics = {
        **{f"{metric}{suffix}": MetricInfo("lower", unit, bounds)
           for metric, unit, bounds in (("ece", "fraction", (0.0, 1.0)),
                                      ("ece_equal_mass", "fraction", (0.0, 1.0)),
                                      ("classwise_ece", "fraction", (0.0, 1.0)),
                                      ("mce", "fraction", (0.0, 1.0)),
                                      ("nll", "nats", (0.0, None)),
                                      ("brier", "", (0.0, 2.0)))
           for suffix in ("", "_ts")},
        "temperature": MetricInfo("neutral", "", (0.0, None))}

    def metric_names(self, params: dict[str, Any]) -> list[str]:
        return [*_METRICS, "temperature", *(f"{m}_ts" for m in _METRICS)]

    def run(self, ctx: CheckContext, params: dict[str, Any]) -> CheckOutput:
        data = ctx.data.subset(params["n"])
        held_out, rest = data.split_off(params["holdout_fraction"], seed=ctx.seed)
        logits_fit = ctx.model.predict_logits(held_out.x, batch_size=params["batch_size"])
        logits = ctx.model.predict_logits(rest.x, batch_size=params["batch_size"])
        y_fit, y = held_out.y.to(logits.device), rest.y.to(logits.device)
        temperature = fit_temperature(logits_fit, y_fit)
        metrics = _calibration_metrics(logits, y, params["n_bins"])
        metrics["temperature"] = temperature
        metrics.update(_calibration_metrics(logits / temperature, y, params["n_bins"], "_ts"))
        before = reliability_diagram_data(logits, y, n_bins=params["n_bins"], inputs="logits")
        after = reliability_diagram_data(logits / temperature, y, n_bins=params["n_bins"],
                                         inputs="logits")
        centres = [round((lo + hi) / 2, 4) for lo, hi in zip(before.bin_lower, before.bin_upper)
                   if lo is not None and hi is not None]  # equal-width edges: never None
        findings = []
        if metrics["ece"] > 0.05:
            direction = "overconfident" if temperature > 1 else "underconfident"
            findings.append(Finding("warn", "miscalibrated",
                                    f"ECE is {metrics['ece']:.3f} (> 0.05): the model is "
                                    f"{direction}. Temperature scaling with T = {temperature:.3g} "
                                    f"brings ECE to {metrics['ece_ts']:.3f}."))
        return CheckOutput(metrics, findings, [Plot(
            "Reliability diagram (accuracy per confidence bin)", "confidence", "accuracy",
            centres, {"before": _nan_for_none(before.accuracy),
                      "after temperature scaling": _nan_for_none(after.accuracy)},
            reference={"perfect calibration": centres},
            counts={"before": list(before.count),
                    "after temperature scaling": list(after.count)})],
            details={"bins": {"count_before": list(before.count), "count_after": list(after.count)},
                     "fit_samples": len(held_out), "eval_samples": len(rest)})


def _nan_for_none(values: tuple[float | None, ...]) -> list[float]:
    return [float("nan") if v is None else v for v in values]
