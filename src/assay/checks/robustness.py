"""Check ``robustness``: robust accuracy under PGD at a list of epsilons per norm.

Robust accuracy counts a sample as robust when it is classified correctly and the
attack found no adversarial example within ``eps``. Only correctly classified samples
are attacked. Metrics: ``clean_accuracy`` and ``robust_accuracy@<norm>=<eps>`` (eps
formatted with ``%g``, e.g. ``robust_accuracy@linf=0.3``).
"""

from __future__ import annotations

from typing import Any

from ..attacks.evasion.pgd import PGD
from ..core.progress import progress_bar
from ..errors import AssayValueError
from .base import Check, CheckContext, CheckOutput, Finding, Param, Plot, register

NORMS = ("linf", "l2")


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
    summary = "Robust accuracy under a PGD attack (Madry et al. 2018) per norm and epsilon."
    params = (
        Param("norms", "list[str]", ["linf"], "threat models", allowed=NORMS),
        Param("eps", "float-list-or-table", [0.0, 0.1, 0.3],
              "radii: one list for every norm, or a table {linf = [...], l2 = [...]}",
              allowed=NORMS, low=0.0),
        Param("steps", "int", 20, "PGD steps", low=0),
        Param("restarts", "int", 1, "random restarts", low=1),
        Param("n", "int", 500, "attack the first n samples", low=1),
        Param("batch_size", "int", 256, "inputs per attack batch", low=1),
        Param("mode", "str", "pgd", "evaluation mode", allowed=("pgd",)),
    )

    def metric_names(self, params: dict[str, Any]) -> list[str]:
        names = ["clean_accuracy"]
        for norm, radii in eps_by_norm(params).items():
            names += [metric_name(norm, eps) for eps in radii]
        return names

    def run(self, ctx: CheckContext, params: dict[str, Any]) -> CheckOutput:
        data = ctx.data.subset(params["n"])
        model, batch = ctx.model, params["batch_size"]
        y = data.y.to(model.device)
        clean_correct = model.predict(data.x, batch_size=batch) == y
        metrics = {"clean_accuracy": float(clean_correct.float().mean())}
        findings: list[Finding] = [
            Finding("warn", f"model_{f.code}", f.message + " Robust accuracy may be overestimated.")
            for f in model.findings if f.code in ("probabilities", "stochastic")]
        plots, curves = [], {}
        for norm, radii in eps_by_norm(params).items():
            curve = []
            for eps in progress_bar(radii, desc=f"PGD {norm}", enabled=ctx.progress):
                attack = PGD(eps=eps, norm=norm, steps=params["steps"],
                             restarts=params["restarts"], seed=ctx.seed, batch_size=batch)
                x_adv = data.x.clone()
                attacked = clean_correct.nonzero().squeeze(1).cpu()
                if len(attacked):
                    x_adv[attacked] = attack(model, data.x[attacked].to(model.device),
                                             data.y[attacked].to(model.device)).to(x_adv.device)
                # Re-predict with the clean pass's batching, so eps=0 reproduces it exactly.
                robust = clean_correct & (model.predict(x_adv, batch_size=batch) == y)
                curve.append(float(robust.float().mean()))
                metrics[metric_name(norm, eps)] = curve[-1]
            curves[norm] = {"eps": radii, "robust_accuracy": curve}
            findings += _curve_findings(norm, radii, curve, metrics["clean_accuracy"], len(data))
            plots.append(Plot(f"Robust accuracy under PGD-{params['steps']} ({norm})",
                              f"epsilon ({norm})", "accuracy", radii, {"PGD": curve}))
        return CheckOutput(metrics, findings, plots, details={
            "attack": {"name": "PGD", "steps": params["steps"], "restarts": params["restarts"],
                       "step_size": "2.5 * eps / steps", "random_start": True},
            "n": len(data), "curves": curves})


def _curve_findings(norm: str, radii: list[float], curve: list[float], clean: float,
                    n: int) -> list[Finding]:
    """Sanity checks of Carlini et al. 2019 that this curve alone can answer."""
    found = []
    if radii and radii[0] == 0.0 and curve[0] != clean:
        found.append(Finding("warn", "eps0_mismatch",
                             f"{norm}: robust accuracy at eps=0 ({curve[0]:.4f}) differs from clean "
                             f"accuracy ({clean:.4f}); the model or the attack is not deterministic."))
    for (e1, a1), (e2, a2) in zip(zip(radii, curve), zip(radii[1:], curve[1:])):
        if a2 > a1 + 1.0 / n:
            found.append(Finding("warn", "non_monotone",
                                 f"{norm}: robust accuracy rises from {a1:.3f} at eps={e1:g} to "
                                 f"{a2:.3f} at eps={e2:g}; a stronger attack should never do "
                                 "better. The attack is not converging (gradient masking?)."))
    return found
