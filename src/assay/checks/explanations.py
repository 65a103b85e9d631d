"""Check ``explanations``: are the model's attribution maps faithful to it, and do they
depend on it at all?

For each requested method of :data:`assay.explain.EXPLAINERS`, on the first ``n``
evaluation samples and their predicted classes,
:func:`assay.explain.evaluation.evaluate_explanations` measures

- faithfulness: deletion and insertion AUC (Petsiuk et al. 2018) against a seeded random
  attribution of the same inputs; ``deletion_gain`` is random minus method;
- sanity: the mean Spearman correlation (and SSIM) between the trained model's maps and
  those of the model with every layer re-initialised, cascading from the top (Adebayo et
  al. 2018);
- Integrated Gradients' completeness error (the share of the logit gap its attributions
  miss).

Verdict per method: a "warn" finding ``fails_randomisation`` when the correlation after
randomisation is not below ``max_spearman`` (the map explains the input, not the model),
``no_better_than_random`` when the 95% interval of the deletion gain does not lie above 0;
an "info" finding ``explanation_passed`` otherwise. For images, one gallery per method:
correctly classified and misclassified inputs (top row) above their maps (bottom row);
with ``visualise`` (default), one more of each class's activation maximisation (Simonyan
et al. 2014; Yosinski et al. 2015), captioned with the probability the model gives it.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..core.images import gallery, is_image_batch
from ..explain import EXPLAINERS, activation_maximisation, make_explainer
from ..explain.evaluation import ExplanationEvaluation, evaluate_explanations
from ..results import MetricInfo
from .base import Check, CheckContext, CheckOutput, Finding, Param, Plot, register

IMAGES_ONLY = ("gradcam",)
ROWS_ONLY = ("kernel_shap", "lime")
GALLERY_SAMPLES = 4  # correctly classified, and as many misclassified, inputs per gallery
AUC = MetricInfo("higher", "", (0.0, 1.0))
LOWER_AUC = MetricInfo("lower", "", (0.0, 1.0))
CORRELATION = MetricInfo("lower", "", (-1.0, 1.0))


@register
class ExplanationsCheck(Check):
    name = "explanations"
    pillar = "explainability"
    summary = ("Attribution maps per method: faithfulness (deletion/insertion AUC against a "
               "random attribution) and sanity (model-parameter randomisation).")
    params = (
        Param("methods", "list[str]", ["saliency", "integrated_gradients"],
              "attribution methods (names of assay.explain.EXPLAINERS)"),
        Param("n", "int", 100, "evaluate the first n samples", low=2),
        Param("steps", "int", 16, "points of the deletion and insertion curves", low=1),
        Param("ig_steps", "int", 64, "Integrated Gradients quadrature nodes", low=1),
        Param("max_spearman", "float", 0.5, "largest rank correlation after randomisation "
              "that still passes", low=-1.0, high=1.0),
        Param("batch_size", "int", 256, "rows per forward pass", low=1),
        Param("visualise", "bool", True, "for images, a gallery of each class's activation "
              "maximisation"),
    )

    declared_metrics = {
        "deletion_auc@random": MetricInfo("neutral", "", (0.0, 1.0)),
        "insertion_auc@random": MetricInfo("neutral", "", (0.0, 1.0)),
        "deletion_auc@*": LOWER_AUC, "insertion_auc@*": AUC,
        "deletion_gain@*": MetricInfo("higher", "", (-1.0, 1.0)),
        "randomisation_spearman@*": CORRELATION,
        "randomisation_ssim@*": MetricInfo("lower", "", (-1.0, 1.0)),
        "completeness_error@*": MetricInfo("lower", "fraction", (0.0, None)),
    }

    def validate_params(self, params: dict[str, Any]) -> list[str]:
        known = EXPLAINERS.names()
        problems = [f"the 'methods' parameter must list names of {known}; got {m!r}"
                    for m in params["methods"] if m not in known]
        if "random" in params["methods"]:
            problems.append("the 'methods' parameter cannot name 'random': it is the baseline "
                            "every method is measured against")
        return problems

    def validate_for(self, ctx: CheckContext, params: dict[str, Any]) -> list[str]:
        images = is_image_batch(ctx.data.x[:1])
        shape = list(ctx.data.input_shape)
        wrong = [(m, "images [N, C, H, W] and a convolutional layer") for m in params["methods"]
                 if m in IMAGES_ONLY and not images]
        wrong += [(m, "tabular rows [N, features]") for m in params["methods"]
                  if m in ROWS_ONLY and len(shape) != 1]
        return [f"the 'methods' parameter lists {method!r}, which needs {needs}; the data's "
                f"inputs are {shape}. Fix: drop {method!r} for this data"
                for method, needs in wrong]

    def metric_names(self, params: dict[str, Any]) -> list[str]:
        names = ["deletion_auc@random", "insertion_auc@random"]
        for method in params["methods"]:
            names += [f"{kind}@{method}" for kind in ("deletion_auc", "insertion_auc",
                                                      "deletion_gain", "randomisation_spearman",
                                                      "randomisation_ssim")]
            if method == "integrated_gradients":
                names.append("completeness_error@integrated_gradients")
        return names

    def run(self, ctx: CheckContext, params: dict[str, Any]) -> CheckOutput:
        data = ctx.data.subset(params["n"])
        x, y = data.x.to(ctx.model.device), data.y.to(ctx.model.device)
        explainers = {m: make_explainer(m, _settings(m, params)) for m in params["methods"]}
        result = evaluate_explanations(ctx.model, x, explainers, steps=params["steps"],
                                       max_spearman=params["max_spearman"], seed=ctx.seed,
                                       batch_size=params["batch_size"])
        metrics: dict[str, float | None] = {
            "deletion_auc@random": float(result.random_deletion.auc.mean()),
            "insertion_auc@random": float(result.random_insertion.auc.mean())}
        findings = []
        for method, found in result.methods.items():
            metrics.update({
                f"deletion_auc@{method}": float(found.deletion.auc.mean()),
                f"insertion_auc@{method}": float(found.insertion.auc.mean()),
                f"deletion_gain@{method}": found.deletion_gain,
                f"randomisation_spearman@{method}": found.spearman,
                f"randomisation_ssim@{method}": found.ssim})
            if found.completeness is not None and method == "integrated_gradients":
                metrics["completeness_error@integrated_gradients"] = found.completeness
            findings += _verdict(method, found, params["max_spearman"])
        galleries = ([_gallery(ctx.model, x, y, result, m) for m in result.methods]
                     if is_image_batch(x) else [])
        if params["visualise"] and is_image_batch(x):
            galleries.append(_class_gallery(ctx.model, data.classes, ctx.seed))
        return CheckOutput(metrics, findings, _plots(result), details={
            "n": len(data), "methods": list(result.methods),
            "randomised_layers": {m: r.randomisation.layers for m, r in result.methods.items()},
            "randomisation_spearman_by_stage": {
                m: r.randomisation.spearman.mean(1).tolist() for m, r in result.methods.items()},
            "deletion_gain_interval": {  # None for an open end (a single sample)
                m: [v if math.isfinite(v) else None for v in r.gain_interval]
                for m, r in result.methods.items()}},
            galleries=galleries)


def _settings(method: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"steps": params["ig_steps"]} if method == "integrated_gradients" else {}


def _verdict(method: str, found, max_spearman: float) -> list[Finding]:
    low, high = found.gain_interval
    out = []
    if not found.sane:
        out.append(Finding("warn", "fails_randomisation",
                           f"{method}: its maps stay similar when every layer of the model is "
                           f"re-initialised (mean Spearman correlation {found.spearman:.2f}, "
                           f"at least {max_spearman:g}): they show the input, not what the "
                           "model learnt (Adebayo et al. 2018). Do not read them as "
                           "explanations of this model."))
    if not found.faithful:
        out.append(Finding("warn", "no_better_than_random",
                           f"{method}: deleting the features it ranks first lowers the "
                           "predicted class's probability no faster than deleting random ones "
                           f"(deletion AUC gain over random {found.deletion_gain:+.3f}, 95% "
                           f"interval {low:+.3f} to {high:+.3f}): its ranking is not shown to "
                           "be faithful to the model."))
    if not out:
        out.append(Finding("info", "explanation_passed",
                           f"{method}: beats a random attribution on deletion (gain "
                           f"{found.deletion_gain:+.3f}, 95% interval {low:+.3f} to "
                           f"{high:+.3f}) and decorrelates under randomisation (Spearman "
                           f"{found.spearman:.2f})."))
    return out


def _plots(result: ExplanationEvaluation) -> list[Plot]:
    fractions = result.random_deletion.fractions.tolist()
    plots = []
    for kind, random_curve in (("Deletion", result.random_deletion),
                               ("Insertion", result.random_insertion)):
        series = {m: getattr(r, kind.lower()).scores.mean(0).tolist()
                  for m, r in result.methods.items()}
        series["random"] = random_curve.scores.mean(0).tolist()
        plots.append(Plot(f"{kind} curves (mean over samples)",
                          f"share of features {'removed' if kind == 'Deletion' else 'inserted'}",
                          "probability of the predicted class", fractions, series))
    return plots


def _gallery(model, x, y, result: ExplanationEvaluation, method: str):
    """Correct and misclassified inputs (top row) above their ``method`` maps (bottom),
    each map |attribution| summed over channels and scaled to [0, 1] on its own."""
    predicted = result.target
    correct = (predicted == y).nonzero().squeeze(1)[:GALLERY_SAMPLES]
    wrong = (predicted != y).nonzero().squeeze(1)[:GALLERY_SAMPLES]
    index = torch.cat([correct, wrong])
    maps = result.methods[method].attributions[index].abs().sum(1, keepdim=True)
    peak = maps.flatten(1).max(1).values.clamp_min(1e-12).view(-1, 1, 1, 1)
    low, high = model.bounds
    maps = (low + (maps / peak) * (high - low)).expand(-1, x.shape[1], -1, -1)
    captions = [f"{'ok' if i < len(correct) else 'wrong'} {int(y[j])} -> {int(predicted[j])}"
                for i, j in enumerate(index.tolist())]
    shown = torch.cat([x[index], maps])
    return gallery(f"{method}: correctly classified and misclassified inputs (top) and their "
                   "maps (bottom)", shown, captions * 2, columns=max(len(index), 1),
                   bounds=model.bounds)


def _class_gallery(model, classes, seed: int):
    """Each class's activation maximisation (at most the gallery's 16), captioned with the
    probability the model gives it."""
    shown = list(range(min(len(classes), 16)))
    images = activation_maximisation(model, shown, seed=seed)
    probability = model.predict_logits(images).softmax(1)[torch.arange(len(shown)), shown]
    captions = [f"{classes[k]} (p={float(p):.2f})" for k, p in zip(shown, probability)]
    return gallery("What the model responds to most, per class (activation maximisation: "
                   "jitter, blur, L2)", images, captions, columns=min(len(shown), 8),
                   bounds=model.bounds)
