"""Check ``robustness``: robust accuracy at a list of epsilons per norm, and diagnostics
that say whether the evaluation can be trusted.

Robust accuracy counts a sample as robust when it is classified correctly and no attack of
the evaluation found an adversarial example within ``eps``. Modes:

- ``"pgd"``: PGD (Madry et al. 2018) with ``steps`` and ``restarts``;
- ``"standard"``: AutoAttack's standard ensemble (Croce & Hein 2020), see
  :func:`assay.attacks.evasion.evaluation.standard_stages`;
- ``"quick"``: the same ensemble at a CI-sized budget (``quick_stages``).

Metrics: ``clean_accuracy`` and ``robust_accuracy@<norm>=<eps>`` (eps formatted with
``%g``, e.g. ``robust_accuracy@linf=0.3``), whatever the mode. With ``diagnostics`` on
(default), the checks of :mod:`assay.attacks.evasion.diagnostics` run after the
evaluation; each one that fails is a "warn" finding with its explanation.
"""

from __future__ import annotations

from typing import Any

import torch

from ..attacks.evasion import diagnostics as diag
from ..attacks.evasion.apgd import APGD
from ..attacks.evasion.eot import ExpectationOverTransformation
from ..attacks.evasion.evaluation import (STAGES, EvaluationResult, Stage, evaluate_robustness,
                                          is_differentiable)
from ..attacks.evasion.pgd import PGD
from ..attacks.evasion.square import Square
from ..core.progress import progress_bar
from ..errors import AssayValueError
from .base import (Check, CheckContext, CheckOutput, Finding, Param, Plot, radius_problem,
                   register)

NORMS = ("linf", "l2")
MODES = ("pgd", "quick", "standard")
EOT_SAMPLES = 20  # passes per query for a stochastic model (AutoAttack's "rand" version)
PROBE_POINTS = 200  # points for the per-model probes (gradients, unbounded eps)
BLACK_BOX_PROBE_QUERIES = 1000  # Square's budget when the evaluation has no black-box stage
BLACK_BOX_ONLY_QUERIES = {"pgd": 1000, "quick": 500, "standard": 5000}  # no gradients


def metric_name(norm: str, eps: float) -> str:
    return f"robust_accuracy@{norm}={eps:g}"


def eps_by_norm(params: dict[str, Any]) -> dict[str, list[float]]:
    """The eps list of each requested norm: one list for all, or a table keyed by norm."""
    eps = params["eps"]
    if isinstance(eps, dict):
        missing = [norm for norm in params["norms"] if norm not in eps]
        if missing:
            raise AssayValueError(f"check 'robustness': the 'eps' table has no list for norm(s) "
                                  f"{missing}; add e.g. eps = {{ {missing[0]} = [0.1] }}.")
        return {norm: sorted(set(eps[norm])) for norm in params["norms"]}
    return {norm: sorted(set(eps)) for norm in params["norms"]}


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
    )

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
        label = "Square only (no gradients)" if black_box_only else _describe(params)
        if black_box_only:
            found.append(diag.Diagnostic(
                "not_differentiable", False, "The model's outputs carry no gradient (an int8 or "
                "exported model?): it was evaluated with the black-box Square attack only "
                f"({BLACK_BOX_ONLY_QUERIES[params['mode']]} queries), so robust accuracy is an "
                "upper bound; audit its float version for a white-box evaluation."))
        plots, curves, budget = [], {}, []
        for norm, radii in eps_by_norm(params).items():
            results: dict[float, EvaluationResult] = {}
            for eps in progress_bar(radii, desc=f"{params['mode']} {norm}", enabled=ctx.progress):
                stages = (_square_only(params, eps, norm, seed) if black_box_only
                          else _stages(params, eps, norm, model, seed))
                results[eps] = evaluate_robustness(model, x, y, eps=eps, norm=norm, seed=seed,
                                                   batch_size=batch, stages=stages)
            first = next(iter(results.values()))
            budget = budget or [f"{s.name} {s.budget}" for s in results[radii[-1]].stages]
            metrics.setdefault("clean_accuracy", first.clean_accuracy)
            accuracies = [results[eps].robust_accuracy for eps in radii]
            metrics.update({metric_name(norm, eps): acc for eps, acc in zip(radii, accuracies)})
            series = {"evaluation": accuracies}
            if params["diagnostics"] and not black_box_only:
                norm_found, probes = _diagnose(model, x, y, norm, results, params, seed)
                found += norm_found
                series.update(probes)
            curves[norm] = {"eps": radii, "robust_accuracy": accuracies,
                            "stages": {f"{eps:g}": [s.as_dict() for s in results[eps].stages]
                                       for eps in radii}}
            plots.append(Plot(f"Robust accuracy, {label} ({norm})",
                              f"epsilon ({norm})", "accuracy", radii, series,
                              points={metric_name(norm, eps): ["evaluation", eps]
                                      for eps in radii}))
        if params["diagnostics"] and len(x) and not black_box_only:
            correct = first.clean_correct.nonzero().squeeze(1)[:PROBE_POINTS]
            found.append(diag.gradient_health(model, x[correct], y[correct]))
        if eot > 1:
            budget.append(f"each query averages {eot} forward passes (EOT)")
        findings = _findings(found, params, label, budget, len(data))
        return CheckOutput(metrics, findings, plots, details={
            "evaluation": label, "n": len(data), "eot_samples": eot, "curves": curves,
            "diagnostics": [d.as_dict() for d in found]})


def _stochastic(model) -> bool:
    return any(f.code == "stochastic" for f in getattr(model, "findings", []))


def _stages(params: dict[str, Any], eps: float, norm: str, model, seed: int) -> list[Stage]:
    if eps == 0:
        return []  # nothing to attack: the evaluation reproduces clean accuracy
    if params["mode"] == "pgd":
        attack = PGD(eps=eps, norm=norm, steps=params["steps"], restarts=params["restarts"],
                     seed=seed, batch_size=params["batch_size"])
        return [Stage("PGD", f"{params['steps']} steps x {params['restarts']} restarts", attack)]
    return STAGES[params["mode"]](eps=eps, norm=norm, num_classes=model.num_classes, seed=seed,
                                  batch_size=params["batch_size"])


def _square_only(params: dict[str, Any], eps: float, norm: str, seed: int) -> list[Stage]:
    if eps == 0:
        return []
    queries = BLACK_BOX_ONLY_QUERIES[params["mode"]]
    return [Stage("Square", f"{queries} queries, p_init 0.8",
                  Square(eps=eps, norm=norm, n_queries=queries, p_init=0.8, seed=seed,
                         batch_size=params["batch_size"]), black_box=True)]


def _describe(params: dict[str, Any]) -> str:
    if params["mode"] == "pgd":
        return f"PGD-{params['steps']}, {params['restarts']} restart(s)"
    return f"{params['mode']} ensemble"


def _diagnose(model, x: torch.Tensor, y: torch.Tensor, norm: str,
              results: dict[float, EvaluationResult], params: dict[str, Any],
              seed: int) -> tuple[list[diag.Diagnostic], dict[str, list[float]]]:
    """The diagnostics of one norm, and the probe curves to draw next to the evaluation."""
    radii = list(results)
    first = results[radii[0]]
    found = diag.curve_shape(norm, radii, [results[e].robust_accuracy for e in radii],
                             first.clean_accuracy, len(x))
    fgsm, noise = [], []
    batch = params["batch_size"]
    for eps, result in results.items():
        single = diag.single_step(model, x, y, result=result, eps=eps, norm=norm,
                                  batch_size=batch)
        rand = diag.random_noise(model, x, y, result=result, eps=eps, norm=norm, seed=seed,
                                 batch_size=batch)
        fgsm.append(single.values["fgsm"])
        noise.append(rand.values["noise"])
        if eps > 0:
            found += [single, rand]
    attacked = [e for e in radii if e > 0]
    if attacked:
        # The stronger probes run once, where the evaluation is least decided.
        half = first.clean_accuracy / 2
        eps = min(attacked, key=lambda e: abs(results[e].robust_accuracy - half))
        found.append(diag.stronger_attack(model, x, y, result=results[eps],
                                          stage=_convergence_stage(params, eps, norm, seed),
                                          code="convergence", eps=eps, norm=norm,
                                          batch_size=batch))
        found.append(_black_box(model, x, y, results[eps], params, eps, norm, seed))
        correct = first.clean_correct.nonzero().squeeze(1)[:PROBE_POINTS]
        found.append(diag.unbounded_attack(model, x[correct], y[correct], norm=norm, seed=seed,
                                           batch_size=batch))
    return found, {"FGSM": fgsm, "random noise": noise}


def _convergence_stage(params: dict[str, Any], eps: float, norm: str, seed: int) -> Stage:
    """A longer attack with another seed: twice the steps, and for PGD a second restart."""
    batch = params["batch_size"]
    if params["mode"] == "pgd":
        steps = max(2 * params["steps"], 10)
        return Stage("PGD", f"{steps} steps x {params['restarts'] + 1} restarts",
                     PGD(eps=eps, norm=norm, steps=steps, restarts=params["restarts"] + 1,
                         seed=seed + 1, batch_size=batch))
    steps = 200 if params["mode"] == "standard" else 40
    return Stage("APGD-CE", f"{steps} steps", APGD(eps=eps, norm=norm, n_iter=steps,
                                                   seed=seed + 1, batch_size=batch))


def _black_box(model, x, y, result: EvaluationResult, params: dict[str, Any], eps: float,
               norm: str, seed: int) -> diag.Diagnostic:
    """The ensembles hold a black-box stage: its breaks after the white-box stages are the
    answer. PGD alone gets a Square probe on the points it left robust."""
    black = [s for s in result.stages if s.black_box]
    if black:
        broken = sum(s.broken for s in black)
        left = int(result.robust.sum()) + broken  # robust after the white-box stages
        return diag.extra_breaks("black_box", f"the black-box stage {black[0].name}", broken,
                                 left=left, n=len(x), eps=eps, norm=norm)
    square = Square(eps=eps, norm=norm, n_queries=BLACK_BOX_PROBE_QUERIES, seed=seed,
                    batch_size=params["batch_size"])
    stage = Stage("Square", f"{BLACK_BOX_PROBE_QUERIES} queries", square, black_box=True)
    return diag.stronger_attack(model, x, y, result=result, stage=stage, code="black_box",
                                eps=eps, norm=norm, batch_size=params["batch_size"])


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

