"""Check ``accuracy``: clean accuracy with a 95% Wilson interval, per-class accuracy, and
how far the model is above chance.

Chance is the accuracy of always answering the most frequent label of the evaluated
samples (``chance_accuracy``, at least 1/K); no model that ignores its input does
better. ``gain_over_chance`` = (accuracy - chance) / (1 - chance) is the share of the
constant guess's errors the model avoids: 0 at chance, 1 when perfect, negative below
chance. The check warns (``near_chance``) unless the lower end of the 95% Wilson
interval exceeds chance by a tenth of the way to perfect, i.e. unless the gain is shown,
at 95%, to be above 0.1: an untrained digits CNN (accuracy 0.09 with chance 0.11)
warns, and so does a model whose accuracy a small sample cannot tell from chance.
"""

from __future__ import annotations

from typing import Any

import torch

from ..metrics.accuracy import accuracy, wilson_interval
from ..results import HIGHER_FRACTION, MetricInfo
from .base import Check, CheckContext, CheckOutput, Finding, Param, Plot, register

MIN_GAIN = 0.1  # the share of the way from chance to perfect the interval must clear


@register
class AccuracyCheck(Check):
    name = "accuracy"
    pillar = "performance"
    summary = "Clean accuracy on the evaluation split, against the chance level."
    params = (
        Param("n", "int", None, "evaluate the first n samples; default all", low=1),
        Param("batch_size", "int", 512, "inputs per forward pass", low=1),
    )

    # The interval's bounds keep the direction of the accuracy they bound; the chance
    # accuracy is a property of the data, not of the model.
    declared_metrics = {
        "accuracy": HIGHER_FRACTION, "accuracy_ci_low": HIGHER_FRACTION,
        "accuracy_ci_high": HIGHER_FRACTION,
        "gain_over_chance": MetricInfo("higher", "fraction", (None, 1.0)),
        "n": MetricInfo("neutral", "samples", (0.0, None)),
        "chance_accuracy": MetricInfo("neutral", "fraction", (0.0, 1.0))}

    def metric_names(self, params: dict[str, Any]) -> list[str]:
        return ["accuracy", "accuracy_ci_low", "accuracy_ci_high", "n", "chance_accuracy",
                "gain_over_chance"]

    def run(self, ctx: CheckContext, params: dict[str, Any]) -> CheckOutput:
        data = ctx.data.subset(params["n"])
        pred = ctx.model.predict(data.x, batch_size=params["batch_size"]).cpu()
        correct = pred == data.y
        acc = accuracy(pred, data.y)
        low, high = wilson_interval(int(correct.sum()), len(data))
        per_class = {
            name: accuracy(pred[data.y == k], data.y[data.y == k])
            for k, name in enumerate(data.classes) if bool((data.y == k).any())
        }
        findings = [Finding("warn", f"model_{f.code}", f.message) for f in ctx.model.findings
                    if f.code in ("probabilities", "stochastic")]
        counts = torch.bincount(data.y)
        majority = int(counts.argmax())
        chance = float(counts[majority]) / len(data)
        findings += _chance_findings(acc, low, high, chance, data.classes[majority])
        worst = min(per_class, key=lambda name: per_class[name]) if per_class else None
        if worst is not None:
            findings.append(Finding("info", "worst_class",
                                    f"Lowest per-class accuracy: class {worst!r} at "
                                    f"{per_class[worst]:.1%}."))
        gain = (acc - chance) / (1 - chance) if chance < 1 else None
        return CheckOutput(
            metrics={"accuracy": acc, "accuracy_ci_low": low, "accuracy_ci_high": high,
                     "n": float(len(data)), "chance_accuracy": chance, "gain_over_chance": gain},
            findings=findings,
            plots=[Plot("Accuracy per class", "class", "accuracy", list(per_class),
                        {"accuracy": list(per_class.values())}, kind="bar")],
            details={"per_class_accuracy": per_class, "majority_class": data.classes[majority]},
        )


def _chance_findings(acc: float, low: float, high: float, chance: float,
                     majority: Any) -> list[Finding]:
    if chance >= 1:
        return [Finding("warn", "single_class",
                        f"Every evaluated sample has label {majority!r}: accuracy cannot tell "
                        "the model from a constant guess. Evaluate on data with several classes.")]
    if low > chance + MIN_GAIN * (1 - chance):
        return []
    return [Finding("warn", "near_chance",
                    f"Accuracy {acc:.1%} (95% interval {low:.1%}-{high:.1%}) is not clearly "
                    f"above chance: always answering the most frequent class ({majority!r}) "
                    f"scores {chance:.1%}. The check warns unless the interval's lower end "
                    f"clears chance by {MIN_GAIN:.0%} of the way to 100%. Is the model trained, "
                    "and given the data in the range and normalisation it was trained with?")]
