"""Check ``robustness``: robust accuracy at a list of epsilons per norm, and diagnostics
that say whether the evaluation can be trusted.

Robust accuracy counts a sample as robust when it is classified correctly and no attack of
the evaluation found an adversarial example within ``eps``. Each mode names a protocol of
:mod:`assay.attacks.evasion.evaluation` (:func:`protocol_for`), which owns its attacks and
its probes; this check maps parameters to it and its results to metrics and findings:

- ``"pgd"``: ``PGDRestarts``, PGD (Madry et al. 2018) with ``steps`` and ``restarts``;
- ``"standard"``: ``Ensemble("standard")``, AutoAttack's standard ensemble (Croce & Hein
  2020), see :func:`assay.attacks.evasion.evaluation.standard_stages`;
- ``"quick"``: ``Ensemble("quick")``, the same ensemble at a CI-sized budget.

A model whose outputs carry no gradient is evaluated with ``SquareOnly`` instead.

Metrics: ``clean_accuracy`` and ``robust_accuracy@<norm>=<eps>`` (eps formatted with
``%g``, e.g. ``robust_accuracy@linf=0.3``), whatever the mode. With ``diagnostics`` on
(default), the checks of :mod:`assay.attacks.evasion.diagnostics` run after the
evaluation; each one that fails is a "warn" finding with its explanation.

Each radius is evaluated in ``shards`` shards of the points (default 1), each a cache piece
that the audit's executor may run elsewhere (``--executor ray``); a shard's attacks draw
from the seed :func:`~assay.core.rng.piece_seed` gives it, so the numbers depend on
``shards`` but never on the executor.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from functools import partial
from typing import Any, cast

import torch

from ..attacks.evasion import diagnostics as diag
from ..attacks.evasion.eot import ExpectationOverTransformation
from ..attacks.evasion.evaluation import (Ensemble, EvaluationResult, PGDRestarts, Protocol,
                                          SquareOnly, StageReport, concatenate_evaluations,
                                          evaluate_robustness, is_differentiable)
from ..attacks._projection import Norm
from ..core.images import gallery, is_image_batch
from ..core.progress import progress_bar
from ..core.rng import piece_seed
from ..errors import AssayValueError
from ..results import HIGHER_FRACTION
from .base import (Check, CheckContext, CheckOutput, Finding, Param, Plot, radius_problem,
                   register)

NORMS = ("linf", "l2")
MODES = ("pgd", "quick", "standard")
EOT_SAMPLES = 20  # passes per query for a stochastic model (AutoAttack's "rand" version)
BLACK_BOX_ONLY_QUERIES = {"pgd": 1000, "quick": 500, "standard": 5000}  # no gradients
GALLERY_SAMPLES = 8  # clean inputs shown, each above its adversarial example


def metric_name(norm: str, eps: float) -> str:
    return f"robust_accuracy@{norm}={eps:g}"


def eps_by_norm(params: dict[str, Any]) -> dict[Norm, list[float]]:
    """The eps list of each requested norm: one list for all, or a table keyed by norm."""
    eps = params["eps"]
    if isinstance(eps, dict):
        missing = [norm for norm in params["norms"] if norm not in eps]
        if missing:
            raise AssayValueError(f"check 'robustness': the 'eps' table has no list for norm(s) "
                                  f"{missing}; add e.g. eps = {{ {missing[0]} = [0.1] }}.")
        return {cast(Norm, norm): sorted(set(eps[norm])) for norm in params["norms"]}
    return {cast(Norm, norm): sorted(set(eps)) for norm in params["norms"]}


@register
class RobustnessCheck(Check):
    name = "robustness"
    pillar = "robustness"
    summary = ("Robust accuracy under PGD or an AutoAttack-grade ensemble per norm and epsilon, "
               "with diagnostics of gradient masking and non-convergence.")
    params = (
        Param("norms", "list[str]", ["linf"], "threat models", allowed=NORMS),
        Param("eps", "float-list-or-table", [0.0, 0.1, 0.3],
              "radii: one list for every norm, or a table {linf = [...], l2 = [...]}",
              allowed=NORMS, low=0.0),
        Param("mode", "str", "pgd", "evaluation: PGD, or the quick or standard AutoAttack-grade "
              "ensemble", allowed=MODES),
        Param("steps", "int", 20, "PGD steps (mode pgd)", low=0),
        Param("restarts", "int", 1, "PGD random restarts (mode pgd)", low=1),
        Param("n", "int", 500, "evaluate the first n samples", low=1),
        Param("batch_size", "int", 256, "inputs per attack batch", low=1),
        Param("diagnostics", "bool", True, "run the evaluation diagnostics"),
        Param("eot_samples", "int", 0, "forward passes averaged per query (expectation over "
              "transformation); 0: 20 when the model is stochastic, else 1", low=0),
        Param("shards", "int", 1, "evaluate each radius in this many shards of the points, "
              "each a piece that the audit's executor may run elsewhere (a shard draws its "
              "attacks' randomness from its own seed)", low=1),
    )

    declared_metrics = {"clean_accuracy": HIGHER_FRACTION,
                        "robust_accuracy@*": HIGHER_FRACTION}

    def metric_names(self, params: dict[str, Any]) -> list[str]:
        names = ["clean_accuracy"]
        for norm, radii in eps_by_norm(params).items():
            names += [metric_name(norm, eps) for eps in radii]
        return names

    def validate_for(self, ctx: CheckContext, params: dict[str, Any]) -> list[str]:
        found = (radius_problem("eps", norm, radii, ctx)
                 for norm, radii in eps_by_norm(params).items())
        return [problem for problem in found if problem]

    def run(self, ctx: CheckContext, params: dict[str, Any]) -> CheckOutput:
        data = ctx.data.subset(params["n"])
        batch, seed = params["batch_size"], ctx.seed
        x, y = data.x.to(ctx.model.device), data.y.to(ctx.model.device)
        eot = params["eot_samples"] or (EOT_SAMPLES if _stochastic(ctx.model) else 1)
        model = ctx.model if eot == 1 else ExpectationOverTransformation(ctx.model, eot)
        metrics: dict[str, float] = {}
        found = diag.model_behaviour(ctx.model)  # reported even without the diagnostics
        black_box_only = not is_differentiable(model, x)
        protocol = (SquareOnly(queries=BLACK_BOX_ONLY_QUERIES[params["mode"]]) if black_box_only
                    else protocol_for(params))
        label = protocol.label
        if black_box_only:
            found.append(diag.Diagnostic(
                "not_differentiable", False, "The model's outputs carry no gradient (an int8 or "
                "exported model?): it was evaluated with the black-box Square attack only "
                f"({BLACK_BOX_ONLY_QUERIES[params['mode']]} queries), so robust accuracy is an "
                "upper bound; audit its float version for a white-box evaluation."))
        plots, curves, galleries = [], {}, []
        budget: list[str] = []

        shards = shard_bounds(len(x), params["shards"])

        def evaluate(norm: Norm, item: tuple[float, int]) -> EvaluationResult:
            # One piece per radius and shard: a killed evaluation resumes at the first
            # missing one, and an executor may run them side by side.
            eps, index = item
            start, stop = shards[index]
            xs, ys = x[start:stop], y[start:stop]
            name = f"{norm} eps={eps!r}" + (f" points {start}:{stop}" if len(shards) > 1 else "")
            return ctx.piece(name, lambda: evaluate_robustness(
                model, xs, ys, eps=eps, norm=norm, seed=piece_seed(seed, index),
                batch_size=batch, mode=protocol),
                encode=evaluation_piece, decode=lambda raw: evaluation_from_piece(raw, xs))

        for norm, radii in eps_by_norm(params).items():
            items = [(eps, index) for eps in radii for index in range(len(shards))]
            evaluated = ctx.map(partial(evaluate, norm), progress_bar(
                items, desc=f"{params['mode']} {norm}", enabled=ctx.progress))
            results: dict[float, EvaluationResult] = {
                eps: concatenate_evaluations(evaluated[k * len(shards):(k + 1) * len(shards)])
                for k, eps in enumerate(radii)}
            first = next(iter(results.values()))
            budget = budget or [f"{s.name} {s.budget}" for s in results[radii[-1]].stages]
            metrics.setdefault("clean_accuracy", first.clean_accuracy)
            accuracies = [results[eps].robust_accuracy for eps in radii]
            metrics.update({metric_name(norm, eps): acc for eps, acc in zip(radii, accuracies)})
            series = {"evaluation": accuracies}
            if params["diagnostics"] and not black_box_only:
                norm_found, probes = diag.diagnose_norm(model, x, y, norm=norm, results=results,
                                                        protocol=protocol, seed=seed,
                                                        batch_size=batch)
                found += norm_found
                series.update(probes)
            curves[norm] = {"eps": radii, "robust_accuracy": accuracies,
                            "stages": {f"{eps:g}": [s.as_dict() for s in results[eps].stages]
                                       for eps in radii}}
            plots.append(Plot(f"Robust accuracy, {label} ({norm})",
                              f"epsilon ({norm})", "accuracy", radii, series,
                              points={metric_name(norm, eps): ["evaluation", eps]
                                      for eps in radii}))
            if is_image_batch(x):
                galleries.append(_adversarial_gallery(ctx.model, x, y, results[radii[-1]].x_adv,
                                                      norm, radii[-1]))
        if params["diagnostics"] and len(x) and not black_box_only:
            correct = first.clean_correct.nonzero().squeeze(1)[:diag.PROBE_POINTS]
            found.append(diag.gradient_health(model, x[correct], y[correct]))
        if eot > 1:
            budget.append(f"each query averages {eot} forward passes (EOT)")
        findings = _findings(found, params, label, budget, len(data))
        return CheckOutput(metrics, findings, plots, details={
            "evaluation": label, "n": len(data), "eot_samples": eot, "curves": curves,
            "diagnostics": [d.as_dict() for d in found]}, galleries=galleries)


def shard_bounds(points: int, shards: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of ``shards`` consecutive shards of ``points`` points whose sizes
    differ by one at most; fewer shards when there are fewer points (one, empty, for none)."""
    count = max(1, min(shards, points))
    size, extra = divmod(points, count)
    stops = [(i + 1) * size + min(i + 1, extra) for i in range(count)]
    return list(zip([0, *stops[:-1]], stops))


def evaluation_piece(result: EvaluationResult) -> dict[str, Any]:
    """What the check reads of an evaluation, as a cache piece: the adversarial examples
    (galleries, diagnostics), the per-point flags and the stage reports."""
    return {"x_adv": result.x_adv, "clean_correct": result.clean_correct,
            "robust": result.robust, "stages": [asdict(s) for s in result.stages]}


_PIECE_TYPES: dict[str, type | tuple[type, ...]] = {
    "str": str, "int": int, "float": (int, float), "bool": bool}
_STAGE_TYPES = {f.name: _PIECE_TYPES[str(f.type)] for f in fields(StageReport)}


def evaluation_from_piece(raw: dict[str, Any], x: torch.Tensor) -> EvaluationResult:
    """The evaluation of the points ``x`` stored by :func:`evaluation_piece`; ValueError
    when a tensor has the wrong shape or type, or a stage report the wrong fields."""
    x_adv, clean, robust = raw["x_adv"], raw["clean_correct"], raw["robust"]
    if not (isinstance(x_adv, torch.Tensor) and x_adv.shape == x.shape
            and x_adv.dtype == x.dtype):
        raise ValueError(f"x_adv must be a {x.dtype} tensor of shape {list(x.shape)}")
    for flags in (clean, robust):
        if not (isinstance(flags, torch.Tensor) and flags.shape == (len(x),)
                and flags.dtype == torch.bool):
            raise ValueError(f"the per-point flags must be bool tensors of shape [{len(x)}]")
    if bool((robust & ~clean).any()):
        raise ValueError("a point is robust but misclassified without attack")
    stages = []
    for stage in raw["stages"]:
        if set(stage) != set(_STAGE_TYPES) or any(
                isinstance(stage[k], bool) != (t is bool) or not isinstance(stage[k], t)
                for k, t in _STAGE_TYPES.items()):
            raise ValueError(f"a stage report must have the fields {sorted(_STAGE_TYPES)}")
        stages.append(StageReport(**stage))
    return EvaluationResult(x_adv, clean, robust, stages)


def _adversarial_gallery(model, x, y, x_adv, norm: str, eps: float):
    """The first inputs (top row) above their adversarial examples at ``eps`` (bottom
    row), each captioned "label -> prediction"."""
    count = min(GALLERY_SAMPLES, len(x))
    shown = torch.cat([x[:count], x_adv[:count]])
    predicted = model.predict(shown, batch_size=len(shown)).tolist()
    labels = y[:count].tolist() * 2
    captions = [f"{label} -> {pred}" for label, pred in zip(labels, predicted, strict=True)]
    return gallery(f"Clean inputs (top) and adversarial examples at {norm} eps={eps:g} (bottom)",
                   shown, captions, columns=max(count, 1), bounds=model.bounds)


def _stochastic(model) -> bool:
    return any(f.code == "stochastic" for f in getattr(model, "findings", []))


def protocol_for(params: dict[str, Any]) -> Protocol:
    """The evaluation that the check's ``mode``, ``steps`` and ``restarts`` name."""
    if params["mode"] == "pgd":
        return PGDRestarts(steps=params["steps"], restarts=params["restarts"])
    return Ensemble(params["mode"])


def _findings(found: list[diag.Diagnostic], params: dict[str, Any], label: str,
              budget: list[str], n: int) -> list[Finding]:
    """A warning per failed diagnostic; one line for the evaluation and one for the passes."""
    findings = [Finding("warn", d.code, d.message) for d in found if not d.passed]
    line = f"{label} on {n} points" + (f": {'; '.join(budget)}" if budget else "")
    findings.insert(0, Finding("info", "evaluation", line))
    passed = sorted({d.code for d in found if d.passed} - {d.code for d in found if not d.passed})
    if params["diagnostics"]:
        findings.append(Finding("info", "diagnostics_passed",
                                ", ".join(passed) if passed else "none"))
    return findings

