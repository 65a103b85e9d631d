"""Check ``membership_inference``: how well can an attacker tell the model's training
samples (members, ``--train-data``) from other samples of the same distribution
(non-members, ``--data``)?

Attacks (``attacks``): the threshold attacks ``loss`` (Yeom et al. 2018), ``confidence``
and ``entropy`` (Salem et al. 2019) and the boundary distance ``label_only``
(Choquette-Choo et al. 2021, by HopSkipJump), which need only the target model; and the
reference-model attacks ``shadow`` (Shokri et al. 2017), ``lira`` (online),
``lira_offline`` (Carlini et al. 2022) and ``rmia`` (offline, Zarifzadeh et al. 2024),
which train ``reference_models`` models with
the plan's ``[training]`` recipe, each on a seeded random half of the pool (the targets,
and the samples of ``reference_data`` beside them; :mod:`assay.attacks.privacy.reference`).
RMIA compares each target with the ``reference_data`` samples, so it needs them. Each
reference model's scores are a cached piece: a resumed audit trains none of them again.

Metrics per attack (Carlini et al.: the TPR at a low FPR, not only the AUC):
``auc@ATTACK`` with DeLong's interval (``auc_ci_low``/``auc_ci_high``),
``tpr_at_fpr_0.001@ATTACK`` and ``tpr_at_fpr_0.01@ATTACK`` (exact on ties, never
interpolated) with 95% Clopper-Pearson intervals (``..._ci_low``/``..._ci_high``), and
``advantage@ATTACK`` (max TPR - FPR). Lower is better for the model: less leakage.
The ROC of every attack is plotted on log-log axes.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..attacks.privacy import (RMIA, THRESHOLD_ATTACKS, LabelOnlyBoundaryDistance, LiRA,
                               ShadowModelAttack, image_queries, membership_matrix,
                               query_scores, reference_scores, threshold_scores)
from ..attacks.privacy.reference import reference_seed
from ..core import zoo
from ..core.data import Dataset, check_data_spec, load_data, npz_path
from ..core.progress import progress_bar
from ..errors import AssayValueError
from ..metrics.privacy import MembershipMetrics, membership_metrics
from ..results import LOWER_FRACTION, MetricInfo
from .base import Check, CheckContext, CheckOutput, Finding, Param, Plot, register

REFERENCE_ATTACKS = ("shadow", "lira", "lira_offline", "rmia")
ATTACKS = (*THRESHOLD_ATTACKS, "label_only", *REFERENCE_ATTACKS)
FPRS = (0.001, 0.01)
# Reference models whose training sets are this many times larger or smaller than the
# model's are unlike it: on digits (4 models) 1.5x larger cost LiRA 0.1 of AUC.
_SIZE_RATIO = 1.25
_METRICS = ("auc", "auc_ci_low", "auc_ci_high",
            *(f"tpr_at_fpr_{fpr:g}{tail}" for fpr in FPRS for tail in ("", "_ci_low", "_ci_high")),
            "advantage")


@register
class MembershipInferenceCheck(Check):
    name = "membership_inference"
    pillar = "privacy"
    summary = ("Membership inference: AUC and TPR at 0.1%/1% FPR of threshold attacks, shadow "
               "models, LiRA and RMIA (Shokri et al. 2017, Carlini et al. 2022, Zarifzadeh et "
               "al. 2024).")
    params = (
        Param("attacks", "list[str]", list(THRESHOLD_ATTACKS),
              "attacks to run (shadow, lira, lira_offline and rmia train reference models)",
              allowed=ATTACKS),
        Param("reference_models", "int", 4, "reference models to train (shadow, LiRA, RMIA)",
              low=2, high=1024),
        Param("reference_data", "str", None,
              "data spec or .npz file: more pool samples for the reference models (RMIA's "
              "population); same distribution as the targets, not the model's training data"),
        Param("n", "int", 1000, "use the first n members and the first n non-members", low=1),
        Param("variance", "str", "fixed", "LiRA's Gaussians: one pooled variance, or each "
              "sample's own (needs 4+ reference models)", allowed=("fixed", "per_example")),
        Param("augment", "bool", True, "query LiRA and RMIA with flips and 1-pixel shifts "
                                       "(images only)"),
        Param("label_only_iterations", "int", 10, "HopSkipJump iterations of the label-only "
              "attack", low=0),
        Param("rmia_a", "float", 0.3, "RMIA's offline scaling a", low=0.0, high=1.0),
        Param("rmia_gamma", "float", 1.0, "RMIA's likelihood-ratio threshold gamma", low=1e-6),
        Param("batch_size", "int", 256, "inputs per forward pass", low=1),
    )

    declared_metrics = {**{f"{metric}@*": LOWER_FRACTION for metric in _METRICS},
                        "members": MetricInfo("neutral", "count", (0.0, None)),
                        "nonmembers": MetricInfo("neutral", "count", (0.0, None))}

    def metric_names(self, params: dict[str, Any]) -> list[str]:
        return ["members", "nonmembers"] + [f"{metric}@{attack}" for attack in params["attacks"]
                                            for metric in _METRICS]

    def input_files(self, params: dict[str, Any]) -> list[str]:
        path = params["reference_data"] and npz_path(params["reference_data"])
        return [path] if path else []

    def validate_params(self, params: dict[str, Any]) -> list[str]:
        problems = []
        if params["reference_data"] is not None:
            try:
                check_data_spec(params["reference_data"], files=False)
            except AssayValueError as err:
                problems.append(f"the 'reference_data' parameter: {err}")
        if "rmia" in params["attacks"] and params["reference_data"] is None:
            problems.append("the 'rmia' attack compares each target with population samples. "
                            "Fix: set 'reference_data' to a data spec or .npz of samples from "
                            "the targets' distribution that the model did not train on")
        return problems

    def validate_for(self, ctx: CheckContext, params: dict[str, Any]) -> list[str]:
        if ctx.train_data is None:
            return ["the membership_inference check needs the model's training samples (the "
                    "members). Fix: pass --train-data SPEC (train_data= in run_audit); --data "
                    "holds the non-members"]
        members, nonmembers = ctx.train_data.subset(params["n"]), ctx.data.subset(params["n"])
        problems = []
        for role, flag, data in (("members", "--train-data", members),
                                 ("non-members", "--data", nonmembers)):
            if len(data) == 0:
                problems.append(f"the {role} ({flag} {data.label}) are empty. Fix: pass a "
                                "non-empty data set")
        if problems:
            return problems
        shared = _shared_rows(members.x, nonmembers.x)
        if shared:
            problems.append(f"{shared} of the non-members (--data {nonmembers.label}) are also "
                            f"among the members (--train-data {members.label}): a sample cannot "
                            "be both. Fix: pass held-out data the model was not trained on as "
                            "--data")
        if not set(params["attacks"]) & set(REFERENCE_ATTACKS):
            return problems
        if ctx.training is None:
            chosen = sorted(set(params["attacks"]) & set(REFERENCE_ATTACKS))
            problems.append(f"the attacks {chosen} train reference models the way the "
                            "model was trained. Fix: add a [training] table to the plan "
                            "(arch = 'small_cnn', epochs = 10, batch_size = 64, lr = 0.001, "
                            "...), or run only "
                            f"{[a for a in ATTACKS if a not in REFERENCE_ATTACKS]}")
        else:
            problem = _recipe_problem(ctx, members)
            if problem:
                problems.append(problem)
        if params["reference_data"] is not None:
            try:
                extra = _pool_extra(ctx, params, members)
            except AssayValueError as err:
                problems.append(f"the 'reference_data' parameter: {err}")
                return problems
            # a pool sample twice over would train "OUT" models on it, and an RMIA
            # population holding members would hide them: both understate the leak
            shared = _shared_rows(torch.cat([ctx.train_data.x, nonmembers.x]), extra.x)
            if shared:
                problems.append(f"the 'reference_data' parameter: {shared} samples of "
                                f"{extra.label} are also among the members (--train-data) or "
                                "the non-members (--data). Fix: pass other samples of the same "
                                "distribution (e.g. the rest of the training split)")
        return problems

    def run(self, ctx: CheckContext, params: dict[str, Any]) -> CheckOutput:
        if ctx.train_data is None:  # validate_for refuses this before any work
            raise AssayValueError("membership_inference needs the members: pass --train-data.")
        members, nonmembers = ctx.train_data.subset(params["n"]), ctx.data.subset(params["n"])
        n1, n0 = len(members), len(nonmembers)
        x = torch.cat([members.x, nonmembers.x])
        y = torch.cat([members.y, nonmembers.y])
        scores: dict[str, torch.Tensor] = {}
        wanted = params["attacks"]
        logits = ctx.model.predict_logits(x, batch_size=params["batch_size"]).cpu()
        for attack in ("loss", "confidence", "entropy"):
            if attack in wanted:
                scores[attack] = threshold_scores(logits, y, attack)
        if "label_only" in wanted:
            label_only = LabelOnlyBoundaryDistance(
                num_iterations=params["label_only_iterations"], seed=ctx.seed)
            scores["label_only"] = label_only(ctx.model, x.to(ctx.model.device),
                                              y.to(ctx.model.device)).cpu()
        details: dict[str, Any] = {"members": n1, "nonmembers": n0}
        findings: list[Finding] = []
        if set(wanted) & set(REFERENCE_ATTACKS):
            scores.update(_reference_attacks(ctx, params, members, len(ctx.train_data), x, y,
                                             logits, details, findings))
        results = {attack: membership_metrics(scores[attack][:n1], scores[attack][n1:], FPRS)
                   for attack in wanted}
        metrics: dict[str, float] = {"members": float(n1), "nonmembers": float(n0)}
        for attack, result in results.items():
            metrics.update(_metrics_of(attack, result))
        findings = _findings(results, n1, n0) + findings
        return CheckOutput(metrics, findings, [_roc_plot(results, n1)], details=details)


def _shared_rows(a: torch.Tensor, b: torch.Tensor) -> int:
    """How many rows of ``b`` equal some row of ``a`` exactly."""
    seen = {row.tobytes() for row in a.reshape(len(a), -1).cpu().numpy()}
    return sum(row.tobytes() in seen for row in b.reshape(len(b), -1).cpu().numpy())


def _recipe_problem(ctx: CheckContext, members: Dataset) -> str | None:
    """Why the ``[training]`` recipe cannot train a reference model on this data (built for
    its shape and class count, one forward and backward pass on two samples), or None."""
    recipe = ctx.training
    if recipe is None:
        return None
    try:
        net = zoo.build(recipe.arch, input_shape=members.input_shape,
                        num_classes=ctx.model.num_classes, seed=0, schema=members.schema)
        loss = torch.nn.functional.cross_entropy(net(members.x[:2]), members.y[:2])
        loss.backward()
    except (AssayValueError, RuntimeError, ValueError) as err:
        return (f"the [training] recipe (arch {recipe.arch!r}) cannot train a reference model "
                f"on inputs of shape {list(members.input_shape)} with "
                f"{ctx.model.num_classes} classes: {str(err).rstrip('.')}. Fix: set [training] "
                "arch to the architecture the model was trained with ('mlp' for tabular rows)")
    return None


def _pool_extra(ctx: CheckContext, params: dict[str, Any], members: Dataset) -> Dataset:
    """The ``reference_data`` samples, checked against the targets' shape and classes."""
    extra = load_data(params["reference_data"], data_root=ctx.data_root, default_split="train")
    if extra.input_shape != members.input_shape:
        raise AssayValueError(f"{extra.label} has inputs of shape {list(extra.input_shape)}, the "
                              f"targets {list(members.input_shape)}. Fix: use samples of the "
                              "targets' distribution")
    if len(extra.y) and int(extra.y.max()) >= ctx.model.num_classes:
        raise AssayValueError(f"{extra.label} has labels up to {int(extra.y.max())}; the model "
                              f"has {ctx.model.num_classes} classes")
    return extra


def _reference_attacks(ctx: CheckContext, params: dict[str, Any], members: Dataset,
                       trained: int, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor,
                       details: dict[str, Any],
                       findings: list[Finding]) -> dict[str, torch.Tensor]:
    """The scores of the wanted reference-model attacks on the targets ``x`` (members
    first), whose target-model ``logits`` are given; the model trained on ``trained``
    samples."""
    recipe = ctx.training
    if recipe is None:  # validate_for refuses this before any work
        raise AssayValueError("the reference attacks need the plan's [training] recipe.")
    targets = len(x)
    if params["reference_data"] is not None:
        extra = _pool_extra(ctx, params, members)
        x, y = torch.cat([x, extra.x]), torch.cat([y, extra.y])
    pool = Dataset(x, y, "membership pool", "pool", members.classes, schema=members.schema)
    models = params["reference_models"]
    keep = membership_matrix(models, len(pool), ctx.seed)
    queries = image_queries(pool.input_shape, params["augment"])

    shapes = {"phi": (len(queries), len(pool)), "log_probs": (len(pool), ctx.model.num_classes)}

    def decode(raw: Any) -> dict[str, torch.Tensor]:
        if not (isinstance(raw, dict) and set(raw) == set(shapes) and all(
                isinstance(raw[k], torch.Tensor) and tuple(raw[k].shape) == shape
                and not bool(torch.isnan(raw[k]).any()) for k, shape in shapes.items())):
            raise ValueError(f"reference scores must be tensors {shapes} without NaN")
        return {k: v.float() for k, v in raw.items()}

    def one(index: int) -> dict[str, torch.Tensor]:
        return ctx.piece(f"reference model {index}",
                         lambda: reference_scores(recipe, pool, keep[index], ctx.model, queries,
                                                  seed=reference_seed(ctx.seed, index),
                                                  batch_size=params["batch_size"]),
                         decode=decode)

    outputs = ctx.map(one, progress_bar(range(models), desc="reference models",
                                        enabled=ctx.progress))
    reference = torch.stack([out["phi"] for out in outputs])
    target = query_scores(ctx.model, pool.x, pool.y, queries,
                          batch_size=params["batch_size"]).cpu()
    details.update(reference_models=models, pool=len(pool), queries=len(queries),
                   recipe=recipe.describe())
    if not 1 / _SIZE_RATIO <= (len(pool) / 2) / trained <= _SIZE_RATIO:
        findings.append(Finding(
            "warn", "reference_size",
            f"The reference models train on about {len(pool) // 2} samples (half the pool of "
            f"{len(pool)}), the model on {trained}: LiRA and RMIA then compare unlike models "
            "and can understate the leak. Fix: size 'reference_data' (and 'n') so that the "
            "pool holds about twice the model's training set."))
    # phi of the plain query, on the samples each model trained on against the others
    plain, inside = reference[:, 0], keep.to(reference.device)
    gap = float(plain[inside].mean() - plain[~inside].mean())
    details["reference_in_out_gap"] = gap
    if not gap > 0:
        findings.append(Finding(
            "warn", "reference_fit",
            f"The reference models fit their own training samples no better than the others "
            f"(mean phi gap {gap:.3f}): trained like this, they cannot show memorisation, and "
            "LiRA and RMIA understate the leak. Fix: make the [training] recipe the model's."))
    if params["variance"] == "per_example" and models < 4:
        findings.append(Finding("info", "lira_variance", f"With {models} reference models a "
                                "sample has fewer than 2 on a side, whose variance is not "
                                "defined: LiRA used the pooled variance."))
    wanted, scores = params["attacks"], {}
    on = (target[:, :targets], reference[:, :, :targets], keep[:, :targets])
    if "lira" in wanted:
        scores["lira"] = LiRA(online=True, variance=params["variance"])(*on)
    if "lira_offline" in wanted:
        scores["lira_offline"] = LiRA(online=False, variance=params["variance"])(*on)
    if "shadow" in wanted:
        shadow = torch.stack([out["log_probs"] for out in outputs])
        scores["shadow"] = ShadowModelAttack(seed=ctx.seed)(
            torch.log_softmax(logits.float(), dim=1), y[:targets], shadow, pool.y, keep)
    if "rmia" in wanted:
        rmia = RMIA(a=params["rmia_a"], gamma=params["rmia_gamma"])
        scores["rmia"] = rmia(*on, target[:, targets:], reference[:, :, targets:],
                              keep[:, targets:])
    return scores


def _metrics_of(attack: str, result: MembershipMetrics) -> dict[str, float]:
    auc, low, high = result.auc
    metrics = {f"auc@{attack}": auc, f"auc_ci_low@{attack}": low, f"auc_ci_high@{attack}": high,
               f"advantage@{attack}": result.advantage}
    for fpr, (tpr, tpr_low, tpr_high) in result.tpr.items():
        metrics[f"tpr_at_fpr_{fpr:g}@{attack}"] = tpr
        metrics[f"tpr_at_fpr_{fpr:g}_ci_low@{attack}"] = tpr_low
        metrics[f"tpr_at_fpr_{fpr:g}_ci_high@{attack}"] = tpr_high
    return metrics


def _findings(results: dict[str, MembershipMetrics], n1: int, n0: int) -> list[Finding]:
    """A warning naming the attacks that tell members apart beyond chance (AUC interval
    above 0.5, or a TPR at 0.1% FPR whose lower bound exceeds that FPR), and a note when
    too few non-members make a low FPR unmeasurable."""
    findings = []
    leaking = [attack for attack, r in results.items()
               if r.auc[1] > 0.5 or r.tpr[FPRS[0]][1] > FPRS[0]]
    if leaking:
        best = max(leaking, key=lambda a: results[a].tpr[FPRS[0]][0])
        findings.append(Finding(
            "warn", "membership_leak",
            f"Membership leaks: {', '.join(leaking)} tell members from non-members beyond "
            f"chance; {best} finds {results[best].tpr[FPRS[0]][0]:.1%} of the members at 0.1% "
            f"FPR (AUC {results[best].auc[0]:.3f})."))
    else:
        findings.append(Finding("info", "membership_leak",
                                "No attack told members from non-members beyond chance."))
    if n0 < 1 / FPRS[0]:
        findings.append(Finding(
            "info", "fpr_resolution",
            f"With {n0} non-members the smallest non-zero FPR is {1 / n0:.2%}: "
            f"tpr_at_fpr_{FPRS[0]:g} is the TPR at no false positive. Use 1,000 or more "
            "non-members to measure it."))
    if n1 < 100:
        findings.append(Finding("info", "few_members",
                                f"Only {n1} members: the TPR intervals are wide."))
    return findings


def _roc_plot(results: dict[str, MembershipMetrics], n1: int) -> Plot:
    """log10 TPR against log10 FPR per attack; a TPR of 0 is drawn at log10(1 / (2 n1)),
    below the smallest TPR the members can show."""
    first = next(iter(results.values()))
    x = [math.log10(f) for f in first.curve_fpr]
    floor = math.log10(1 / (2 * n1))
    series = {attack: [math.log10(t) if t > 0 else floor for t in r.curve_tpr]
              for attack, r in results.items()}
    return Plot("Membership inference ROC (log-log)", "log10 FPR",
                f"log10 TPR (0 drawn at {floor:.1f})", x, series, reference={"chance": x})
