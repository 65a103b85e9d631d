"""Check ``poisoning_resilience``: how fast does a training pipeline learn a backdoor from
poisoned data, and do the data-side defenses catch the poison?

The pipeline is the audit's training recipe (the plan's ``[training]`` table) on its
training data (``--train-data``); the audited model only lends its normalisation and
bounds. For each backdoor attack of ``attacks`` (:data:`assay.attacks.poisoning.
POISONING_ATTACKS`: BadNets, Blended, WaNet, label-consistent, at their papers' settings,
all-to-one to ``target``) and each poisoning rate of ``rates``, one model is trained by
the recipe on the poisoned training data, and on the first ``n`` evaluation samples:

- ``asr@ATTACK:rate=R``: the attack success rate, the share of triggered inputs (of the
  classes other than the target) classified as the target;
- ``clean_accuracy@ATTACK:rate=R``: accuracy on clean inputs;
- for each data-side defense of ``defenses`` (Spectral Signatures, Tran et al. 2018;
  Activation Clustering, Chen et al. 2019), run on the poisoned training data with the
  poisoned model: ``tpr@ATTACK:rate=R:DEFENSE`` and ``fpr@...`` (flagged poison, flagged
  clean samples), and with ``retrain`` (default on) the model trained again without the
  flagged samples: ``asr_after_removal@...`` and ``clean_accuracy_after_removal@...``.

Besides: ``clean_accuracy`` of the recipe on the clean training data and ``max_asr``, the
largest ASR over attacks and rates (a gate such as ``max_asr <= 0.2`` fails a pipeline
that learns a backdoor from the poison it was shown). Each (attack, rate) is a cache piece
mapped through the audit's executor, so the trainings run side by side on Ray and a killed
check resumes at its first missing one. The report plots ASR against the poisoning rate
for each attack (and after each defense's removal) and shows each trigger on test images.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch

from ..attacks.poisoning import POISONING_ATTACKS, BackdoorAttack
from ..attacks.privacy.reference import recipe_model
from ..core.dataset import Dataset
from ..core.images import gallery
from ..core.inference import batched_predict
from ..core.model import ModelWrapper
from ..core.progress import progress_bar
from ..core.training import TrainingRecipe, fit
from ..defenses.backdoor import ActivationClustering, SpectralSignatures
from ..defenses.backdoor.scan import LabelScan
from ..errors import AssayValueError
from ..results import HIGHER_FRACTION, LOWER_FRACTION, MAX_GALLERY_IMAGES
from .base import Check, CheckContext, CheckOutput, Finding, Param, Plot, register

BACKDOORS = ("badnets", "blended", "wanet", "label_consistent")
DEFENSES = {"spectral_signatures": SpectralSignatures,
            "activation_clustering": ActivationClustering}
LEARNT = 0.5  # an ASR from which the backdoor counts as learnt (a finding)
TRIGGER_SAMPLES = 4  # test images shown with each attack's trigger


def rate_label(rate: float) -> str:
    return f"rate={rate:g}"


@register
class PoisoningResilienceCheck(Check):
    name = "poisoning_resilience"
    pillar = "backdoor"
    summary = ("Attack success rate of backdoor poisoning against the poisoning rate, for the "
               "audit's training recipe and data, and whether data-side defenses catch it.")
    params = (
        Param("attacks", "list[str]", ["badnets", "blended"], "backdoor attacks",
              allowed=BACKDOORS),
        Param("rates", "list[float]", [0.01, 0.05, 0.1], "poisoning rates (shares of the "
              "training set)", low=1e-6, high=0.999),
        Param("target", "int", 0, "the class triggered inputs are sent to", low=0),
        Param("defenses", "list[str]", ["spectral_signatures", "activation_clustering"],
              "data-side defenses run on each poisoned training set", allowed=tuple(DEFENSES)),
        Param("retrain", "bool", True, "retrain without each defense's flagged samples"),
        Param("n", "int", 1000, "evaluation samples for clean accuracy and ASR", low=1),
    )
    declared_metrics = {
        "clean_accuracy": HIGHER_FRACTION,
        "clean_accuracy@*": HIGHER_FRACTION,
        "clean_accuracy_after_removal@*": HIGHER_FRACTION,
        "asr@*": LOWER_FRACTION,
        "asr_after_removal@*": LOWER_FRACTION,
        "max_asr": LOWER_FRACTION,
        "tpr@*": HIGHER_FRACTION,
        "fpr@*": LOWER_FRACTION,
    }

    def metric_names(self, params: dict[str, Any]) -> list[str]:
        names = ["clean_accuracy", "max_asr"]
        for attack in params["attacks"]:
            for rate in params["rates"]:
                cell = f"{attack}:{rate_label(rate)}"
                names += [f"asr@{cell}", f"clean_accuracy@{cell}"]
                for defense in params["defenses"]:
                    names += [f"tpr@{cell}:{defense}", f"fpr@{cell}:{defense}"]
                    if params["retrain"]:
                        names += [f"asr_after_removal@{cell}:{defense}",
                                  f"clean_accuracy_after_removal@{cell}:{defense}"]
        return names

    def validate_for(self, ctx: CheckContext, params: dict[str, Any]) -> list[str]:
        problems = []
        if ctx.training is None:
            problems.append("it trains models by the audit's recipe: add a [training] table "
                            "(arch, epochs, ...) to the plan")
        train = ctx.train_data
        if train is None:
            problems.append("it poisons the training data: pass --train-data (run_audit's "
                            "train_data)")
        elif train.x.ndim != 4:
            problems.append(f"backdoor triggers need images; {train.label} has inputs of shape "
                            f"{list(train.input_shape)}")
        elif not params["target"] < ctx.model.num_classes:
            problems.append(f"target {params['target']} is not a class of the model (0.."
                            f"{ctx.model.num_classes - 1})")
        else:
            others = int((train.y != params["target"]).sum())
            for rate in params["rates"]:
                count = round(rate * len(train))
                if not 1 <= count <= others:
                    problems.append(f"rate {rate:g} of the {len(train)} training samples poisons "
                                    f"{count} (at least 1 and at most {others}, the samples "
                                    "outside the target class)")
        return problems

    def run(self, ctx: CheckContext, params: dict[str, Any]) -> CheckOutput:
        if ctx.training is None or ctx.train_data is None:  # validate_for refuses this
            raise AssayValueError("poisoning_resilience needs the recipe and --train-data")
        recipe, train = ctx.training, ctx.train_data
        test = ctx.data.subset(params["n"])
        metrics: dict[str, float] = {}
        metrics["clean_accuracy"] = ctx.piece("clean", lambda: {"clean_accuracy": _accuracy(
            _trained(recipe, train, ctx.model), test)}, decode=_decode_clean)["clean_accuracy"]
        cells = [(attack, rate) for attack in params["attacks"] for rate in params["rates"]]

        def cell(item: tuple[str, float]) -> dict[str, Any]:
            attack, rate = item
            return ctx.piece(f"{attack} {rate!r}", lambda: _poisoned_pipeline(
                _attack(attack, rate, params["target"], ctx.seed), recipe, train, test,
                ctx.model, params["defenses"], params["retrain"]),
                decode=lambda raw: _decode_cell(raw, params["defenses"], params["retrain"]))

        results = ctx.map(cell, progress_bar(cells, desc="poisoned trainings",
                                             enabled=ctx.progress))
        for (attack, rate), result in zip(cells, results, strict=True):
            name = f"{attack}:{rate_label(rate)}"
            metrics[f"asr@{name}"] = result["asr"]
            metrics[f"clean_accuracy@{name}"] = result["clean_accuracy"]
            for defense, found in result["defenses"].items():
                metrics[f"tpr@{name}:{defense}"] = found["tpr"]
                metrics[f"fpr@{name}:{defense}"] = found["fpr"]
                if params["retrain"]:
                    metrics[f"asr_after_removal@{name}:{defense}"] = found["asr"]
                    metrics[f"clean_accuracy_after_removal@{name}:{defense}"] = found[
                        "clean_accuracy"]
        metrics["max_asr"] = max(r["asr"] for r in results)
        rates = params["rates"]
        series = {attack: [metrics[f"asr@{attack}:{rate_label(r)}"] for r in rates]
                  for attack in params["attacks"]}
        if params["retrain"]:
            series.update({f"{attack} after {defense}": [
                metrics[f"asr_after_removal@{attack}:{rate_label(r)}:{defense}"] for r in rates]
                for attack in params["attacks"] for defense in params["defenses"]})
        plot = Plot("Attack success rate against the poisoning rate", "poisoning rate",
                    "attack success rate", rates, series)
        galleries = [_trigger_gallery(params["attacks"], params["target"], ctx.seed, test,
                                      ctx.model.bounds)]
        return CheckOutput(metrics, _findings(metrics, params), [plot], galleries=galleries,
                           details={"recipe": recipe.describe(), "n": len(test),
                                    "train": len(train), "target": params["target"]})


def _attack(name: str, rate: float, target: int, seed: int) -> BackdoorAttack:
    backdoor = cast(Callable[..., BackdoorAttack], POISONING_ATTACKS[name])  # BACKDOORS only
    return backdoor(target=target, rate=rate, seed=seed)


def _trained(recipe: TrainingRecipe, data: Dataset, like: ModelWrapper) -> ModelWrapper:
    """A model trained by ``recipe`` (its own seed, as the pipeline would) on ``data``."""
    model = recipe_model(recipe, data, like, seed=recipe.config.seed, name="pipeline model")
    fit(model, data, recipe.config, show_progress=False)
    return model.eval()


def _accuracy(model: ModelWrapper, data: Dataset) -> float:
    predicted = batched_predict(model, data.x.to(model.device)).cpu()
    return float((predicted == data.y.cpu()).float().mean())


def _poisoned_pipeline(attack: BackdoorAttack, recipe: TrainingRecipe, train: Dataset,
                       test: Dataset, like: ModelWrapper, defenses: list[str],
                       retrain: bool) -> dict[str, Any]:
    """Train on the poisoned data; ASR and clean accuracy; each defense's TPR and FPR on
    the poison and, with ``retrain``, ASR and clean accuracy of the model retrained without
    what it flagged."""
    poisoned = attack.poison(train)
    model = _trained(recipe, poisoned.data, like)
    x = test.x.to(model.device)
    out: dict[str, Any] = {"asr": attack.success_rate(model, x, test.y.to(model.device)),
                           "clean_accuracy": _accuracy(model, test), "defenses": {}}
    for name in defenses:
        defense: LabelScan = DEFENSES[name]()
        scan = defense.scan(model, poisoned.data)
        found = scan.against(poisoned.poisoned)
        row = {"tpr": found["tpr"], "fpr": found["fpr"]}
        if retrain:
            cleaned = _trained(recipe, scan.clean_data(poisoned.data), like)
            row.update(asr=attack.success_rate(cleaned, x, test.y.to(cleaned.device)),
                       clean_accuracy=_accuracy(cleaned, test))
        out["defenses"][name] = row
    return out


def _fraction(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"a stored fraction must lie in [0, 1]; got {value!r}")
    return float(value)


def _decode_clean(raw: Any) -> dict[str, float]:
    return {"clean_accuracy": _fraction(raw["clean_accuracy"])}


def _decode_cell(raw: Any, defenses: list[str], retrain: bool) -> dict[str, Any]:
    """A stored (attack, rate) result; ValueError (KeyError, TypeError) when it does not
    hold a fraction for every field."""
    keys = {"tpr", "fpr"} | ({"asr", "clean_accuracy"} if retrain else set())
    if set(raw["defenses"]) != set(defenses) or any(
            set(row) != keys for row in raw["defenses"].values()):
        raise ValueError("a stored cell must hold every defense's fields")
    return {"asr": _fraction(raw["asr"]), "clean_accuracy": _fraction(raw["clean_accuracy"]),
            "defenses": {name: {k: _fraction(v) for k, v in row.items()}
                         for name, row in raw["defenses"].items()}}


def _trigger_gallery(attacks: list[str], target: int, seed: int, test: Dataset,
                     bounds: tuple[float, float]):
    """A row per attack: the first test images, each beside its triggered copy (as many
    as the report's gallery cap leaves room for)."""
    samples = max(1, min(TRIGGER_SAMPLES, MAX_GALLERY_IMAGES // (2 * len(attacks))))
    x = test.x[:samples].cpu()
    images, captions = [], []
    for name in attacks:
        triggered = _attack(name, 0.1, target, seed).apply_trigger(x)
        for index in range(len(x)):
            images += [x[index], triggered[index]]
            captions += [f"clean {int(test.y[index])}", f"{name} -> {target}"]
    return gallery("Each attack's trigger (each test image beside its triggered copy)",
                   torch.stack(images), captions, columns=2 * len(x), bounds=bounds)


def _findings(metrics: dict[str, float], params: dict[str, Any]) -> list[Finding]:
    findings = []
    lowest = min(params["rates"])
    for attack in params["attacks"]:
        asr = metrics[f"asr@{attack}:{rate_label(lowest)}"]
        if asr >= LEARNT:
            findings.append(Finding("warn", f"backdoor_learnt_{attack}", (
                f"The pipeline learns the {attack} backdoor from {lowest:.2%} poisoned training "
                f"samples: {asr:.1%} of triggered test inputs go to class {params['target']}. "
                "Vet the training data's sources, or train with a data-side defense.")))
    # the best detection at the largest rate: the poison a defense most needs to catch
    top = f"{rate_label(max(params['rates']))}"
    cells = [(metrics[f"tpr@{attack}:{top}:{d}"] - metrics[f"fpr@{attack}:{top}:{d}"],
              attack, d) for attack in params["attacks"] for d in params["defenses"]]
    if cells:
        _, attack, defense = max(cells)
        tpr, fpr = (metrics[f"{m}@{attack}:{top}:{defense}"] for m in ("tpr", "fpr"))
        findings.append(Finding("info", "best_detector", (
            f"At the largest rate ({max(params['rates']):g}), {defense} caught the most "
            f"{attack} poison for the clean samples it flagged: TPR {tpr:.1%} at FPR "
            f"{fpr:.1%}.")))
    return findings
