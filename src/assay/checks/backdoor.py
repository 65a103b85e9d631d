"""Check ``backdoor_scan``: does a model handed to you hide a trojan?

It needs only the model and a few hundred clean images (``--data``). Two scanners look:
- Neural Cleanse (:class:`assay.defenses.backdoor.NeuralCleanse`, Wang et al. 2019)
  reverse-engineers the smallest trigger of every class in one batched search; a class
  whose trigger is far smaller than the others' has a high anomaly index.
- The maximum-margin scan (:class:`assay.defenses.backdoor.MaxMargin`, MM-BD, Wang et al.
  2024) climbs each class's logit margin from random inputs; a trojan's target reaches a
  margin far beyond the others' (a small p-value), whatever the trigger's form.

Metrics:
- ``trojan_probability``: a logistic of both scanners' evidence
  (:func:`assay.defenses.backdoor.trojan_verdict`), fitted to a population of MNIST
  models with known truth, so populations can be scored the way the TrojAI competition
  scores scanners. It holds for MNIST-like models: on a Fashion-MNIST population it did
  not separate trojans from clean models (docs/benchmarks.md).
- ``suspected_target``: the class the stronger evidence names when the probability is
  above 0.5, else -1.
- ``anomaly_index``: Neural Cleanse's largest anomaly index; ``mask_l1@CLASS``: the L1
  norm of each class's reconstructed mask.
- ``margin_p_value``: the maximum-margin scan's p-value; ``max_margin@CLASS``: each
  class's largest margin.

A gate such as ``trojan_probability <= 0.5`` fails on a trojaned model. On data other than
MNIST, without a ``calibration`` of its own, a scan that suspects no class carries the
warning ``calibration_unvalidated``: the shipped logistic has not been shown to hold
there, so the check never reads "pass" on its word alone. The report shows
the reconstructed triggers (mask times pattern), the anomaly index and the largest margin
of every class.
"""

from __future__ import annotations

from typing import Any

import torch

from ..attacks.poisoning import BackdoorAttack, load_trigger
from ..core.dataset import Dataset
from ..core.images import gallery
from ..defenses.backdoor import (POPULATION_DATA, POPULATION_LOGISTIC, MaxMargin,
                                 NeuralCleanse, TriggerScan, load_logistic, trojan_verdict)
from ..defenses.backdoor.max_margin import MarginScan
from ..errors import AssayValueError
from ..results import MetricInfo
from .base import Check, CheckContext, CheckOutput, Finding, Param, Plot, register

@register
class BackdoorScanCheck(Check):
    name = "backdoor_scan"
    pillar = "backdoor"
    summary = ("Is the model trojaned? Neural Cleanse's smallest trigger and the largest "
               "logit margin per class, joined into a trojan probability and a suspected "
               "target.")
    params = (
        Param("steps", "int", 1000, "optimisation steps of the trigger search", low=1),
        Param("batch_size", "int", 32, "clean images per class per step", low=1),
        Param("threshold", "float", 2.0, "the anomaly index at which Neural Cleanse flags a "
              "class (its own flag; the probability weighs the index itself)", low=0.1),
        Param("n", "int", 500, "clean images the triggers are fitted on", low=20),
        Param("class_groups", "int", 1, "search the classes' triggers in this many groups, "
              "each a piece the audit's executor may run elsewhere (the same draws: the "
              "same triggers up to float rounding)", low=1),
        Param("margin_starts", "int", 30, "random inputs per class of the maximum-margin "
              "scan", low=1),
        Param("margin_steps", "int", 300, "gradient-ascent steps of the maximum-margin scan",
              low=1),
        Param("calibration", "str", None, 'a JSON file {"bias": b, "weights": [w1, w2]} of '
              "a TrojanLogistic fitted to your own population of models (TrojanLogistic.fit "
              "and .to_dict); default: the one fitted to MNIST models, which does not hold "
              "for other data"),
        Param("trigger", "str", None, "the .trigger.json that assay attack backdoor wrote "
              "beside the model, when the true trigger is known (an exercise, a red-team "
              "model): shown beside the reconstructions, its target scored"),
    )
    declared_metrics = {
        "anomaly_index": MetricInfo("lower", "", (0.0, None)),
        "trojan_probability": MetricInfo("lower", "probability", (0.0, 1.0)),
        "suspected_target": MetricInfo("neutral", "class", (-1.0, None)),
        "mask_l1@*": MetricInfo("neutral", "pixels", (0.0, None)),
        "margin_p_value": MetricInfo("higher", "probability", (0.0, 1.0)),
        "max_margin@*": MetricInfo("neutral", "logit", (None, None)),
        "target_found": MetricInfo("higher", "", (0.0, 1.0)),
    }

    def metric_names(self, params: dict[str, Any]) -> list[str]:
        known = ["target_found"] if params["trigger"] else []
        return ["anomaly_index", "trojan_probability", "suspected_target", "mask_l1@*",
                "margin_p_value", "max_margin@*", *known]

    def input_files(self, params: dict[str, Any]) -> list[str]:
        return [params[k] for k in ("trigger", "calibration") if params[k]]

    def validate_params(self, params: dict[str, Any]) -> list[str]:
        problems = []
        for name, load in (("trigger", load_trigger), ("calibration", load_logistic)):
            if params[name]:
                try:
                    load(params[name])
                except AssayValueError as err:
                    problems.append(f"the '{name}' parameter: {err}")
        return problems

    def validate_for(self, ctx: CheckContext, params: dict[str, Any]) -> list[str]:
        problems = []
        if ctx.data.x.ndim != 4:
            problems.append(f"the scan reverse-engineers image triggers; {ctx.data.label} has "
                            f"inputs of shape {list(ctx.data.input_shape)}")
        if ctx.model.num_classes < 3:
            problems.append(f"the model has {ctx.model.num_classes} classes; the scan compares "
                            "the triggers of at least 3")
        return problems

    def run(self, ctx: CheckContext, params: dict[str, Any]) -> CheckOutput:
        data = ctx.data.subset(params["n"])
        trigger = self._triggers(ctx, params, data)
        margin = self._margins(ctx, params, data)
        logistic = (load_logistic(params["calibration"]) if params["calibration"]
                    else POPULATION_LOGISTIC)
        verdict = trojan_verdict(trigger, margin, logistic)
        names = [data.classes[k] if k < len(data.classes) else str(k)
                 for k in range(len(trigger.l1))]
        metrics: dict[str, float] = {"trojan_probability": verdict.probability,
                                     "suspected_target": float(verdict.suspected_target),
                                     "anomaly_index": trigger.anomaly_index,
                                     "margin_p_value": margin.p_value}
        metrics.update({f"mask_l1@{name}": float(v)
                        for name, v in zip(names, trigger.l1.tolist(), strict=True)})
        metrics.update({f"max_margin@{name}": float(v)
                        for name, v in zip(names, margin.margins.tolist(), strict=True)})
        findings = [_verdict_finding(verdict.probability, verdict.suspected_target, trigger,
                                     margin, names, params["threshold"])]
        if (verdict.suspected_target < 0 and logistic is POPULATION_LOGISTIC
                and data.name != POPULATION_DATA):
            findings.append(Finding("warn", "calibration_unvalidated", (
                f"The trojan probability comes from a logistic fitted to MNIST models; "
                f"{data.label} is not MNIST. On Fashion-MNIST models the same logistic "
                "ranked trojans below clean ones (ROC-AUC 0.44), so a low probability here "
                "is not evidence of a clean model. Fix: fit a TrojanLogistic to a "
                "population like yours and pass it as 'calibration'.")))
        plots = [
            Plot("Anomaly index of each class's smallest trigger (Neural Cleanse)", "class",
                 "anomaly index", names, {"anomaly index": trigger.anomaly.tolist()},
                 kind="bar", reference={"threshold": [params["threshold"]] * len(names)},
                 points={"anomaly_index": ["anomaly index",
                                           names[int(trigger.anomaly.argmax())]]}),
            Plot("Largest logit margin of each class (maximum-margin scan)", "class",
                 "margin", names, {"largest margin": margin.margins.tolist()}, kind="bar",
                 points={"margin_p_value": ["largest margin", names[margin.top_class]]})]
        triggers = trigger.masks[:, None] * trigger.patterns  # what it adds, in [0, 1]
        low, high = ctx.model.bounds
        shown = (low + triggers * (high - low)).clamp(low, high)
        captions = [f"{name}: L1 {l1:.3g}" for name, l1 in zip(names, trigger.l1.tolist(),
                                                               strict=True)]
        galleries = [gallery("Reconstructed triggers (mask x pattern) per class", shown,
                             captions, columns=min(len(names), 10), bounds=(low, high))]
        if params["trigger"]:
            true = load_trigger(params["trigger"])
            metrics["target_found"] = float(verdict.suspected_target == true.target)
            galleries.insert(0, _true_trigger_gallery(true, shown, names, data, (low, high)))
            findings.append(_target_finding(true.target, verdict.suspected_target, names))
        return CheckOutput(metrics, findings, plots, galleries=galleries, details={
            "logistic": logistic.to_dict(),
            "evidence": {"anomaly_index_capped": verdict.features[0],
                         "minus_log10_margin_p_value_capped": verdict.features[1]},
            "seconds_per_class": {"neural_cleanse": round(trigger.seconds_per_class, 3),
                                  "max_margin": round(margin.seconds_per_class, 3)},
            "trigger_success": [round(v, 4) for v in trigger.success.tolist()],
            "flagged_by_neural_cleanse": [names[k] for k in trigger.flagged],
            "flagged_by_max_margin": ([names[margin.suspected_target]]
                                      if margin.suspected_target >= 0 else []),
            "median_mask_l1": float(trigger.l1.median())})

    @staticmethod
    def _triggers(ctx: CheckContext, params: dict[str, Any], data: Dataset) -> TriggerScan:
        scanner = NeuralCleanse(steps=params["steps"], batch_size=params["batch_size"],
                                threshold=params["threshold"], seed=ctx.seed)

        def in_pieces(search, groups: list[list[int]]) -> list[Any]:
            return ctx.map(lambda classes: ctx.piece(
                f"classes {classes[0]}..{classes[-1]}", lambda: search(classes),
                encode=lambda found: dict(zip(_SEARCH_FIELDS, found, strict=True)),
                decode=lambda raw: _search_from_piece(raw, len(classes), data)), groups)

        return scanner.scan(ctx.model, data, groups=params["class_groups"],
                            map_groups=in_pieces)

    @staticmethod
    def _margins(ctx: CheckContext, params: dict[str, Any], data: Dataset) -> MarginScan:
        scanner = MaxMargin(starts=params["margin_starts"], steps=params["margin_steps"],
                            seed=ctx.seed)
        return ctx.piece("max margin", lambda: scanner.scan(ctx.model, data.input_shape,
                                                            ctx.model.bounds),
                         encode=lambda scan: {"margins": scan.margins,
                                              "seconds_per_class": scan.seconds_per_class},
                         decode=lambda raw: _margins_from_piece(raw, scanner))


def _verdict_finding(probability: float, target: int, trigger: TriggerScan,
                     margin: MarginScan, names: list[str], threshold: float) -> Finding:
    said = (f"Neural Cleanse's anomaly index is {trigger.anomaly_index:.2f} (class "
            f"{names[int(trigger.anomaly.argmax())]}, flag at {threshold:g}); the largest "
            f"logit margin, class {names[margin.top_class]}'s, has p-value "
            f"{margin.p_value:.2g} (flag under {margin.alpha:g})")
    if target >= 0:
        return Finding("warn", "trojan_suspected", (
            f"A backdoor to class {names[target]} is likely (trojan probability "
            f"{probability:.2f}): {said}."))
    alone = ([f"Neural Cleanse flags class {names[k]}" for k in trigger.flagged]
             + ([f"the margin scan flags class {names[margin.suspected_target]}"]
                if margin.suspected_target >= 0 else []))
    if alone:  # below the calibrated 0.5, but not nothing: say so, never a silent pass
        flags = "; ".join(alone)
        return Finding("warn", "scanner_flag", (
            f"{flags[0].upper()}{flags[1:]}, but both scanners' evidence gives a trojan "
            f"probability of only {probability:.2f}: {said}. One scanner alone also flags "
            "some clean models; take it as a lead to follow (more 'steps', more clean "
            "images), not as a clean bill."))
    return Finding("info", "no_trojan_found", (
        f"No class stands out (trojan probability {probability:.2f}): {said}. Input-specific "
        "or adaptive triggers can evade both scanners."))


def _true_trigger_gallery(true: BackdoorAttack, reconstructed, names: list[str], data: Dataset,
                          bounds: tuple[float, float]):
    """The true trigger (on a blank image and on a clean one) beside the reconstruction of
    its target class."""
    low, _ = bounds
    blank = torch.full_like(data.x[:1], low).cpu()
    images = torch.cat([true.apply_trigger(blank), true.apply_trigger(data.x[:1].cpu()),
                        reconstructed[true.target:true.target + 1].cpu()])
    captions = [f"true {true.name} trigger", f"on a clean image -> {names[true.target]}",
                f"reconstructed for {names[true.target]}"]
    return gallery("The true trigger beside the reconstruction of its target", images,
                   captions, columns=3, bounds=bounds)


def _target_finding(target: int, suspected: int, names: list[str]) -> Finding:
    if suspected == target:
        return Finding("info", "true_target_found",
                       f"The scan suspects class {names[target]}, the true trigger's target.")
    said = "no class" if suspected < 0 else f"class {names[suspected]}"
    return Finding("warn", "true_target_missed", (
        f"The true trigger sends inputs to class {names[target]}, but the scan suspects "
        f"{said}: this backdoor evades Neural Cleanse here (a larger budget, 'steps', or "
        "another scanner may find it)."))


_SEARCH_FIELDS = ("masks", "patterns", "success")


def _margins_from_piece(raw: dict[str, Any], scanner: MaxMargin) -> MarginScan:
    """A stored maximum-margin scan; ValueError when it does not fit."""
    margins = raw["margins"]
    if not isinstance(margins, torch.Tensor) or margins.ndim != 1 or len(margins) < 3:
        raise ValueError("a max-margin piece must hold one margin per class")
    return MarginScan.of(margins, scanner.alpha, float(raw["seconds_per_class"]))


def _search_from_piece(raw: dict[str, Any], classes: int,
                       data: Dataset) -> tuple[torch.Tensor, ...]:
    """A stored group's triggers; ValueError when a tensor has the wrong shape."""
    channels, height, width = data.input_shape
    shapes = {"masks": (classes, height, width), "patterns": (classes, channels, height, width),
              "success": (classes,)}
    if set(raw) != set(shapes) or any(tuple(raw[k].shape) != shape for k, shape in shapes.items()):
        raise ValueError(f"a trigger search piece must hold tensors of shapes {shapes}")
    return tuple(raw[k].float() for k in _SEARCH_FIELDS)
