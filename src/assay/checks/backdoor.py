"""Check ``backdoor_scan``: does a model handed to you hide a trojan?

It needs only the model and a few hundred clean images (``--data``). Neural Cleanse
(:class:`assay.defenses.backdoor.NeuralCleanse`, Wang et al. 2019) reverse-engineers the
smallest trigger of every class in one batched search. A class whose trigger is far
smaller than the others' (anomaly index above 2, the paper's threshold) is the suspected
target.

Metrics:
- ``anomaly_index``: the largest anomaly index over the classes.
- ``trojan_probability``: ``1 / (1 + exp(-2 * (anomaly_index - 2)))``, a logistic centred
  on the paper's threshold (0.5 at index 2, 0.88 at 3, 0.12 at 1). Populations of models
  can be scored with it the way the TrojAI competition scores scanners.
- ``suspected_target``: the flagged class, or -1 when none is flagged.
- ``mask_l1@CLASS``: the L1 norm of each class's reconstructed mask.

A gate such as ``trojan_probability <= 0.5`` fails on a trojaned model. The report shows
the reconstructed triggers (mask times pattern) and the anomaly index of every class.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..attacks.poisoning import BackdoorAttack, load_trigger
from ..core.dataset import Dataset
from ..core.images import gallery
from ..defenses.backdoor import NeuralCleanse
from ..errors import AssayValueError
from ..results import MetricInfo
from .base import Check, CheckContext, CheckOutput, Finding, Param, Plot, register

_SLOPE = 2.0  # of the logistic that maps the anomaly index to trojan_probability


def trojan_probability(anomaly_index: float, threshold: float = 2.0) -> float:
    """The logistic of the anomaly index, 0.5 at ``threshold``."""
    return 1.0 / (1.0 + math.exp(-_SLOPE * (anomaly_index - threshold)))


@register
class BackdoorScanCheck(Check):
    name = "backdoor_scan"
    pillar = "backdoor"
    summary = ("Is the model trojaned? Neural Cleanse's smallest trigger per class, the "
               "anomaly index, a trojan probability and the suspected target.")
    params = (
        Param("steps", "int", 1000, "optimisation steps of the trigger search", low=1),
        Param("batch_size", "int", 32, "clean images per class per step", low=1),
        Param("threshold", "float", 2.0, "the anomaly index that flags a class", low=0.1),
        Param("n", "int", 500, "clean images the triggers are fitted on", low=20),
        Param("class_groups", "int", 1, "search the classes' triggers in this many groups, "
              "each a piece the audit's executor may run elsewhere (the same draws: the "
              "same triggers up to float rounding)", low=1),
        Param("trigger", "str", None, "the .trigger.json that assay attack backdoor wrote "
              "beside the model, when the true trigger is known (an exercise, a red-team "
              "model): shown beside the reconstructions, its target scored"),
    )
    declared_metrics = {
        "anomaly_index": MetricInfo("lower", "", (0.0, None)),
        "trojan_probability": MetricInfo("lower", "probability", (0.0, 1.0)),
        "suspected_target": MetricInfo("neutral", "class", (-1.0, None)),
        "mask_l1@*": MetricInfo("neutral", "pixels", (0.0, None)),
        "target_found": MetricInfo("higher", "", (0.0, 1.0)),
    }

    def metric_names(self, params: dict[str, Any]) -> list[str]:
        known = ["target_found"] if params["trigger"] else []
        return ["anomaly_index", "trojan_probability", "suspected_target", "mask_l1@*", *known]

    def input_files(self, params: dict[str, Any]) -> list[str]:
        return [params["trigger"]] if params["trigger"] else []

    def validate_params(self, params: dict[str, Any]) -> list[str]:
        if not params["trigger"]:
            return []
        try:
            load_trigger(params["trigger"])
        except AssayValueError as err:
            return [f"the 'trigger' parameter: {err}"]
        return []

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
        scanner = NeuralCleanse(steps=params["steps"], batch_size=params["batch_size"],
                                threshold=params["threshold"], seed=ctx.seed)
        def in_pieces(search, groups: list[list[int]]) -> list[Any]:
            return ctx.map(lambda classes: ctx.piece(
                f"classes {classes[0]}..{classes[-1]}", lambda: search(classes),
                encode=lambda found: dict(zip(_SEARCH_FIELDS, found, strict=True)),
                decode=lambda raw: _search_from_piece(raw, len(classes), data)), groups)

        scan = scanner.scan(ctx.model, data, groups=params["class_groups"],
                            map_groups=in_pieces)
        names = [data.classes[k] if k < len(data.classes) else str(k)
                 for k in range(len(scan.l1))]
        probability = trojan_probability(scan.anomaly_index, params["threshold"])
        metrics: dict[str, float] = {"anomaly_index": scan.anomaly_index,
                                     "trojan_probability": probability,
                                     "suspected_target": float(scan.suspected_target)}
        metrics.update({f"mask_l1@{name}": float(v) for name, v in zip(names, scan.l1.tolist(),
                                                                         strict=True)})
        median = float(scan.l1.median())
        if scan.suspected_target >= 0:
            target = scan.suspected_target
            findings = [Finding("warn", "trojan_suspected", (
                f"Class {names[target]} needs a trigger of L1 {float(scan.l1[target]):.3g} "
                f"pixels where the median class needs {median:.3g} (anomaly index "
                f"{float(scan.anomaly[target]):.2f} > {params['threshold']:g}): a backdoor "
                f"to class {names[target]} is likely (trojan probability {probability:.2f})."))]
        else:
            findings = [Finding("info", "no_trojan_found", (
                f"No class stands out: the largest anomaly index is {scan.anomaly_index:.2f} "
                f"(threshold {params['threshold']:g}). Neural Cleanse finds small static "
                "triggers; warping or input-specific triggers can evade it."))]
        plot = Plot("Anomaly index of each class's smallest trigger", "class", "anomaly index",
                    names, {"anomaly index": scan.anomaly.tolist()}, kind="bar",
                    reference={"threshold": [params["threshold"]] * len(names)},
                    points={"anomaly_index": ["anomaly index", names[int(scan.anomaly.argmax())]]})
        triggers = scan.masks[:, None] * scan.patterns  # what the trigger adds, in [0, 1]
        low, high = ctx.model.bounds
        shown = (low + triggers * (high - low)).clamp(low, high)
        captions = [f"{name}: L1 {l1:.3g}" for name, l1 in zip(names, scan.l1.tolist(),
                                                               strict=True)]
        galleries = [gallery("Reconstructed triggers (mask x pattern) per class", shown,
                             captions, columns=min(len(names), 10), bounds=(low, high))]
        if params["trigger"]:
            true = load_trigger(params["trigger"])
            metrics["target_found"] = float(scan.suspected_target == true.target)
            galleries.insert(0, _true_trigger_gallery(true, shown, names, data, (low, high)))
            findings.append(_target_finding(true.target, scan.suspected_target, names))
        return CheckOutput(metrics, findings, [plot], galleries=galleries, details={
            "seconds_per_class": round(scan.seconds_per_class, 3),
            "trigger_success": [round(v, 4) for v in scan.success.tolist()],
            "flagged": [names[k] for k in scan.flagged], "median_mask_l1": median})


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


def _search_from_piece(raw: dict[str, Any], classes: int,
                       data: Dataset) -> tuple[torch.Tensor, ...]:
    """A stored group's triggers; ValueError when a tensor has the wrong shape."""
    channels, height, width = data.input_shape
    shapes = {"masks": (classes, height, width), "patterns": (classes, channels, height, width),
              "success": (classes,)}
    if set(raw) != set(shapes) or any(tuple(raw[k].shape) != shape for k, shape in shapes.items()):
        raise ValueError(f"a trigger search piece must hold tensors of shapes {shapes}")
    return tuple(raw[k].float() for k in _SEARCH_FIELDS)
