"""Check ``corruptions``: accuracy under the common corruptions of Hendrycks & Dietterich
(ICLR 2019) at each severity.

Metrics: ``clean_accuracy``, ``mean_corruption_accuracy`` (over corruptions and
severities), ``accuracy@<corruption>`` (mean over severities) and
``accuracy@severity=<s>`` (mean over corruptions). With a ``baseline`` model file, also
``mce`` and ``relative_mce``: CE_c = sum_s E(f, c, s) / sum_s E(base, c, s), relative
CE_c = sum_s (E(f, c, s) - E(f, clean)) / sum_s (E(base, c, s) - E(base, clean)), each
averaged over corruptions (the paper's definitions; E is the error rate). The baseline
takes the audited model's input bounds and normalisation.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from ..core.images import gallery, is_image_batch
from ..core.loading import load_network
from ..core.model import ModelWrapper
from ..core.progress import progress_bar
from ..core.rng import seeded_generator
from ..errors import AssayValueError, AssayWarning
from ..shift.corruptions import BENCHMARK_CORRUPTIONS, CORRUPTIONS, corrupt
from ..shift.corruptions._common import check_images
from ..results import HIGHER_FRACTION, MetricInfo
from .base import Check, CheckContext, CheckOutput, Finding, Param, Plot, register


@register
class CorruptionsCheck(Check):
    name = "corruptions"
    pillar = "distribution shift"
    summary = "Accuracy under 15 common corruptions x 5 severities (Hendrycks & Dietterich 2019)."
    params = (
        Param("corruptions", "list[str]", list(BENCHMARK_CORRUPTIONS), "corruptions to apply",
              allowed=tuple(CORRUPTIONS)),
        Param("severities", "list[int]", [1, 2, 3, 4, 5], "severities", allowed=(1, 2, 3, 4, 5)),
        Param("n", "int", 500, "use the first n samples", low=1),
        Param("batch_size", "int", 256, "inputs per forward pass", low=1),
        Param("baseline", "str", None, "model file of the mCE baseline (TorchScript, .pt2, "
                                       "or weights with baseline_arch)"),
        Param("baseline_arch", "str", None, "zoo architecture of baseline weights"),
    )

    # mCE is the model's corruption error over the baseline's (1: as bad as the baseline);
    # relative mCE the same for the drop from clean accuracy (negative: gains accuracy).
    declared_metrics = {
        "clean_accuracy": HIGHER_FRACTION, "mean_corruption_accuracy": HIGHER_FRACTION,
        "accuracy@*": HIGHER_FRACTION,
        "mce": MetricInfo("lower", "ratio", (0.0, None)),
        "relative_mce": MetricInfo("lower", "ratio", (None, None))}

    def metric_names(self, params: dict[str, Any]) -> list[str]:
        names = ["clean_accuracy", "mean_corruption_accuracy"]
        names += [f"accuracy@{c}" for c in params["corruptions"]]
        names += [f"accuracy@severity={s}" for s in sorted(set(params["severities"]))]
        if params["baseline"]:
            names += ["mce", "relative_mce"]
        return names

    def input_files(self, params: dict[str, Any]) -> list[str]:
        return [params["baseline"]] if params["baseline"] else []

    def validate_params(self, params: dict[str, Any]) -> list[str]:
        baseline = params["baseline"]
        if baseline is not None and not Path(baseline).is_file():
            return [f"the 'baseline' parameter names {baseline!r}, which is not a file (relative "
                    "paths are read from the working directory). Fix: give the path of the "
                    "baseline model, or drop 'baseline' to skip the mCE"]
        if baseline is None and params["baseline_arch"] is not None:
            return ["the 'baseline_arch' parameter is set without 'baseline'. Fix: add the "
                    "baseline's weight file as 'baseline', or drop 'baseline_arch'"]
        return []

    def validate_for(self, ctx: CheckContext, params: dict[str, Any]) -> list[str]:
        problems = []
        try:
            check_images(ctx.data.x, "the corruptions check")
        except AssayValueError as err:
            problems.append(f"the data {ctx.data.label} cannot be corrupted: {err}")
        if params["baseline"]:
            try:
                with warnings.catch_warnings():  # only whether it runs matters here
                    warnings.simplefilter("ignore", AssayWarning)
                    _baseline(ctx, params).inspect(ctx.data.x[:2])
            except AssayValueError as err:
                problems.append(f"the 'baseline' parameter: {err}")
        return problems

    def run(self, ctx: CheckContext, params: dict[str, Any]) -> CheckOutput:
        data = ctx.data.subset(params["n"])
        severities = sorted(set(params["severities"]))
        models = {"model": ctx.model}
        if params["baseline"]:
            models["baseline"] = _baseline(ctx, params)
        accuracy = {name: _accuracy_grid(model, data, params, severities, ctx, piece=name)
                    for name, model in models.items()}
        clean, grid = accuracy["model"]
        metrics: dict[str, float] = {"clean_accuracy": clean}
        cells = [a for row in grid.values() for a in row]
        metrics["mean_corruption_accuracy"] = sum(cells) / len(cells)
        for name, row in grid.items():
            metrics[f"accuracy@{name}"] = sum(row) / len(row)
        for j, severity in enumerate(severities):
            metrics[f"accuracy@severity={severity}"] = sum(r[j] for r in grid.values()) / len(grid)
        findings = []
        if "baseline" in accuracy:
            metrics.update(_mce(accuracy["model"], accuracy["baseline"]))
        worst = min(grid, key=lambda c: metrics[f"accuracy@{c}"])
        drop = clean - metrics[f"accuracy@{worst}"]
        findings.append(Finding("warn" if drop > 0.3 else "info", "worst_corruption",
                                f"Worst corruption: {worst}, mean accuracy "
                                f"{metrics[f'accuracy@{worst}']:.3f}, {drop:.3f} below the clean "
                                f"accuracy {clean:.3f}."))
        heat = Plot("Accuracy per corruption and severity", "severity", "accuracy",
                    [str(s) for s in severities], {c: row for c, row in grid.items()},
                    kind="heatmap")
        curve = Plot("Mean accuracy against severity", "severity", "accuracy",
                     [0, *severities], {"mean over corruptions": [clean] + [
                         metrics[f"accuracy@severity={s}"] for s in severities]},
                     points={"clean_accuracy": ["mean over corruptions", 0],
                             **{f"accuracy@severity={s}": ["mean over corruptions", s]
                                for s in severities}})
        galleries = [_sample_gallery(ctx, data, params["corruptions"], severities)] if (
            len(data) and is_image_batch(data.x)) else []
        return CheckOutput(metrics, findings, [heat, curve], details={
            "grid": grid, "severities": severities, "n": len(data),
            **({"baseline_grid": accuracy["baseline"][1]} if "baseline" in accuracy else {})},
            galleries=galleries)


@torch.no_grad()
def _sample_gallery(ctx: CheckContext, data, corruptions: list[str], severities: list[int]):
    """The first sample, clean and under each corruption at severity 3 (else the middle
    severity run), captioned "corruption: label -> prediction". Its own generator, so the
    metrics do not depend on it."""
    severity = 3 if 3 in severities else severities[len(severities) // 2]
    model, device = ctx.model, ctx.model.device
    sample = data.x[:1].to(device)
    gen = seeded_generator(ctx.seed * 1000 + 999, device)
    shown = torch.cat([sample] + [corrupt(sample, name, severity, generator=gen)
                                  for name in corruptions])
    predicted = model.predict(shown, batch_size=len(shown)).tolist()
    label = int(data.y[0])
    captions = [f"{name}: {label} -> {pred}"
                for name, pred in zip(["clean", *corruptions], predicted, strict=True)]
    return gallery(f"A sample under each corruption at severity {severity}", shown, captions,
                   columns=8, bounds=model.bounds)


def _baseline(ctx: CheckContext, params: dict[str, Any]) -> ModelWrapper:
    """The baseline model, wrapped like the audited one."""
    net, _ = load_network(params["baseline"], arch=params["baseline_arch"],
                          input_shape=ctx.data.input_shape, num_classes=ctx.model.num_classes)
    return _like(ctx.model, net)


def _like(model: ModelWrapper, net: torch.nn.Module) -> ModelWrapper:
    mean = None if model.mean is None else model.mean.flatten().tolist()
    std = None if model.std is None else model.std.flatten().tolist()
    return ModelWrapper(net, num_classes=model.num_classes, input_shape=model.input_shape,
                        bounds=model.bounds, mean=mean, std=std, name="baseline").to(model.device)


def _accuracy_grid(model: ModelWrapper, data, params: dict[str, Any], severities: list[int],
                   ctx: CheckContext, piece: str) -> tuple[float, dict[str, list[float]]]:
    """Clean accuracy and {corruption: [accuracy per severity]}; seeded per cell, so a
    cell's corrupted images do not depend on which other cells run. Each corruption's row
    is a piece (named ``piece`` and the corruption) that a resumed check reads back."""
    batch = params["batch_size"]
    with torch.no_grad():
        clean = float((model.predict(data.x, batch_size=batch) == data.y.to(model.device))
                      .float().mean())

    def row(item: tuple[int, str]) -> list[float]:
        index, name = item
        return ctx.piece(f"{piece} {name}",
                         lambda: _corruption_row(model, data, name, index, severities, ctx.seed,
                                                 batch),
                         decode=lambda raw: _row_from_piece(raw, len(severities)))

    rows = ctx.map(row, enumerate(progress_bar(params["corruptions"], desc="corruptions",
                                               enabled=ctx.progress)))
    return clean, dict(zip(params["corruptions"], rows, strict=True))


@torch.no_grad()
def _corruption_row(model: ModelWrapper, data, name: str, index: int, severities: list[int],
                    seed: int, batch: int) -> list[float]:
    """The accuracy under corruption ``name`` (the ``index``-th of the check's list) at
    each severity."""
    device = model.device
    y = data.y.to(device)
    row = []
    for severity in severities:
        gen = seeded_generator(seed * 1000 + index * 10 + severity, device)
        correct = 0
        for start in range(0, len(data), batch):
            xb = corrupt(data.x[start:start + batch].to(device), name, severity, generator=gen)
            correct += int((model(xb).argmax(1) == y[start:start + batch]).sum())
        row.append(correct / len(data))
    return row


def _row_from_piece(raw: Any, count: int) -> list[float]:
    """A stored row: ``count`` accuracies in [0, 1]; ValueError otherwise."""
    if not (isinstance(raw, list) and len(raw) == count and all(
            isinstance(a, float) and 0.0 <= a <= 1.0 for a in raw)):
        raise ValueError(f"a row must hold {count} accuracies in [0, 1]; got {raw!r}")
    return raw


def _mce(ours: tuple[float, dict[str, list[float]]],
         base: tuple[float, dict[str, list[float]]]) -> dict[str, float]:
    """mCE and relative mCE; a corruption that does not degrade the baseline at all has
    no relative CE and is left out of that mean (NaN when none is left)."""
    clean_err, base_clean_err = 1 - ours[0], 1 - base[0]
    ce, relative = [], []
    for name, row in ours[1].items():
        err = [1 - a for a in row]
        base_err = [1 - a for a in base[1][name]]
        if sum(base_err) > 0:
            ce.append(sum(err) / sum(base_err))
        base_drop = sum(b - base_clean_err for b in base_err)
        if base_drop > 1e-9:
            relative.append(sum(e - clean_err for e in err) / base_drop)
    nan = float("nan")
    return {"mce": sum(ce) / len(ce) if ce else nan,
            "relative_mce": sum(relative) / len(relative) if relative else nan}
