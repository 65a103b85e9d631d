"""Check ``compression``: what pruning and int8 quantization do to accuracy and robustness.

Each variant of the audited model is built with :mod:`assay.defenses.compression` and
measured next to the original on the first ``n`` samples: clean accuracy, robust
accuracy under Linf PGD at ``eps``, size of the serialised state_dict, and the median
latency of one forward pass on a batch of ``batch_size``.

Variants (``variants`` parameter; amounts in (0, 1)):

- ``prune:<amount>``: global unstructured magnitude pruning (Han et al. 2015);
- ``prune-structured:<amount>``: per-layer L1 filter pruning (Li et al. 2017), zeros only;
- ``int8:dynamic``: dynamic int8 quantization of the Linear layers;
- ``int8:static``: static int8 quantization (FX graph mode), calibrated on the first 256
  training samples (the evaluation samples when the audit has no training split).

Robust accuracy of a pruned model comes from PGD on the pruned model itself. An int8
model has no input gradients, so its robust accuracy is measured by transfer: the PGD
examples crafted on the float original, judged on the int8 model (an upper bound on its
white-box robustness; a finding says so).

Metrics, for ``V`` each variant as written (canonical form, amounts with ``%g``) and
``original``: ``accuracy@V``, ``robust_accuracy@V``, ``size_bytes@V``, ``latency_ms@V``,
``accuracy_drop@V`` and ``robust_accuracy_drop@V`` (original minus variant, so positive
is worse; 0 for the original). Example gate: ``"robust_accuracy_drop@prune:0.5 <= 0.05"``.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from ..attacks.evasion.pgd import PGD
from ..core.inference import batched_predict
from ..core.model import ModelWrapper
from ..core.progress import progress_bar
from ..defenses.compression import (count_nonzero, is_quantized, latency_ms, model_size_bytes,
                                    prune, quantize, sparsity)
from ..errors import AssayValueError
from ..results import HIGHER_FRACTION, MetricInfo
from .base import (Check, CheckContext, CheckOutput, Finding, Param, Plot, radius_problem,
                   register)

ORIGINAL = "original"
CALIBRATION_SAMPLES = 256
LATENCY_REPEATS = 10
METRICS = ("accuracy", "robust_accuracy", "size_bytes", "latency_ms", "accuracy_drop",
           "robust_accuracy_drop")
_PRUNE = re.compile(r"^(prune|prune-structured):(.+)$")
FORMS = ("prune:<amount>", "prune-structured:<amount>", "int8:dynamic", "int8:static")


def parse_variant(text: str) -> tuple[str, float | str]:
    """``("prune" | "prune-structured", amount)`` or ``("int8", mode)``; raises
    AssayValueError naming the allowed forms."""
    if text in ("int8:dynamic", "int8:static"):
        return "int8", text.split(":")[1]
    match = _PRUNE.match(text.strip()) if isinstance(text, str) else None
    if match:
        try:
            amount = float(match[2])
        except ValueError:
            amount = float("nan")
        if 0.0 < amount < 1.0:
            return match[1], amount
        raise AssayValueError(f"variant {text!r}: the pruning amount must be a number in (0, 1), "
                              f"e.g. 'prune:0.5'; got {match[2]!r}")
    raise AssayValueError(f"variant {text!r} is not one of the forms {list(FORMS)}")


def canonical(text: str) -> str:
    kind, value = parse_variant(text)
    return f"{kind}:{value:g}" if isinstance(value, float) else f"{kind}:{value}"


def metric_name(metric: str, variant: str) -> str:
    return f"{metric}@{variant}"


@register
class CompressionCheck(Check):
    name = "compression"
    pillar = "robustness"
    summary = ("Accuracy, robust accuracy, size and latency of pruned and int8-quantized "
               "variants of the model against the original.")
    params = (
        Param("variants", "list[str]", ["prune:0.5", "prune:0.9", "int8:dynamic"],
              "compressed variants: " + ", ".join(FORMS)),
        Param("eps", "float", 0.1, "Linf radius of the PGD attack", low=0.0),
        Param("n", "int", 500, "evaluate the first n samples", low=1),
        Param("steps", "int", 20, "PGD steps", low=0),
        Param("batch_size", "int", 256, "inputs per attack batch and latency batch", low=1),
        Param("max_drop", "float", 0.05, "warn when a variant loses more accuracy or robust "
              "accuracy than this", low=0.0, high=1.0),
    )

    def resolve_params(self, given: dict[str, Any], *, where: str = "") -> dict[str, Any]:
        """The base validation, then the variant strings (so a plan with a bad variant is
        refused before anything runs); variants are put in canonical form."""
        resolved = super().resolve_params(given, where=where)
        problems, seen = [], []
        for text in resolved["variants"]:
            try:
                name = canonical(text)
            except AssayValueError as err:
                problems.append(str(err))
                continue
            if name in seen:
                problems.append(f"variant {text!r} is listed twice (as {name!r})")
            seen.append(name)
        if problems:
            raise AssayValueError(f"{where}check {self.name!r}: the 'variants' parameter: "
                                  + "; ".join(problems))
        return {**resolved, "variants": seen}

    def validate_for(self, ctx: CheckContext, params: dict[str, Any]) -> list[str]:
        problem = radius_problem("eps", "linf", [params["eps"]], ctx)
        return [problem] if problem else []

    # Drops are the original's accuracy minus the variant's (negative: it gained).
    declared_metrics = {
        "accuracy@*": HIGHER_FRACTION, "robust_accuracy@*": HIGHER_FRACTION,
        "accuracy_drop@*": MetricInfo("lower", "fraction", (-1.0, 1.0)),
        "robust_accuracy_drop@*": MetricInfo("lower", "fraction", (-1.0, 1.0)),
        "size_bytes@*": MetricInfo("lower", "bytes", (0.0, None)),
        "latency_ms@*": MetricInfo("lower", "ms", (0.0, None))}

    def metric_names(self, params: dict[str, Any]) -> list[str]:
        variants = [ORIGINAL] + [canonical(v) for v in params["variants"]]
        return [metric_name(m, v) for v in variants for m in METRICS]

    def run(self, ctx: CheckContext, params: dict[str, Any]) -> CheckOutput:
        variants = [canonical(v) for v in params["variants"]]
        data = ctx.data.subset(params["n"])
        original = ctx.model
        x, y = data.x.to(original.device), data.y.to(original.device)
        batch = params["batch_size"]
        attack = PGD(eps=params["eps"], norm="linf", steps=params["steps"], seed=ctx.seed,
                     batch_size=batch)
        x_adv_float = attack(original, x, y)  # also the transfer set of the int8 variants
        rows: dict[str, dict[str, Any]] = {
            ORIGINAL: _measure(original, x, y, x_adv_float, batch, transfer=False)}
        findings = [Finding("info", "evaluation", f"Linf PGD-{params['steps']} at eps "
                            f"{params['eps']:g} on {len(data)} points; latency: median of "
                            f"{LATENCY_REPEATS} forward passes on a batch of "
                            f"{min(batch, len(data))}")]
        for variant in progress_bar(variants, desc="compression", enabled=ctx.progress):
            model = _build(variant, original, ctx)
            quantized = is_quantized(model)
            if quantized:
                rows[variant] = _measure(model, x.cpu(), y.cpu(), x_adv_float.cpu(), batch,
                                         transfer=True)
            else:
                x_adv = attack(model, x, y)
                rows[variant] = _measure(model, x, y, x_adv, batch, transfer=False)
        metrics: dict[str, float] = {}
        base = rows[ORIGINAL]
        for variant, row in rows.items():
            row["accuracy_drop"] = base["accuracy"] - row["accuracy"]
            row["robust_accuracy_drop"] = base["robust_accuracy"] - row["robust_accuracy"]
            metrics.update({metric_name(m, variant): float(row[m]) for m in METRICS})
        findings += _findings(rows, params, ctx, original)
        names = list(rows)
        unit, scale = _size_unit(max(row["size_bytes"] for row in rows.values()))
        plots = [
            Plot(f"Accuracy of compressed variants (Linf eps {params['eps']:g})", "variant",
                 "accuracy", names, {"clean": [rows[v]["accuracy"] for v in names],
                                     "robust": [rows[v]["robust_accuracy"] for v in names]},
                 kind="bar", points={
                     **{metric_name("accuracy", v): ["clean", v] for v in names},
                     **{metric_name("robust_accuracy", v): ["robust", v] for v in names}}),
            Plot("Model size (serialised state_dict)", "variant", f"size ({unit})", names,
                 {"size": [rows[v]["size_bytes"] / scale for v in names]}, kind="bar"),
        ]
        details = {"n": len(data), "eps": params["eps"], "steps": params["steps"],
                   "variants": {v: {k: val for k, val in row.items()} for v, row in rows.items()}}
        return CheckOutput(metrics, findings, plots, details)


def _size_unit(largest: float) -> tuple[str, int]:
    """KiB or MiB, as the report writes sizes."""
    return ("MiB", 1024 ** 2) if largest >= 1024 ** 2 else ("KiB", 1024)


def _build(variant: str, original: ModelWrapper, ctx: CheckContext) -> nn.Module:
    """The variant, wrapped like ``original`` (the compression functions rewrap it)."""
    kind, value = parse_variant(variant)
    if isinstance(value, float):
        return prune(original, value,
                     structure="structured" if kind == "prune-structured" else "unstructured")
    calibration = None
    if value == "static":
        source = ctx.train_data if ctx.train_data is not None else ctx.data
        calibration = source.x[:CALIBRATION_SAMPLES]
    return quantize(original, "static" if value == "static" else "dynamic",
                    calibration=calibration)


def _measure(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor,
             batch: int, *, transfer: bool) -> dict[str, Any]:
    # int8 variants run on the CPU, where x and x_adv were moved for them
    correct = batched_predict(model, x, batch_size=batch, device=x.device) == y
    robust = correct & (batched_predict(model, x_adv, batch_size=batch, device=x.device) == y)
    row: dict[str, Any] = {
        "accuracy": float(correct.float().mean()), "robust_accuracy": float(robust.float().mean()),
        "size_bytes": float(model_size_bytes(model)),
        "latency_ms": latency_ms(model, x[:batch], repeats=LATENCY_REPEATS),
        "robust_by": "transfer from the float original" if transfer else "PGD on the model",
        "device": "cpu" if transfer else str(x.device),
    }
    if not transfer:
        row["nonzero_parameters"] = count_nonzero(model)
        row["sparsity"] = sparsity(model)
    return row


def _findings(rows: dict[str, dict[str, Any]], params: dict[str, Any], ctx: CheckContext,
              original: ModelWrapper) -> list[Finding]:
    found = []
    limit = params["max_drop"]
    for variant, row in rows.items():
        for metric, label in (("accuracy_drop", "accuracy"),
                              ("robust_accuracy_drop", "robust accuracy")):
            if row[metric] > limit:
                base = metric.replace("_drop", "")
                found.append(Finding("warn", f"{metric}@{variant}",
                                     f"{variant} loses {row[metric]:.3f} {label} (limit "
                                     f"{limit:g}): {rows[ORIGINAL][base]:.3f} -> "
                                     f"{row[base]:.3f}."))
    int8 = [v for v, row in rows.items() if row["robust_by"].startswith("transfer")]
    if int8:
        found.append(Finding("info", "int8_transfer",
                             f"{', '.join(int8)}: int8 models have no input gradients; their "
                             "robust accuracy is that of the PGD examples crafted on the float "
                             "original (a transfer attack), an upper bound on their white-box "
                             "robustness."))
        if original.device.type != "cpu":
            found.append(Finding("info", "int8_latency_device",
                                 "int8 variants run on the CPU, the original on "
                                 f"{original.device}; their latencies are not comparable."))
    return found
