"""Check ``dp_audit``: does the training hold the differential-privacy claim it makes?

One training run audited as in Steinke, Nasr & Jagielski, "Privacy Auditing with One (1)
Training Run" (NeurIPS 2023; :mod:`assay.attacks.privacy.one_run`): ``canaries`` samples
of ``--train-data`` are relabelled to a random other class (input-space canaries), each
included in the training set by a fair coin; the plan's ``[training]`` recipe trains a
fresh model on it, with DP-SGD at the claimed (``epsilon``, ``delta``) (``training =
"dp_sgd"``: the noise multiplier calibrated to the claim unless given, the clipping norm
``max_grad_norm``) or exactly as the recipe says (``training = "recipe"``: to audit a claim
made about it). Each canary is scored black-box by minus its loss on the canary label;
the ``k`` highest are guessed in, the ``k`` lowest out, and the right guesses give a lower
bound on epsilon at ``confidence`` (``guesses_per_side``: ``k``, or a Bonferroni-corrected
search).

Metrics: ``epsilon_lower_bound`` (the training is not (e, delta)-DP for any e below it,
at that confidence), ``passes_claim`` (1 when the bound is at most the claimed epsilon:
gate with ``passes_claim >= 1``), ``epsilon_ceiling`` (the most these canaries can show),
``claimed_epsilon``, the counts, and for DP-SGD the accountant's ``accounted_epsilon``
and the ``noise_multiplier``. The bound is a lower one: a pass does not prove the claim.
The model handed to the audit lends only its classes, normalisation and bounds: the
audit retrains (a cached piece, so a resumed audit does not train again).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from ..attacks.privacy.one_run import (CanaryRun, OneRunBound, canary_scores, insert_canaries,
                                       one_run_audit)
from ..attacks.privacy.reference import recipe_model, reference_seed
from ..core.training import TrainingRecipe, fit
from ..defenses.dp import plan_guarantee, private_training_problems, train_dp_sgd
from ..errors import AssayValueError
from ..results import HIGHER_FRACTION, LOWER_FRACTION, MetricInfo
from .base import Check, CheckContext, CheckOutput, Finding, Param, register

_EPSILON = MetricInfo("neutral", "epsilon", (0.0, None))
_COUNT = MetricInfo("neutral", "count", (0.0, None))
_COUNTS = ("canaries", "canaries_included", "guesses", "correct_guesses")
_DP_SGD_METRICS = ("accounted_epsilon", "noise_multiplier")
_EPSILON_MISSING = ("the 'epsilon' parameter must be the claimed epsilon, a number > 0. Fix: "
                    "set epsilon (e.g. epsilon = 8.0) in the check's params")


@register
class DPAuditCheck(Check):
    name = "dp_audit"
    pillar = "privacy"
    summary = ("Audit a claimed (epsilon, delta) in one training run with canaries: an "
               "empirical lower bound on epsilon (Steinke, Nasr & Jagielski 2023).")
    params = (
        Param("epsilon", "float", None, "the claimed epsilon (required)", low=0.0),
        Param("delta", "float", 1e-5, "the claimed delta", low=0.0, high=1.0),
        Param("canaries", "int", 1000, "canaries m, each in the training set with "
              "probability 1/2 (drawn from --train-data)", low=10),
        Param("confidence", "float", 0.95, "confidence of the lower bound, in (0, 1)",
              low=0.0, high=1.0),
        Param("training", "str", "dp_sgd", "how the audited run trains: DP-SGD at the claim, "
              "or the [training] recipe as it is", allowed=("dp_sgd", "recipe")),
        Param("noise_multiplier", "float", None, "DP-SGD's noise multiplier (None: calibrated "
              "to the claim)", low=0.0),
        Param("max_grad_norm", "float", 1.0, "DP-SGD's clipping norm", low=0.0),
        Param("accountant", "str", "rdp", "DP-SGD's accountant", allowed=("rdp", "pld")),
        Param("guesses_per_side", "int", None, "k: the k highest scores guessed in, the k "
              "lowest out; None searches halvings of m/2, Bonferroni-corrected", low=1),
        Param("batch_size", "int", 256, "inputs per forward pass when scoring", low=1),
    )

    declared_metrics = {
        "epsilon_lower_bound": MetricInfo("lower", "epsilon", (0.0, None)),
        "passes_claim": HIGHER_FRACTION,
        "guess_accuracy": LOWER_FRACTION,
        "claimed_epsilon": _EPSILON, "epsilon_ceiling": _EPSILON, "accounted_epsilon": _EPSILON,
        "noise_multiplier": MetricInfo("neutral", "", (0.0, None)),
        **{name: _COUNT for name in _COUNTS},
    }

    def metric_names(self, params: dict[str, Any]) -> list[str]:
        names = ["epsilon_lower_bound", "passes_claim", "claimed_epsilon", "epsilon_ceiling",
                 "guess_accuracy", *_COUNTS]
        return names + list(_DP_SGD_METRICS) if params["training"] == "dp_sgd" else names

    def validate_params(self, params: dict[str, Any]) -> list[str]:
        problems = []
        if params["epsilon"] == 0:
            problems.append(_EPSILON_MISSING)
        if params["confidence"] in (0.0, 1.0):
            problems.append(f"the 'confidence' parameter must lie strictly between 0 and 1. "
                            f"Got {params['confidence']:g} instead. Fix: e.g. confidence = 0.95")
        if params["delta"] == 1.0:
            problems.append("the 'delta' parameter must be below 1 (delta 1 claims nothing). "
                            "Fix: e.g. delta = 1e-5")
        if params["training"] == "dp_sgd":
            if params["delta"] == 0.0:
                problems.append("the 'delta' parameter must be > 0 for DP-SGD (the Gaussian "
                                "mechanism has no pure-DP guarantee). Fix: e.g. delta = 1e-5")
            for name in ("noise_multiplier", "max_grad_norm"):
                if params[name] == 0:
                    problems.append(f"the {name!r} parameter must be > 0. Fix: leave "
                                    "noise_multiplier out to calibrate it; max_grad_norm = 1.0")
        k = params["guesses_per_side"]
        if k is not None and 2 * k > params["canaries"]:
            problems.append(f"the 'guesses_per_side' parameter ({k}) needs 2 x {k} canaries; "
                            f"there are {params['canaries']}. Fix: at most canaries // 2, or "
                            "leave it out to search")
        return problems

    def validate_for(self, ctx: CheckContext, params: dict[str, Any]) -> list[str]:
        # a plan may leave the claim out (the defaults must resolve); no audit runs without it
        problems = [_EPSILON_MISSING] if params["epsilon"] is None else []
        if ctx.train_data is None:
            problems.append("the dp_audit check trains the audited run on the training data "
                            "with canaries among it. Fix: pass --train-data SPEC (train_data= "
                            "in run_audit)")
        elif params["canaries"] > len(ctx.train_data):
            problems.append(f"the 'canaries' parameter ({params['canaries']}) exceeds the "
                            f"{len(ctx.train_data)} training samples (--train-data "
                            f"{ctx.train_data.label}) they are drawn from. Fix: at most "
                            f"{len(ctx.train_data)} canaries, or more training data")
        if ctx.training is None:
            problems.append("the dp_audit check trains the audited run with the recipe of the "
                            "claim. Fix: add a [training] table to the plan (arch = 'mlp', "
                            "epochs = 10, batch_size = 64, lr = 0.001, ...)")
        if problems:
            return problems
        run = _canary_run(ctx, params)
        problem = _network_problem(ctx, params, run)
        if problem:
            return [problem]
        if params["training"] == "dp_sgd":
            try:
                _guarantee(ctx, params, len(run.train))
            except AssayValueError as err:
                problems.append(f"DP-SGD at the claim cannot train the audited run: {err}")
        return problems

    def run(self, ctx: CheckContext, params: dict[str, Any]) -> CheckOutput:
        if params["epsilon"] is None:  # validate_for refuses this before any work
            raise AssayValueError(_EPSILON_MISSING)
        run = _canary_run(ctx, params)
        m = params["canaries"]

        def decode(raw: Any) -> dict[str, Any]:
            if not (isinstance(raw, dict) and isinstance(raw.get("scores"), torch.Tensor)
                    and tuple(raw["scores"].shape) == (m,)
                    and bool(torch.isfinite(raw["scores"]).all())
                    and (raw.get("guarantee") is None or isinstance(raw["guarantee"], dict))):
                raise ValueError(f"the canary run must hold {m} finite scores")
            return raw

        trained = ctx.piece("canary training run", lambda: _train_and_score(ctx, params, run),
                            decode=decode)
        scores = trained["scores"].cpu().float()
        bound = one_run_audit(scores, run.included, delta=params["delta"],
                              confidence=params["confidence"], k=params["guesses_per_side"])
        claimed = params["epsilon"]
        metrics = {"epsilon_lower_bound": bound.epsilon,
                   "passes_claim": float(bound.epsilon <= claimed),
                   "claimed_epsilon": claimed, "epsilon_ceiling": bound.ceiling,
                   "guess_accuracy": bound.correct / bound.guesses,
                   "canaries": float(m), "canaries_included": float(run.included.sum()),
                   "guesses": float(bound.guesses), "correct_guesses": float(bound.correct)}
        guarantee = trained["guarantee"]
        if params["training"] == "dp_sgd":
            metrics.update(accounted_epsilon=guarantee["epsilon"],
                           noise_multiplier=guarantee["noise_multiplier"])
        recipe = ctx.training
        if recipe is None:  # validate_for refuses this before any work
            raise AssayValueError("dp_audit needs the plan's [training] recipe.")
        details = {"audit": bound.to_dict(), "recipe": recipe.describe(),
                   "training": params["training"], "guarantee": guarantee,
                   "training_samples": len(run.train),
                   "canary_fit_in": _fit_share(scores, run.included),
                   "canary_fit_out": _fit_share(scores, ~run.included)}
        return CheckOutput(metrics, _findings(bound, params, guarantee, recipe, len(run.train)),
                           [], details=details)


def _canary_run(ctx: CheckContext, params: dict[str, Any]) -> CanaryRun:
    """The audited training set: the same canaries and coins for the same audit seed."""
    if ctx.train_data is None:  # validate_for refuses this before any work
        raise AssayValueError("dp_audit needs the training data: pass --train-data.")
    return insert_canaries(ctx.train_data, params["canaries"], ctx.model.num_classes,
                           seed=ctx.seed)


def _network_problem(ctx: CheckContext, params: dict[str, Any], run: CanaryRun) -> str | None:
    """Why the recipe's network cannot be trained on this data (one forward and backward
    pass on two samples; for DP-SGD, also a layer without per-sample gradients)."""
    recipe = ctx.training
    if recipe is None:
        return None
    try:
        model = recipe_model(recipe, run.train, ctx.model, seed=0, name="dp_audit probe")
        x, y = run.train.x[:2].to(ctx.model.device), run.train.y[:2].to(ctx.model.device)
        torch.nn.functional.cross_entropy(model(x), y).backward()
    except (AssayValueError, RuntimeError, ValueError) as err:
        return (f"the [training] recipe (arch {recipe.arch!r}) cannot train on inputs of shape "
                f"{list(run.train.input_shape)} with {ctx.model.num_classes} classes: "
                f"{str(err).rstrip('.')}. Fix: set [training] arch to the model's architecture")
    if params["training"] == "dp_sgd":
        dp_problems = private_training_problems(model)
        if dp_problems:
            return "DP-SGD cannot train the [training] recipe's network: " + " ".join(dp_problems)
    return None


def _guarantee(ctx: CheckContext, params: dict[str, Any], n: int) -> Any:
    recipe = ctx.training
    if recipe is None:  # validate_for refuses this before any work
        raise AssayValueError("dp_audit needs the plan's [training] recipe.")
    return plan_guarantee(n, epsilon=params["epsilon"], delta=params["delta"],
                          config=recipe.config, max_grad_norm=params["max_grad_norm"],
                          noise_multiplier=params["noise_multiplier"],
                          accountant=params["accountant"])


def _train_and_score(ctx: CheckContext, params: dict[str, Any], run: CanaryRun
                     ) -> dict[str, Any]:
    """Train the audited run on ``run.train`` and score its canaries (a cached piece): the
    weights, batches and DP-SGD noise seeded from the audit's seed."""
    recipe = ctx.training
    if recipe is None:  # validate_for refuses this before any work
        raise AssayValueError("dp_audit needs the plan's [training] recipe.")
    seed = reference_seed(ctx.seed, 0)
    model = recipe_model(recipe, run.train, ctx.model, seed=seed, name="dp_audit run")
    guarantee = None
    if params["training"] == "dp_sgd":
        result = train_dp_sgd(model, run.train, epsilon=params["epsilon"],
                              delta=params["delta"], max_grad_norm=params["max_grad_norm"],
                              noise_multiplier=params["noise_multiplier"],
                              accountant=params["accountant"], config=recipe.config, seed=seed,
                              show_progress=False)
        guarantee = result.guarantee.to_dict()
    else:
        fit(model, run.train, dataclasses.replace(recipe.config, seed=seed),
            show_progress=False)
    return {"scores": canary_scores(model, run, batch_size=params["batch_size"]),
            "guarantee": guarantee}


def _fit_share(scores: torch.Tensor, mask: torch.Tensor) -> float | None:
    """The share of the masked canaries the run predicts with their canary label (minus
    the loss above log 2: probability above 1/2)."""
    if not bool(mask.any()):
        return None
    return float((scores[mask] > -torch.log(torch.tensor(2.0))).float().mean())


def _findings(bound: OneRunBound, params: dict[str, Any], guarantee: dict[str, Any] | None,
              recipe: TrainingRecipe, samples: int) -> list[Finding]:
    claimed, delta = params["epsilon"], params["delta"]
    level = f"{bound.confidence:.0%}"
    how = (f"{bound.correct} of {bound.guesses} guesses right ({bound.k} highest-scored canaries "
           f"guessed in, {bound.k} lowest out, of {bound.canaries})")
    findings = []
    if bound.epsilon > claimed:
        findings.append(Finding(
            "warn", "dp_claim_violated",
            f"The claim fails: with {level} confidence the training is not "
            f"({bound.epsilon:.2f}, {delta:g})-DP, and so not ({claimed:g}, {delta:g})-DP as "
            f"claimed; {how}."))
    else:
        findings.append(Finding(
            "info", "dp_claim_not_refuted",
            f"No violation found: the lower bound on epsilon is {bound.epsilon:.2f} at {level} "
            f"confidence, at most the claimed {claimed:g}; {how}. A lower bound from one run: "
            "passing does not prove the claim."))
    if guarantee is None and bound.epsilon <= claimed:
        findings.append(Finding(
            "warn", "dp_no_noise",
            "The audited run trains as the [training] recipe says, without noise: such a "
            "training is (epsilon, delta)-DP for no useful epsilon by construction, whatever "
            "this one run shows. The bound is only what canaries revealed of it; audit the "
            "private training itself (training = 'dp_sgd')."))
    if bound.ceiling <= claimed:
        findings.append(Finding(
            "warn", "dp_audit_cannot_refute",
            f"This audit could not have failed: with {bound.canaries} canaries at {level} "
            f"confidence the bound is at most {bound.ceiling:.2f} (every guess right), not above "
            f"the claimed epsilon {claimed:g}, so its pass says nothing about the claim. More "
            "canaries raise the ceiling slowly, and with delta > 0 hardly at all (the delta "
            "term grows with m: 10,000 canaries reach 5.8 at delta 1e-5)."))
    how_trained = ("as the [training] recipe says (no noise)" if guarantee is None else
                   f"with DP-SGD: noise multiplier {guarantee['noise_multiplier']:.3g}, clipping "
                   f"norm {guarantee['max_grad_norm']:g}, {guarantee['steps']} steps at sampling "
                   f"rate {guarantee['sample_rate']:.3g}; the {guarantee['accountant']} "
                   f"accountant gives epsilon {guarantee['epsilon']:.3g}")
    findings.append(Finding(
        "info", "audited_run",
        f"The audit trained its own run of the [training] recipe ({recipe.arch}) on "
        f"{samples} samples of --train-data with the included canaries, {how_trained}. It "
        "audits that training, not the model file, which lent only its classes and "
        "normalisation."))
    return findings
