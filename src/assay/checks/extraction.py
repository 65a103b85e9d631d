"""Check ``model_extraction``: how faithful a copy can an attacker train from the model's
answers to a budget of queries?

The attacker queries the model (Knockoff Nets, Orekondy et al. 2019: its probabilities;
Copycat CNN, Correia-Silva et al. 2018: ``output = "labels"``, its top label only) and
trains a copy on the answers (:mod:`assay.attacks.privacy.extraction`). Queries
(``query_data``) are samples of the evaluation split (``"data"``: a seeded ``1 - holdout``
of it, the rest held out), a named data set or ``.npz`` file (a transfer set, possibly of
another domain), or noise in the model's input bounds (``"uniform"``, ``"gaussian"``).
With ``strategy = "adaptive"`` the queries are chosen by Knockoff's gradient bandit over
the query data's labels (:class:`assay.attacks.privacy.AdaptiveSampling`); the report's
details give the share of queries each label drew. The copy follows the plan's
``[training]`` recipe (``arch`` overrides its architecture),
or without one the zoo's ``small_cnn`` for images and ``mlp`` for rows, trained for 30
epochs (batch 32, Adam at 1e-3).

Metrics per budget B (``budgets``, nested: each copy's queries include the smaller
budgets'): ``fidelity@queries=B``, the share of held-out evaluation inputs on which the
copy predicts what the model does (Tramer et al. 2016), and ``copy_accuracy@queries=B``,
its accuracy on their labels; lower is better for the model. ``model_accuracy`` is the
model's own accuracy there. Each copy is a cached piece, trained through the executor.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..attacks.privacy.extraction import (NOISE_QUERIES, AdaptiveSampling, KnockoffNets,
                                          agreement, noise_queries, query_order)
from ..core import zoo
from ..core.data import Dataset, check_data_spec, load_data, npz_path
from ..core.progress import progress_bar
from ..core.rng import seeded_generator
from ..core.training import TrainConfig, TrainingRecipe
from ..errors import AssayValueError
from ..results import HIGHER_FRACTION, LOWER_FRACTION, MetricInfo
from .base import Check, CheckContext, CheckOutput, Finding, Param, Plot, register

#: The copy's training without a ``[training]`` recipe (Knockoff trains for many epochs on
#: its transfer set; 30 small-batch epochs fit a few hundred queries on the zoo's nets).
DEFAULT_TRAINING = TrainConfig(epochs=30, batch_size=32, lr=1e-3)
_MARGIN = 0.02  # a copy this close to a constant's fidelity learned nothing


@register
class ModelExtractionCheck(Check):
    name = "model_extraction"
    pillar = "privacy"
    summary = ("Model extraction: fidelity and accuracy of a copy trained on the model's "
               "answers, per query budget (Knockoff Nets, Orekondy et al. 2019; Copycat CNN, "
               "Correia-Silva et al. 2018).")
    params = (
        Param("budgets", "list[int]", [100, 300, 1000], "query budgets; one copy each",
              low=1),
        Param("query_data", "str", "data", "where queries come from: 'data' (part of --data), "
              "'uniform' or 'gaussian' noise in the model's bounds, or a data spec / .npz "
              "(its labels are used by the adaptive strategy only)"),
        Param("strategy", "str", "random", "how queries are drawn from query data: at random, "
              "or 'adaptive' (Knockoff's gradient bandit over the query data's labels, which "
              "learns which labels the copy gains from; needs labelled query data, not "
              "noise)", allowed=("random", "adaptive")),
        Param("output", "str", "probabilities", "what the model answers: its probabilities "
              "(Knockoff) or its top label (Copycat)", allowed=("probabilities", "labels")),
        Param("holdout", "float", 0.5, "share of --data held out to measure fidelity when "
              "query_data is 'data' (otherwise all of it is)", low=0.05, high=0.95),
        Param("arch", "str", None, "the copy's zoo architecture (default: the [training] "
              "recipe's, else small_cnn for images and mlp for rows)"),
        Param("batch_size", "int", 256, "inputs per forward pass", low=1),
    )

    declared_metrics = {"fidelity@queries=*": LOWER_FRACTION,
                        "copy_accuracy@queries=*": LOWER_FRACTION,
                        "model_accuracy": HIGHER_FRACTION,
                        "evaluated": MetricInfo("neutral", "count", (0.0, None))}

    def metric_names(self, params: dict[str, Any]) -> list[str]:
        return ["model_accuracy", "evaluated"] + [
            f"{metric}@queries={budget}" for budget in params["budgets"]
            for metric in ("fidelity", "copy_accuracy")]

    def input_files(self, params: dict[str, Any]) -> list[str]:
        path = _is_spec(params["query_data"]) and npz_path(params["query_data"])
        return [path] if path else []

    def validate_params(self, params: dict[str, Any]) -> list[str]:
        problems = []
        if _is_spec(params["query_data"]):
            try:
                check_data_spec(params["query_data"], files=False)
            except AssayValueError as err:
                problems.append(f"the 'query_data' parameter must be 'data', "
                                f"{' or '.join(repr(n) for n in NOISE_QUERIES)} or a data "
                                f"spec: {err}")
        if params["strategy"] == "adaptive" and params["query_data"] in NOISE_QUERIES:
            problems.append(f"the 'strategy' parameter 'adaptive' chooses queries by the "
                            f"labels of the query data, and {params['query_data']!r} noise "
                            "has none. Fix: set 'query_data' to 'data' or a labelled data "
                            "set, or 'strategy' to 'random'")
        if params["arch"] is not None:
            if params["arch"] not in zoo.ARCHITECTURES:
                problems.append(f"the 'arch' parameter must be one of "
                                f"{sorted(zoo.ARCHITECTURES)}. Got {params['arch']!r} instead")
        return problems

    def validate_for(self, ctx: CheckContext, params: dict[str, Any]) -> list[str]:
        try:
            pool, evaluation = _split(ctx, params)
        except AssayValueError as err:
            where = "'holdout'" if params["query_data"] == "data" else "'query_data'"
            return [f"the {where} parameter: {err}"]
        problems = []
        if pool is not None and max(params["budgets"]) > len(pool):
            problems.append(f"the 'budgets' parameter asks for {max(params['budgets'])} "
                            f"queries, but the query data has {len(pool)} samples. Fix: lower "
                            "the budgets, or set 'query_data' to a larger data set or to "
                            "'uniform' noise")
        if len(evaluation) == 0:
            problems.append("no evaluation samples are left to measure fidelity on. Fix: "
                            "lower 'holdout' or pass more --data")
        recipe = _recipe(ctx, params)
        problem = _recipe_problem(ctx, recipe)
        if problem:
            problems.append(problem)
        return problems

    def run(self, ctx: CheckContext, params: dict[str, Any]) -> CheckOutput:
        budgets = sorted(params["budgets"])
        pool, evaluation = _split(ctx, params)
        largest = budgets[-1]
        attack = KnockoffNets(output=params["output"], batch_size=params["batch_size"])
        recipe = _recipe(ctx, params)
        shares: dict[str, float] = {}  # of the queries the bandit drew from each label
        if params["strategy"] == "adaptive" and pool is not None:  # one answer per query
            chosen = AdaptiveSampling().select(attack, ctx.model, pool, largest, recipe,
                                               seed=ctx.seed)
            queries, answers = pool.x[chosen.order], chosen.answers
            shares = {(pool.classes[k] if k < len(pool.classes) else str(k)): round(float(s), 4)
                      for k, s in enumerate(chosen.shares)}
        else:
            if pool is None:
                queries = noise_queries(params["query_data"], largest, ctx.data.input_shape,
                                        ctx.model.bounds, seeded_generator(ctx.seed))
            else:
                queries = pool.x[query_order(len(pool), ctx.seed)[:largest]]
            answers = attack.answers(ctx.model, queries.to(ctx.model.device))
        victim = ctx.model.predict(evaluation.x.to(ctx.model.device),
                                   batch_size=params["batch_size"]).cpu()
        labels = evaluation.y.cpu()

        def decode(raw: Any) -> torch.Tensor:
            if not (isinstance(raw, torch.Tensor) and raw.shape == victim.shape
                    and 0 <= int(raw.min()) and int(raw.max()) < ctx.model.num_classes):
                raise ValueError(f"a copy's predictions must be {list(victim.shape)} labels")
            return raw.long()

        def one(budget: int) -> torch.Tensor:
            def train() -> torch.Tensor:
                copy = attack.copy(ctx.model, queries, answers, recipe, budget=budget,
                                   seed=ctx.seed, schema=ctx.data.schema)
                return copy.predict(evaluation.x.to(copy.device),
                                    batch_size=params["batch_size"]).cpu()
            return ctx.piece(f"copy queries={budget}", train, decode=decode)

        copies = ctx.map(one, progress_bar(budgets, desc="extraction copies",
                                           enabled=ctx.progress))
        fidelity = [agreement(copy, victim) for copy in copies]
        accuracy = [agreement(copy, labels) for copy in copies]
        own = agreement(victim, labels)
        metrics = {"model_accuracy": own, "evaluated": float(len(labels))}
        for budget, f, a in zip(budgets, fidelity, accuracy):
            metrics[f"fidelity@queries={budget}"] = f
            metrics[f"copy_accuracy@queries={budget}"] = a
        # the fidelity of a copy that always says the model's most common answer
        constant = float(torch.bincount(victim).max()) / len(victim)
        details = {"query_data": params["query_data"], "output": params["output"],
                   "strategy": params["strategy"], "recipe": recipe.describe(),
                   "evaluated": len(labels), "constant_fidelity": constant}
        if shares:
            details["queries_per_label"] = shares
        # budgets span decades and the report's axes are linear: log10 of the budget
        x = [math.log10(b) for b in budgets]
        plot = Plot("Extraction: the copy against the query budget", "log10 queries",
                    "share of held-out inputs", x,
                    {"fidelity": fidelity, "copy accuracy": accuracy},
                    reference={"model accuracy": [own] * len(budgets),
                               "constant copy fidelity": [constant] * len(budgets)},
                    points={f"{m}@queries={b}": [label, at] for b, at in zip(budgets, x)
                            for m, label in (("fidelity", "fidelity"),
                                             ("copy_accuracy", "copy accuracy"))})
        return CheckOutput(metrics, _findings(budgets, fidelity, accuracy, own, constant),
                           [plot], details=details)


def _is_spec(query_data: str) -> bool:
    return query_data != "data" and query_data not in NOISE_QUERIES


def _split(ctx: CheckContext, params: dict[str, Any]) -> tuple[Dataset | None, Dataset]:
    """The attacker's query pool (None for noise) and the held-out evaluation samples."""
    source = params["query_data"]
    if source == "data":
        rest, held = ctx.data.split_indices(1 - params["holdout"], seed=ctx.seed)
        return ctx.data.take(rest, "queries"), ctx.data.take(held, "held-out")
    if source in NOISE_QUERIES:
        return None, ctx.data
    pool = load_data(source, data_root=ctx.data_root, default_split="train",
                     schema=ctx.data.schema)
    if pool.input_shape != ctx.data.input_shape:
        raise AssayValueError(f"{pool.label} has inputs of shape {list(pool.input_shape)}, the "
                              f"model takes {list(ctx.data.input_shape)}. Fix: pass a data set "
                              "of the model's input shape")
    return pool, ctx.data


def _recipe(ctx: CheckContext, params: dict[str, Any]) -> TrainingRecipe:
    """The copy's architecture and training: ``arch`` over the plan's recipe, which
    without one is the default for the data's shape."""
    if ctx.training is not None:
        arch = params["arch"] or ctx.training.arch
        return TrainingRecipe(arch, ctx.training.config)
    default = "small_cnn" if len(ctx.data.input_shape) == 3 else "mlp"
    return TrainingRecipe(params["arch"] or default, DEFAULT_TRAINING)


def _recipe_problem(ctx: CheckContext, recipe: TrainingRecipe) -> str | None:
    """Why ``recipe``'s network cannot learn from this data (built for its shape and class
    count, one forward and backward pass on two samples), or None."""
    x = ctx.data.x[:2]
    try:
        net = zoo.build(recipe.arch, input_shape=ctx.data.input_shape,
                        num_classes=ctx.model.num_classes, seed=0, schema=ctx.data.schema)
        net(x).sum().backward()
    except (AssayValueError, RuntimeError, ValueError) as err:
        return (f"the copy's architecture {recipe.arch!r} cannot take inputs of shape "
                f"{list(ctx.data.input_shape)} with {ctx.model.num_classes} classes: "
                f"{str(err).rstrip('.')}. Fix: set the 'arch' parameter or [training] arch "
                "to one that fits ('mlp' for tabular rows)")
    return None


def _findings(budgets: list[int], fidelity: list[float], accuracy: list[float], own: float,
              constant: float) -> list[Finding]:
    """What the curve says: how close the largest copy came, and a warning when it
    learned no more than a constant (then a low fidelity shows nothing about the model)."""
    b, f, a = budgets[-1], fidelity[-1], accuracy[-1]
    findings = [Finding("info", "extraction",
                        f"After {b} queries the copy predicts what the model does on {f:.1%} "
                        f"of held-out inputs, with accuracy {a:.1%} (the model's {own:.1%}).")]
    if f <= constant + _MARGIN:
        findings.append(Finding(
            "warn", "copy_not_learning",
            f"The copy of {b} queries agrees with the model ({f:.1%}) hardly more than a "
            f"constant prediction of its most common class would ({constant:.1%}): its low "
            "fidelity does not show that the model resists extraction. Fix: more queries, "
            "other 'query_data', or a copy architecture and training that can learn the "
            "task."))
    elif len(budgets) > 1 and fidelity[-1] < fidelity[0]:
        findings.append(Finding(
            "info", "fidelity_not_rising",
            f"Fidelity fell from {fidelity[0]:.1%} at {budgets[0]} queries to {f:.1%} at "
            f"{b}: copy training is noisy at these sizes."))
    return findings
