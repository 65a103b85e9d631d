"""Which way is better for each metric the checks produce: the comparison pages mark a
change better or worse by it, and the summary picks a check's worst values by it.

Every metric name a built-in check can produce is listed here (a test walks the
registry), so a new metric cannot silently count as "higher is better".
"""

from __future__ import annotations

HIGHER_IS_BETTER = frozenset({
    "accuracy", "clean_accuracy", "robust_accuracy", "mean_corruption_accuracy",
    "certified_accuracy", "clean_accuracy_smoothed", "noise_accuracy",
    "auroc", "aupr_in", "aupr_out", "gain_over_chance"})
LOWER_IS_BETTER = frozenset({
    "ece", "ece_equal_mass", "classwise_ece", "mce", "relative_mce", "nll", "brier",
    "fpr95", "accuracy_drop", "robust_accuracy_drop", "size_bytes", "latency_ms",
    "abstain_rate", "class_coverage_gap"})
# Settings, counts, properties of the data (chance accuracy) and trade-offs: conformal
# coverage above its target is bought with larger sets, so neither coverage nor set size
# alone is better when it grows.
NEUTRAL = frozenset({"n", "chance_accuracy", "temperature", "target_coverage", "coverage",
                     "set_size"})
# Variants of a metric that keep its direction: after temperature scaling, interval bounds.
_SUFFIXES = ("_ts", "_ci_low", "_ci_high")


def base_name(name: str) -> str:
    """``"ece_ts"`` -> ``"ece"``, ``"robust_accuracy@linf=0.3"`` -> ``"robust_accuracy"``."""
    base = name.split("@", 1)[0]
    for suffix in _SUFFIXES:
        if base.endswith(suffix) and base.removesuffix(suffix) in (
                HIGHER_IS_BETTER | LOWER_IS_BETTER | NEUTRAL):
            return base.removesuffix(suffix)
    return base


def metric_direction(name: str, default: int | None = 0) -> int | None:
    """+1 when a larger value of metric ``name`` is better, -1 when a smaller one is, 0 when
    neither (a setting, a count, a trade-off); ``default`` for a metric not listed here
    (0: an unknown metric is never marked better or worse)."""
    base = base_name(name)
    if base in HIGHER_IS_BETTER:
        return 1
    if base in LOWER_IS_BETTER:
        return -1
    if base in NEUTRAL:
        return 0
    return default
