"""Check ``calibration``: is the model's confidence its accuracy?

Metrics on the evaluation split: ECE (15 equal-width bins, Guo et al. 2017; and the
equal-mass variant), classwise ECE, MCE, NLL and Brier score. Temperature scaling is then
fitted on a held-out part of the split and the same metrics are reported for the rest,
before (``ece``) and after (``ece_ts``), with the fitted ``temperature``. With
``attributes`` (sensitive attributes of the data, ``"a*b"`` for intersections), the ECE
is also reported per group (``ece@sex=Female``) with the gap between the groups of at
least 30 members (``ece_difference@sex``, through the fairness metrics' one
disaggregation primitive): a model can be calibrated on average and not for a group.
"""

from __future__ import annotations

from typing import Any

import torch

from ..defenses.calibration.temperature import fit_temperature
from ..metrics.calibration import (brier, classwise_ece, ece, mce, nll,
                                   reliability_diagram_data)
from ..metrics.fairness import DEFAULT_MIN_GROUP_SIZE, Groups, disaggregate, value_label
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
        Param("attributes", "list[str]", None,
              "sensitive attributes whose groups get their own ECE, 'a*b' for "
              "intersections (default none)"),
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
        "temperature": MetricInfo("neutral", "", (0.0, None)),
        "ece@*": MetricInfo("lower", "fraction", (0.0, 1.0)),
        "ece_difference@*": MetricInfo("lower", "fraction", (0.0, 1.0))}

    def metric_names(self, params: dict[str, Any]) -> list[str]:
        by_group = [name for spec in params["attributes"] or ()
                    for name in (f"ece_difference@{spec}", f"ece@{spec}=*")]
        return [*_METRICS, "temperature", *(f"{m}_ts" for m in _METRICS), *by_group]

    def validate_for(self, ctx: CheckContext, params: dict[str, Any]) -> list[str]:
        missing = sorted({a for spec in params["attributes"] or () for a in spec.split("*")
                          if a not in ctx.data.attributes})
        if missing:
            have = ", ".join(sorted(ctx.data.attributes)) or "none"
            return [f"the 'attributes' parameter names {missing[0]!r}, which "
                    f"{ctx.data.label} does not have (it has: {have})"]
        return []

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
        for spec in params["attributes"] or ():
            metrics.update(_ece_by_group(logits, y, Groups.from_dataset(rest, spec),
                                         params["n_bins"], metrics["ece"]))
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


def _ece_by_group(logits: torch.Tensor, y: torch.Tensor, groups: Groups, n_bins: int,
                  overall: float) -> dict[str, float]:
    """ECE per group (NaN for an empty one) and the gap between groups of at least
    :data:`DEFAULT_MIN_GROUP_SIZE` members."""
    codes = groups.codes.to(logits.device)
    sizes = torch.bincount(codes, minlength=groups.num_groups)
    values = torch.tensor([ece(logits[codes == g], y[codes == g], n_bins=n_bins,
                               inputs="logits") if int(sizes[g]) else float("nan")
                           for g in range(groups.num_groups)], dtype=torch.float64)
    gaps = disaggregate(values, sizes.cpu(), min_group_size=DEFAULT_MIN_GROUP_SIZE,
                        overall=overall)
    out = {f"ece@{groups.attribute}={value_label(name)}": float(v)
           for name, v in zip(groups.names, values.tolist(), strict=True)}
    out[f"ece_difference@{groups.attribute}"] = float(gaps.difference)
    return out


def _nan_for_none(values: tuple[float | None, ...]) -> list[float]:
    return [float("nan") if v is None else v for v in values]
