"""Check ``attribute_inference``: can an attacker who knows a training row's other
features and its label recover a sensitive attribute of it from the model, better than
from the data alone?

For each named sensitive attribute that the model reads as an input feature (a tabular
schema says which), :class:`~assay.attacks.privacy.AttributeInference` (Fredrikson et al.
2014, Yeom et al. 2018) tries every value and keeps the most probable given the model's
output on the row's label. It runs on the members (``--train-data``, the rows the model
was trained on) and on non-members (a seeded half of ``--data``); the other half of
``--data`` is the attacker's public rows, which give each value's prior and train the
imputation baseline (Jayaraman & Evans 2022: the attribute predicted from the other
features and the label, without the model).

Metrics per attribute A: ``attack_accuracy@A`` (on members),
``attack_accuracy_nonmembers@A``, ``baseline_accuracy@A`` and
``baseline_accuracy_nonmembers@A`` (the imputation baseline), ``majority_accuracy@A``
(always guessing the public rows' most common value), ``advantage@A`` (attack accuracy
on members minus on non-members: what the model memorised of its training rows; Yeom et
al.) and ``gain_over_baseline@A`` (attack minus baseline accuracy on members: what the
model tells beyond the data). Lower is better for the attack's metrics.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..attacks.privacy.attribute_inference import (AttributeInference, ImputationBaseline,
                                                   attribute_column, value_prior)
from ..errors import AssayValueError
from ..results import LOWER_FRACTION, MetricInfo
from .base import Check, CheckContext, CheckOutput, Finding, Param, Plot, register
from .privacy import _shared_rows

_PER_ATTRIBUTE = ("attack_accuracy", "attack_accuracy_nonmembers", "baseline_accuracy",
                  "baseline_accuracy_nonmembers", "majority_accuracy", "advantage",
                  "gain_over_baseline")
_NEUTRAL = MetricInfo("neutral", "fraction", (0.0, 1.0))
_DIFFERENCE = MetricInfo("lower", "fraction", (-1.0, 1.0))
_MIN_PUBLIC = 20  # public rows below this make neither a prior nor an imputer


@register
class AttributeInferenceCheck(Check):
    name = "attribute_inference"
    pillar = "privacy"
    summary = ("Attribute inference: accuracy of recovering a sensitive input attribute of "
               "training rows from the model, against an imputation baseline and on "
               "non-members (Fredrikson et al. 2014, Yeom et al. 2018).")
    params = (
        Param("attributes", "list[str]", None, "sensitive attributes to infer (default: every "
              "one of the data's that the model reads as an input feature)"),
        Param("n", "int", 1000, "use the first n members and up to n non-members", low=1),
        Param("prior", "bool", True, "weigh each value by its public prior (Fredrikson et "
              "al.); false: the lowest loss alone (Yeom et al.)"),
        Param("baseline_epochs", "int", 20, "training epochs of the imputation baseline",
              low=1),
        Param("batch_size", "int", 1024, "rows per forward pass", low=1),
    )

    declared_metrics = {
        "attack_accuracy@*": LOWER_FRACTION, "attack_accuracy_nonmembers@*": LOWER_FRACTION,
        "baseline_accuracy@*": _NEUTRAL, "baseline_accuracy_nonmembers@*": _NEUTRAL,
        "majority_accuracy@*": _NEUTRAL, "advantage@*": _DIFFERENCE,
        "gain_over_baseline@*": _DIFFERENCE,
        "members": MetricInfo("neutral", "count", (0.0, None)),
        "nonmembers": MetricInfo("neutral", "count", (0.0, None)),
        "public": MetricInfo("neutral", "count", (0.0, None))}

    def metric_names(self, params: dict[str, Any]) -> list[str]:
        names = params["attributes"] or ["*"]  # the default names the data's attributes
        return ["members", "nonmembers", "public"] + [
            f"{metric}@{attribute}" for attribute in names for metric in _PER_ATTRIBUTE]

    def validate_for(self, ctx: CheckContext, params: dict[str, Any]) -> list[str]:
        schema = ctx.data.schema
        if schema is None:
            return [f"attribute_inference infers a sensitive input feature of tabular rows; "
                    f"--data {ctx.data.label} has no tabular schema (images, or an .npz "
                    "without one). Fix: audit a tabular model on a CSV or a named tabular "
                    "set (adult, german, compas) with --sensitive"]
        if ctx.train_data is None:
            return ["the attribute_inference check attacks the model's training rows (the "
                    "members). Fix: pass --train-data SPEC (train_data= in run_audit); "
                    "--data holds the non-members and the attacker's public rows"]
        problems = []
        try:
            attributes = _attributes(ctx, params)
        except AssayValueError as err:
            return [str(err).rstrip(".")]
        for attribute in attributes:
            for flag, data in (("--data", ctx.data), ("--train-data", ctx.train_data)):
                if attribute not in data.attributes:
                    problems.append(f"{flag} {data.label} does not carry the sensitive "
                                    f"attribute {attribute!r}, so the attack cannot be scored. "
                                    f"Fix: load it with --sensitive {attribute}")
            entry = {s.name: s for s in schema.sensitive}.get(attribute)
            if entry is not None and len(entry.values) < 2:
                problems.append(f"the sensitive attribute {attribute!r} has a single value "
                                f"{list(entry.values)}: there is nothing to infer")
        if len(ctx.data) < 2 * _MIN_PUBLIC:
            problems.append(f"--data {ctx.data.label} has {len(ctx.data)} rows; half are the "
                            f"attacker's public rows and half non-members, and {_MIN_PUBLIC} "
                            "public rows at least are needed. Fix: pass more held-out rows")
        members = ctx.train_data.subset(params["n"])
        shared = _shared_rows(members.x, ctx.data.x)
        if shared:
            problems.append(f"{shared} rows of --data {ctx.data.label} are also among the "
                            f"members (--train-data {members.label}): the non-members and "
                            "public rows must be rows the model was not trained on. Fix: "
                            "pass held-out data as --data")
        return problems

    def run(self, ctx: CheckContext, params: dict[str, Any]) -> CheckOutput:
        if ctx.train_data is None or ctx.data.schema is None:  # refused by validate_for
            raise AssayValueError("attribute_inference needs tabular --data and --train-data.")
        schema = ctx.data.schema
        members = ctx.train_data.subset(params["n"])
        public_index, held = ctx.data.split_indices(0.5, seed=ctx.seed)
        public, nonmembers = ctx.data.take(public_index), ctx.data.take(held[:params["n"]])
        attack = AttributeInference(prior=params["prior"], batch_size=params["batch_size"])
        metrics: dict[str, float] = {"members": float(len(members)),
                                     "nonmembers": float(len(nonmembers)),
                                     "public": float(len(public))}
        findings: list[Finding] = []
        details: dict[str, Any] = {"members": len(members), "nonmembers": len(nonmembers),
                                   "public": len(public), "prior": params["prior"]}
        for name in _attributes(ctx, params):
            column = attribute_column(schema, name, public)
            values = len(column.values)
            public_codes = public.attributes[name]
            known = public_codes < values  # a value unseen in training has no candidate
            prior = value_prior(public_codes[known], values)
            guess = {role: attack(ctx.model, data.x, data.y, column, prior)
                     for role, data in (("members", members), ("nonmembers", nonmembers))}

            def imputed(column=column, known=known, name=name) -> dict[str, torch.Tensor]:
                baseline = ImputationBaseline(epochs=params["baseline_epochs"], seed=ctx.seed)
                both = baseline(schema, column, (public.x[known], public.y[known],
                                                 public.attributes[name][known]),
                                (torch.cat([members.x, nonmembers.x]),
                                 torch.cat([members.y, nonmembers.y])))
                return {"members": both[:len(members)], "nonmembers": both[len(members):]}

            baseline = ctx.piece(f"imputation baseline {name}", imputed,
                                 decode=_decoder(len(members), len(nonmembers), values))
            majority = int(prior.argmax())
            truth = {"members": members.attributes[name], "nonmembers": nonmembers.attributes[name]}
            rate = {f"{kind}_{role}": float((g[role] == truth[role]).double().mean())
                    for kind, g in (("attack", guess), ("baseline", baseline))
                    for role in truth}
            result = {
                "attack_accuracy": rate["attack_members"],
                "attack_accuracy_nonmembers": rate["attack_nonmembers"],
                "baseline_accuracy": rate["baseline_members"],
                "baseline_accuracy_nonmembers": rate["baseline_nonmembers"],
                "majority_accuracy": float((truth["members"] == majority).double().mean()),
                "advantage": rate["attack_members"] - rate["attack_nonmembers"],
                "gain_over_baseline": rate["attack_members"] - rate["baseline_members"]}
            metrics.update({f"{metric}@{name}": value for metric, value in result.items()})
            details[name] = {"values": list(column.values), "majority": column.values[majority]}
            findings += _findings(name, guess, baseline, truth, result)
        return CheckOutput(metrics, findings, [_plot(metrics, _attributes(ctx, params))],
                           details=details)


def _attributes(ctx: CheckContext, params: dict[str, Any]) -> list[str]:
    """The attributes to infer: the named ones, each an input feature of the model, or
    by default every sensitive attribute of the schema that is one."""
    schema = ctx.data.schema
    inputs = [s.name for s in schema.sensitive if s.column in schema.feature_names]
    if params["attributes"] is None:
        if not inputs:
            raise AssayValueError(
                f"--data {ctx.data.label} has no sensitive attribute that the model reads as "
                f"an input feature (sensitive: {', '.join(schema.sensitive_names) or 'none'}). "
                "Fix: load the data with --sensitive naming a feature column")
        return inputs
    for name in params["attributes"]:
        if name not in schema.sensitive_names:
            raise AssayValueError(
                f"the 'attributes' parameter names {name!r}, which is not a sensitive "
                f"attribute of --data {ctx.data.label} (it has: "
                f"{', '.join(schema.sensitive_names) or 'none'}). Fix: name one of those, or "
                f"load the data with --sensitive {name}")
        if name not in inputs:
            column = {s.name: s.column for s in schema.sensitive}[name]
            raise AssayValueError(
                f"the 'attributes' parameter names {name!r}, whose column {column!r} is not an "
                "input feature of the model: its outputs say nothing of it directly. Fix: "
                f"name an attribute the model reads ({', '.join(inputs) or 'none'})")
    return list(params["attributes"])


def _decoder(members: int, nonmembers: int, values: int):
    shapes = {"members": members, "nonmembers": nonmembers}

    def decode(raw: Any) -> dict[str, torch.Tensor]:
        if not (isinstance(raw, dict) and set(raw) == set(shapes) and all(
                isinstance(raw[k], torch.Tensor) and raw[k].shape == (n,)
                and (n == 0 or 0 <= int(raw[k].min()) <= int(raw[k].max()) < values)
                for k, n in shapes.items())):
            raise ValueError(f"imputed codes must be {shapes} values below {values}")
        return {k: v.long() for k, v in raw.items()}

    return decode


def _findings(name: str, guess: dict[str, torch.Tensor], baseline: dict[str, torch.Tensor],
              truth: dict[str, torch.Tensor], result: dict[str, float]) -> list[Finding]:
    """A warning when the attack beats the imputation baseline on the members, or does
    better on members than on non-members, by more than two standard errors."""
    correct = {role: (guess[role] == truth[role]).double() for role in truth}
    paired = correct["members"] - (baseline["members"] == truth["members"]).double()
    gain_se = float(paired.std() / math.sqrt(len(paired))) if len(paired) > 1 else math.inf
    spread = sum(float(c.var()) / len(c) for c in correct.values() if len(c) > 1)
    advantage_se = math.sqrt(spread) if spread > 0 else 0.0
    found = []
    gain, advantage = result["gain_over_baseline"], result["advantage"]
    if gain > 2 * gain_se:
        found.append(Finding(
            "warn", "attribute_leak",
            f"The model gives away {name!r}: the attack recovers it for "
            f"{result['attack_accuracy']:.1%} of the training rows, the imputation baseline "
            f"(the data alone) for {result['baseline_accuracy']:.1%} (+{gain:.1%})."))
    if advantage > 2 * advantage_se:
        found.append(Finding(
            "warn", "attribute_memorised",
            f"The attack recovers {name!r} better on training rows than on others "
            f"({result['attack_accuracy']:.1%} against "
            f"{result['attack_accuracy_nonmembers']:.1%}): the model memorised it."))
    if not found:
        found.append(Finding(
            "info", "attribute_leak",
            f"Inferring {name!r} through the model ({result['attack_accuracy']:.1%} of "
            f"training rows) does no better than the data alone "
            f"({result['baseline_accuracy']:.1%}) beyond chance."))
    return found


def _plot(metrics: dict[str, float], attributes: list[str]) -> Plot:
    labels = {"attack (members)": "attack_accuracy",
              "attack (non-members)": "attack_accuracy_nonmembers",
              "imputation baseline": "baseline_accuracy",
              "majority value": "majority_accuracy"}
    return Plot("Attribute inference accuracy", "attribute", "share of rows recovered",
                list(attributes),
                {label: [metrics[f"{metric}@{a}"] for a in attributes]
                 for label, metric in labels.items()}, kind="bar")
