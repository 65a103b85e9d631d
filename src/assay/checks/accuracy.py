"""Check ``accuracy``: clean accuracy with a 95% Wilson interval and per-class accuracy."""

from __future__ import annotations

from typing import Any

from ..metrics.accuracy import accuracy, wilson_interval
from .base import Check, CheckContext, CheckOutput, Finding, Param, Plot, register


@register
class AccuracyCheck(Check):
    name = "accuracy"
    pillar = "performance"
    summary = "Clean accuracy on the evaluation split."
    params = (
        Param("n", "int", None, "evaluate the first n samples; default all", low=1),
        Param("batch_size", "int", 512, "inputs per forward pass", low=1),
    )

    def metric_names(self, params: dict[str, Any]) -> list[str]:
        return ["accuracy", "accuracy_ci_low", "accuracy_ci_high", "n"]

    def run(self, ctx: CheckContext, params: dict[str, Any]) -> CheckOutput:
        data = ctx.data.subset(params["n"])
        pred = ctx.model.predict(data.x, batch_size=params["batch_size"]).cpu()
        correct = pred == data.y
        low, high = wilson_interval(int(correct.sum()), len(data))
        per_class = {
            name: accuracy(pred[data.y == k], data.y[data.y == k])
            for k, name in enumerate(data.classes) if bool((data.y == k).any())
        }
        findings = [Finding("warn", f"model_{f.code}", f.message) for f in ctx.model.findings
                    if f.code in ("probabilities", "stochastic")]
        worst = min(per_class, key=per_class.get) if per_class else None
        if worst is not None:
            findings.append(Finding("info", "worst_class",
                                    f"Lowest per-class accuracy: class {worst!r} at "
                                    f"{per_class[worst]:.1%}."))
        return CheckOutput(
            metrics={"accuracy": accuracy(pred, data.y), "accuracy_ci_low": low,
                     "accuracy_ci_high": high, "n": float(len(data))},
            findings=findings,
            plots=[Plot("Accuracy per class", "class", "accuracy", list(per_class),
                        {"accuracy": list(per_class.values())}, kind="bar")],
            details={"per_class_accuracy": per_class},
        )
