"""Check ``fairness``: does the model treat the groups of a sensitive attribute alike?

For each audited attribute (``attributes``: names of the data's sensitive attributes;
``"sex*race"`` for intersectional groups) the model's decisions on the evaluation split
are compared across groups with :func:`assay.metrics.fairness.fairness_report`: per
group the selection rate (the share given the favourable class, ``positive_class``),
accuracy, TPR, FPR, FNR, TNR, precision and ECE of the favourable class's probability;
their gaps with fairlearn's definitions (``demographic_parity_difference@ATTR`` = largest
minus smallest selection rate, ``..._ratio@ATTR`` = smallest over largest,
``equalized_odds_difference@ATTR`` = the worse of the TPR and FPR gaps, ...), with
seeded bootstrap intervals; and the four-fifths rule (``demographic_parity_ratio >=
0.8``) as a finding. Per-group values are metrics too (``selection_rate@sex=Female``;
spaces and ``<``/``>`` in a value's name become ``_``), so a gate can name one group.

Groups with fewer than ``min_group_size`` members are reported but left out of every
gap (their rates are noise at that size), and a gap with fewer than two groups left is
NaN, which fails a gate: what cannot be measured does not pass.

A model with more than two classes has no favourable class unless ``positive_class``
names one; without it only the accuracy metrics are produced (``accuracy@ATTR=VALUE``,
``accuracy_difference@ATTR``: multi-class accuracy per group).

With ``mitigations``, each mitigation is scored on a seeded half of the split beside the
model's own decisions there, and the accuracy against disparity of each is plotted:
group-specific thresholds (Hardt et al. 2016) are fitted on the other half; reweighing
and the gap regulariser (:func:`assay.defenses.fairness.mitigation_loss`) train a model of
the plan's ``[training]`` recipe on the training data (``--train-data``), one per
attribute, cached as a piece of the check.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch

from ..core import zoo
from ..core.inference import batched_predict
from ..core.training import fit
from ..defenses.fairness import TRAINED_MITIGATIONS, mitigation_loss
from ..defenses.fairness.thresholds import fit_thresholds
from ..errors import AssayValueError
from ..metrics.fairness import (DEFAULT_MIN_GROUP_SIZE, FOUR_FIFTHS, RATES, SUMMARY_METRICS,
                                FairnessReport, Groups, fairness_report, one_vs_rest,
                                value_label)
from ..results import HIGHER_FRACTION, LOWER_FRACTION, MetricInfo
from .base import Check, CheckContext, CheckOutput, Finding, Param, Plot, register

_NEUTRAL_FRACTION = MetricInfo("neutral", "fraction", (0.0, 1.0))
# the per-group rates a plot shows, with the label of their series
_PLOTTED = {"selection_rate": "selection rate", "tpr": "TPR", "fpr": "FPR"}
_RATIO_PLOT = ("demographic_parity_ratio", "equalized_odds_ratio")
_THRESHOLDS = ("thresholds_demographic_parity", "thresholds_equalized_odds")
_TRADEOFF = ("demographic_parity_difference", "demographic_parity_ratio",
             "equalized_odds_difference")
_DIFFERENCE_PLOT = ("demographic_parity_difference", "equalized_odds_difference",
                    "equal_opportunity_difference", "accuracy_difference")


@register
class FairnessCheck(Check):
    name = "fairness"
    pillar = "fairness"
    summary = ("Group fairness: selection and error rates per group of each sensitive "
               "attribute, their gaps (demographic parity, equalized odds, ...) with "
               "bootstrap intervals.")
    params = (
        Param("attributes", "list[str]", None,
              "sensitive attributes to audit, 'a*b' for intersectional groups; default "
              "every attribute of the data"),
        Param("positive_class", "int", None,
              "the favourable class (a selection is predicting it); default 1 for a "
              "two-class model, none for more (accuracy metrics only)", low=0),
        Param("min_group_size", "int", DEFAULT_MIN_GROUP_SIZE,
              "smaller groups are reported but left out of the gaps", low=1),
        Param("n_bootstrap", "int", 1000, "bootstrap resamples for the intervals (0: none)",
              low=0),
        Param("confidence", "float", 0.95, "level of the intervals", low=0.5, high=0.999),
        Param("mitigations", "list[str]", None,
              "mitigations to compare: 'thresholds_demographic_parity', "
              "'thresholds_equalized_odds' (post-processing), 'reweighing', 'regularised' "
              "(trained by the plan's [training] recipe on --train-data) (default none)",
              allowed=(*_THRESHOLDS, *TRAINED_MITIGATIONS)),
        Param("n", "int", None, "use the first n samples; default all", low=1),
        Param("batch_size", "int", 512, "inputs per forward pass", low=1),
    )

    declared_metrics = {
        "selection_rate": _NEUTRAL_FRACTION, "accuracy": HIGHER_FRACTION,
        "ece_difference@*": LOWER_FRACTION,
        "*_difference@*": LOWER_FRACTION, "*_ratio@*": HIGHER_FRACTION,
        "selection_rate@*": _NEUTRAL_FRACTION, "size@*": MetricInfo("neutral", "samples",
                                                                    (0.0, None)),
        **{f"{rate}@*": HIGHER_FRACTION for rate in ("accuracy", "tpr", "tnr", "precision")},
        **{f"{rate}@*": LOWER_FRACTION for rate in ("fpr", "fnr", "ece")},
    }

    def metric_names(self, params: dict[str, Any]) -> list[str]:
        attributes = params["attributes"] or ["*"]
        names = ["selection_rate", "accuracy"]
        for attribute in attributes:
            names += [f"{m}@{attribute}" for m in (*SUMMARY_METRICS, "ece_difference")]
            names += [f"{rate}@{attribute}=*" for rate in (*RATES, "ece", "size")]
        return names

    def validate_params(self, params: dict[str, Any]) -> list[str]:
        problems = []
        for spec in params["attributes"] or []:
            if any(not part for part in spec.split("*")) or len(set(spec.split("*"))) < len(
                    spec.split("*")):
                problems.append(f"the 'attributes' parameter has {spec!r}: name attributes, "
                                "joined by '*' for an intersection of different ones "
                                "(e.g. 'sex*race')")
        return problems

    def validate_for(self, ctx: CheckContext, params: dict[str, Any]) -> list[str]:
        if not ctx.data.attributes:
            return [f"the data {ctx.data.label} has no sensitive attributes. Fix: load data "
                    "that carries them (--sensitive COLUMNS for a CSV or a tabular data set, "
                    "group_<name> arrays in an .npz file)"]
        problems = []
        for spec in params["attributes"] or []:
            missing = [a for a in spec.split("*") if a not in ctx.data.attributes]
            if missing:
                problems.append(f"the 'attributes' parameter names {missing[0]!r}, which "
                                f"{ctx.data.label} does not have (it has: "
                                f"{', '.join(sorted(ctx.data.attributes))})")
        positive = params["positive_class"]
        classes = ctx.model.num_classes
        if positive is not None and positive >= classes:
            problems.append(f"the 'positive_class' parameter is {positive}, but the model "
                            f"has {classes} classes (0..{classes - 1})")
        if params["mitigations"] and _positive_class(params, classes) is None:
            problems.append("the 'mitigations' parameter needs a favourable class: set "
                            f"'positive_class' (the model has {classes} classes)")
        trained = [m for m in params["mitigations"] or () if m in TRAINED_MITIGATIONS]
        if trained and (ctx.train_data is None or ctx.training is None):
            problems.append(f"the 'mitigations' parameter has {trained[0]!r}, which trains a "
                            "model: pass the training data (--train-data) and the plan's "
                            "[training] recipe (arch, epochs, ...)")
        elif trained and ctx.train_data is not None:
            for spec in params["attributes"] or sorted(ctx.data.attributes):
                missing = [a for a in spec.split("*") if a not in ctx.train_data.attributes]
                if missing:
                    problems.append(f"the 'mitigations' parameter trains on "
                                    f"{ctx.train_data.label}, which has no sensitive attribute "
                                    f"{missing[0]!r}")
        return problems

    def run(self, ctx: CheckContext, params: dict[str, Any]) -> CheckOutput:
        data = ctx.data.subset(params["n"])
        logits = ctx.model.predict_logits(data.x, batch_size=params["batch_size"])
        probs = torch.softmax(logits.double(), dim=1).cpu()
        predicted, y = probs.argmax(dim=1), data.y.cpu()
        positive = _positive_class(params, ctx.model.num_classes)
        settings = {"min_group_size": params["min_group_size"],
                    "n_bootstrap": params["n_bootstrap"], "confidence": params["confidence"],
                    "seed": ctx.seed}
        metrics: dict[str, float] = {"accuracy": float((predicted == y).double().mean())}
        findings: list[Finding] = []
        reports: dict[str, FairnessReport] = {}
        if positive is None:
            findings.append(Finding("info", "no_favourable_class", (
                f"The model has {ctx.model.num_classes} classes and 'positive_class' is not "
                "set: only accuracy per group is compared; selection rates and error-rate "
                "gaps need a favourable class.")))
        else:
            metrics["selection_rate"] = float((predicted == positive).double().mean())
            if len(torch.unique(y)) < 2:
                findings.append(Finding("warn", "one_class", (
                    f"Every evaluated label is {int(y[0])}: TPR or FPR is undefined in every "
                    "group, so the equalized-odds and equal-opportunity gaps are NaN and fail "
                    "their gates.")))
        for spec in params["attributes"] or sorted(data.attributes):
            groups = Groups.from_dataset(data, spec)
            report = _report(y, predicted, probs, groups, positive, settings)
            reports[spec] = report
            metrics.update(_attribute_metrics(report, spec, positive is not None))
            findings += _findings(report, positive is not None)
        plots = [_group_plot(report, spec, positive is not None)
                 for spec, report in reports.items()]
        if positive is not None:
            plots += [_summary_plot(reports, _RATIO_PLOT, "ratio (1 = parity)"),
                      _summary_plot(reports, _DIFFERENCE_PLOT, "difference (0 = parity)")]
        details: dict[str, Any] = {"by_attribute": {
            spec: _table(report, positive is not None) for spec, report in reports.items()},
            "positive_class": positive}
        if params["mitigations"] and positive is not None:
            rows, problems = _tradeoffs(ctx, data, probs, positive, params)
            plots += [_tradeoff_plot(spec, [r for r in rows if r["attribute"] == spec])
                      for spec in dict.fromkeys(r["attribute"] for r in rows)]
            findings += problems
            details["mitigations"] = rows
        return CheckOutput(metrics, findings, plots, details=details)


def _tradeoffs(ctx: CheckContext, data, probs: torch.Tensor, positive: int,
               params: dict[str, Any]) -> tuple[list[dict[str, Any]], list[Finding]]:
    """Each mitigation scored on a seeded half of the split, beside the model's own
    decisions there: accuracy and the gaps, per attribute (thresholds are fitted on the
    other half, trained mitigations on the training data)."""
    seed = ctx.seed
    fit_rows, rest_rows = data.split_indices(0.5, seed=seed)
    index = {"fit": fit_rows, "rest": rest_rows}
    scores = probs[:, positive].contiguous()
    y = one_vs_rest(data.y.cpu(), positive)
    decided = one_vs_rest(probs.argmax(dim=1), positive)
    rows, problems = [], []
    for spec in params["attributes"] or sorted(data.attributes):
        groups = Groups.from_dataset(data, spec)
        held = Groups(groups.codes[index["rest"]], groups.names, spec)
        outcomes = {"model": decided[index["rest"]]}
        for method in params["mitigations"]:
            if method in TRAINED_MITIGATIONS:
                chosen = ctx.piece(f"mitigation {method} {spec}", functools.partial(
                    _trained, ctx, data, spec, method, positive), decode=_decisions(len(data)))
                outcomes[method] = chosen[index["rest"]]
                continue
            constraint = method.removeprefix("thresholds_")
            fit = index["fit"]
            try:
                thresholds = fit_thresholds(scores[fit], y[fit], groups.codes[fit],
                                            constraint=constraint)
            except AssayValueError as err:
                problems.append(Finding("warn", "mitigation_failed",
                                        f"{spec}: {method} could not be fitted ({err})"))
                continue
            outcomes[method] = thresholds.predict(scores[index["rest"]], held.codes, seed=seed)
        for method, predicted in outcomes.items():
            report = fairness_report(y[index["rest"]], predicted, held, n_bootstrap=0,
                                     min_group_size=params["min_group_size"])
            rows.append({"attribute": spec, "method": method,
                         "accuracy": report.overall["accuracy"],
                         **{name: report.summary[name] for name in _TRADEOFF}})
    return rows, problems


def _trained(ctx: CheckContext, data, spec: str, method: str, positive: int) -> torch.Tensor:
    """The 0/1 decisions (favourable class or not) on every row of ``data`` of a model of
    the plan's recipe trained on the training data with ``method``'s loss for ``spec``."""
    train, recipe = ctx.train_data, ctx.training
    if train is None or recipe is None:  # validate_for refuses this before any work
        raise AssayValueError(f"{method} needs the training data and the plan's recipe.")
    groups = Groups.from_dataset(train, spec)
    net = zoo.build(recipe.arch, input_shape=train.input_shape,
                    num_classes=ctx.model.num_classes, seed=recipe.config.seed,
                    schema=train.schema).to(ctx.model.device)
    loss = mitigation_loss(method, train.y, groups.codes.to(train.y.device),
                           positive_class=positive)
    fit(net, train, recipe.config, loss_fn=loss, show_progress=False)
    predicted = batched_predict(net, data.x, device=ctx.model.device).cpu()
    return one_vs_rest(predicted, positive)


def _decisions(n: int):
    def decode(value: Any) -> torch.Tensor:
        if not isinstance(value, torch.Tensor) or value.shape != (n,):
            raise ValueError("a stored mitigation's decisions do not fit the data")
        return value
    return decode


def _tradeoff_plot(spec: str, rows: list[dict[str, Any]]) -> Plot:
    series = {"accuracy": [r["accuracy"] for r in rows],
              **{name.replace("_", " "): [r[name] for r in rows] for name in _TRADEOFF}}
    return Plot(f"Accuracy against disparity by {spec}, per mitigation (held-out half)",
                "method", "value", [r["method"].replace("_", " ") for r in rows], series,
                kind="bar")


def _positive_class(params: dict[str, Any], num_classes: int) -> int | None:
    if params["positive_class"] is not None:
        return int(params["positive_class"])
    return 1 if num_classes == 2 else None


def _report(y: torch.Tensor, predicted: torch.Tensor, probs: torch.Tensor, groups: Groups,
            positive: int | None, settings: dict[str, Any]) -> FairnessReport:
    """The attribute's report: of the favourable class against the rest; for a model
    without one, of correctness (labels "correct", every prediction 1: the rates' accuracy
    is then the multi-class accuracy)."""
    if positive is None:
        correct = (predicted == y).long()
        return fairness_report(correct, torch.ones_like(correct), groups, **settings)
    return fairness_report(one_vs_rest(y, positive), one_vs_rest(predicted, positive), groups,
                           scores=probs[:, positive].contiguous(), **settings)


def _attribute_metrics(report: FairnessReport, spec: str, favourable: bool) -> dict[str, float]:
    if not favourable:
        out = {f"accuracy_difference@{spec}": report.summary["accuracy_difference"]}
        rates: tuple[str, ...] = ("accuracy",)
    else:
        out = {f"{name}@{spec}": value for name, value in report.summary.items()}
        rates = (*RATES, "ece")
    for index, group in enumerate(report.groups):
        label = f"{spec}={value_label(group)}"
        out[f"size@{label}"] = float(report.sizes[index])
        for rate in rates:
            out[f"{rate}@{label}"] = report.by_group[rate][index]
    return out


def _findings(report: FairnessReport, favourable: bool) -> list[Finding]:
    spec, findings = report.attribute, []
    if report.too_small:
        shown = ", ".join(report.too_small[:6]) + (
            f" and {len(report.too_small) - 6} more" if len(report.too_small) > 6 else "")
        findings.append(Finding("info", "small_groups", (
            f"{spec}: {len(report.too_small)} group(s) under {report.min_group_size} members "
            f"are reported but left out of the gaps: {shown}.")))
    if not favourable:
        return findings
    ratio = report.summary["demographic_parity_ratio"]
    rates = report.by_group["selection_rate"]
    eligible = [(rate, group) for rate, group, size in zip(rates, report.groups, report.sizes,
                                                           strict=True)
                if size >= report.min_group_size and not math.isnan(rate)]
    if math.isnan(ratio):
        findings.append(Finding("warn", "unmeasured", (
            f"{spec}: the demographic parity ratio cannot be measured (fewer than two groups "
            f"of at least {report.min_group_size} members with a selection rate, or none "
            "selected); its gates fail.")))
    elif not report.four_fifths_rule:
        low, high = min(eligible), max(eligible)
        findings.append(Finding("warn", "four_fifths_rule", (
            f"{spec}: demographic parity ratio {ratio:.3f} < {FOUR_FIFTHS} (the four-fifths "
            f"rule): {low[1]} selected at {low[0]:.3f}, {high[1]} at {high[0]:.3f}.")))
    unmeasured = [name for name in ("equalized_odds_difference", "equal_opportunity_difference",
                                    "predictive_parity_difference")
                  if math.isnan(report.summary[name])]
    if unmeasured and not math.isnan(ratio):
        findings.append(Finding("warn", "unmeasured", (
            f"{spec}: {', '.join(unmeasured)} cannot be measured (fewer than two eligible "
            "groups with positives, negatives or positive predictions); their gates fail.")))
    return findings


def _interval(report: FairnessReport, rate: str, index: int) -> list[float | None]:
    intervals = report.by_group_intervals.get(rate)
    if not intervals:
        return [None, None]
    return [None if math.isnan(v) else v for v in intervals[index]]


def _group_plot(report: FairnessReport, spec: str, favourable: bool) -> Plot:
    """The attribute's groups as bars (the favourable rates, or accuracy), with intervals;
    groups left out of the gaps are marked in their label."""
    rates = _PLOTTED if favourable else {"accuracy": "accuracy"}
    shown = [i for i, size in enumerate(report.sizes) if size > 0]
    labels = [report.groups[i] + (" (small)" if report.sizes[i] < report.min_group_size else "")
              for i in shown]
    series = {title: [report.by_group[rate][i] for i in shown] for rate, title in rates.items()}
    intervals = ({title: [_interval(report, rate, i) for i in shown]
                  for rate, title in rates.items()} if report.n_bootstrap else {})
    points = {f"{rate}@{spec}={value_label(report.groups[i])}": [title, label]
              for rate, title in rates.items() for i, label in zip(shown, labels, strict=True)}
    what = "Selection and error rates" if favourable else "Accuracy"
    level = f", {report.confidence:.0%} intervals" if report.n_bootstrap else ""
    return Plot(f"{what} by {spec}{level}", spec, "rate", labels, series, kind="bar",
                points=points, intervals=intervals)


def _summary_plot(reports: dict[str, FairnessReport], names: tuple[str, ...],
                  y_label: str) -> Plot:
    specs = list(reports)
    series, intervals, points = {}, {}, {}
    for name in names:
        title = name.replace("_", " ")
        series[title] = [reports[s].summary[name] for s in specs]
        intervals[title] = [[None if math.isnan(v) else v
                             for v in reports[s].summary_intervals.get(name, (math.nan,) * 2)]
                            for s in specs]
        points.update({f"{name}@{s}": [title, s] for s in specs})
    reference = ({"four-fifths rule": [FOUR_FIFTHS] * len(specs)}
                 if "demographic_parity_ratio" in names else {})
    return Plot(f"Gaps between groups, per attribute ({y_label})", "attribute", y_label, specs,
                series, kind="bar", reference=reference, points=points, intervals=intervals)


def _table(report: FairnessReport, favourable: bool) -> dict[str, Any]:
    """What the metrics do not show: the intervals of the gaps and who was left out."""
    intervals = {k: list(v) for k, v in report.summary_intervals.items()
                 if favourable or k == "accuracy_difference"}
    out: dict[str, Any] = {"summary_intervals": intervals, "too_small": list(report.too_small),
                           "min_group_size": report.min_group_size}
    if favourable:
        out["four_fifths_rule"] = report.four_fifths_rule
    return out
