"""Checks ``gradient_leakage`` and ``model_inversion``: can an attacker rebuild the data?

``gradient_leakage`` plays the server of federated training: for batches of real samples
from ``--data`` it computes the gradient a client would send (the model's mean
cross-entropy, white-box) and reconstructs the batch from it with DLG, iDLG or Inverting
Gradients (:mod:`assay.attacks.privacy.gradient_leakage`).

Metrics, for each batch size B of ``batch_sizes``:
- ``psnr@batch=B``: the mean PSNR (dB, over the trials' samples) of each true sample
  against the reconstruction assigned to it; an exact copy counts as
  :data:`PSNR_CEILING` dB. Near 30 dB and above the copy is hard to tell from the original;
  near 20 dB it is recognisable; below about 15 dB it looks like noise.
- ``label_recovery@batch=B``: the share of the batch's labels recovered.

``model_inversion`` runs MI-Face (Fredrikson et al. 2015,
:class:`assay.attacks.privacy.ModelInversion`) for every class and compares each image
with the class's mean image (of ``--train-data`` when given, else of ``--data``):
- ``class_similarity@CLASS``: Pearson correlation of the inversion with the class mean;
  ``mean_class_similarity`` their mean;
- ``inversion_accuracy``: the share of classes whose inversion correlates best with their
  own class mean (chance: 1 / classes);
- ``nearest_psnr@CLASS`` and ``mean_nearest_psnr`` (with ``--train-data`` only): PSNR of
  the inversion against the closest training image of its class;
- ``mean_confidence``: the model's probability of each class on its inversion.

Both work on image models (the report shows the reconstructions beside the originals);
tabular data is refused before the audit starts.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..attacks.privacy.gradient_leakage import DLG, IDLG, GradientInversion, InvertingGradients
from ..attacks.privacy.inversion import ModelInversion
from ..core.data import Dataset
from ..core.images import gallery, is_image_batch
from ..metrics.reconstruction import psnr
from ..results import Gallery, MetricInfo
from .base import Check, CheckContext, CheckOutput, Finding, Param, Plot, register

PSNR_CEILING = 100.0  # dB: what an exact copy (infinite PSNR) counts as in a metric
RECOGNISABLE_DB = 20.0  # PSNR from which a reconstruction is read as a leak
_ATTACKS = {"dlg": DLG, "idlg": IDLG, "inverting_gradients": InvertingGradients}


def _images_only(ctx: CheckContext, what: str) -> list[str]:
    if is_image_batch(ctx.data.x):
        return []
    return [f"{what} reconstructs images and compares them by PSNR; {ctx.data.label} has "
            f"inputs of shape {list(ctx.data.input_shape)}, not [C, H, W] with 1 or 3 "
            "channels. Fix: leave this check out of the plan for tabular data"]


def _class_names(data: Dataset, count: int) -> list[str]:
    return [data.classes[k] if k < len(data.classes) else str(k) for k in range(count)]


@register
class GradientLeakageCheck(Check):
    name = "gradient_leakage"
    pillar = "privacy"
    summary = ("Can a federated-learning server rebuild a client's batch from its gradient? "
               "DLG, iDLG or Inverting Gradients: PSNR and label recovery per batch size.")
    params = (
        Param("method", "str", "idlg", "the reconstruction attack",
              allowed=tuple(_ATTACKS)),
        Param("batch_sizes", "list[int]", [1, 2, 4], "client batch sizes to attack", low=1,
              high=64),
        Param("steps", "int", None, "optimisation steps (None: the method's default, 300 "
              "L-BFGS steps for DLG and iDLG, 24000 Adam steps for Inverting Gradients)", low=1),
        Param("trials", "int", 1, "batches attacked per batch size", low=1),
    )
    declared_metrics = {
        "psnr@batch=*": MetricInfo("lower", "dB", (0.0, PSNR_CEILING)),
        "label_recovery@batch=*": MetricInfo("lower", "fraction", (0.0, 1.0)),
    }

    def metric_names(self, params: dict[str, Any]) -> list[str]:
        return [f"{kind}@batch={b}" for b in params["batch_sizes"]
                for kind in ("psnr", "label_recovery")]

    def validate_for(self, ctx: CheckContext, params: dict[str, Any]) -> list[str]:
        problems = _images_only(ctx, "gradient_leakage")
        needed = max(params["batch_sizes"]) * params["trials"]
        if needed > len(ctx.data):
            problems.append(f"batch_sizes up to {max(params['batch_sizes'])} times "
                            f"{params['trials']} trials need {needed} samples; {ctx.data.label} "
                            f"has {len(ctx.data)}. "
                            "Fix: lower 'batch_sizes' or 'trials', or pass more data")
        if not any(p.requires_grad for p in ctx.model.parameters()):
            problems.append("the model has no parameters that require grad, so it has no "
                            "training gradient to leak (a frozen or recorded model). Fix: "
                            "audit the trainable model")
        return problems

    def _attack(self, params: dict[str, Any], seed: int) -> GradientInversion:
        settings = {} if params["steps"] is None else {"steps": params["steps"]}
        return _ATTACKS[params["method"]](seed=seed, **settings)

    def run(self, ctx: CheckContext, params: dict[str, Any]) -> CheckOutput:
        data = ctx.data
        metrics: dict[str, float | None] = {}
        galleries: list[Gallery] = []
        curves: dict[str, list[float]] = {"PSNR (dB)": [], "label recovery (%)": []}
        low, high = ctx.model.bounds
        names = _class_names(data, ctx.model.num_classes)
        uninformative = 0
        for size in params["batch_sizes"]:
            values, recovered = [], []
            for trial in range(params["trials"]):
                start = trial * size
                x, y = data.x[start:start + size], data.y[start:start + size]

                def attack(x: Tensor = x, y: Tensor = y, trial: int = trial) -> dict[str, Any]:
                    result = self._attack(params, ctx.seed + trial)(ctx.model, x, y)
                    return {"reconstruction": result.reconstruction, "labels": result.labels,
                            "psnr": result.psnr, "label_recovery": result.label_recovery,
                            "informative": result.informative}

                piece = ctx.piece(f"batch={size} trial={trial}", attack, decode=_fits(x))
                values.append(piece["psnr"].clamp(max=PSNR_CEILING))
                recovered.append(piece["label_recovery"])
                uninformative += not piece["informative"]
                if trial == 0:
                    galleries.append(_pairs_gallery(size, x, y, piece, names, (low, high)))
            mean_psnr, rate = float(torch.cat(values).mean()), sum(recovered) / len(recovered)
            metrics[f"psnr@batch={size}"], metrics[f"label_recovery@batch={size}"] = mean_psnr, rate
            curves["PSNR (dB)"].append(mean_psnr)
            curves["label recovery (%)"].append(100 * rate)
        plot = Plot(f"Reconstruction from one gradient ({params['method']}) against the batch "
                    "size", "batch size", "PSNR (dB) / labels recovered (%)",
                    [float(b) for b in params["batch_sizes"]], curves,
                    reference={f"recognisable ({RECOGNISABLE_DB:g} dB)":
                               [RECOGNISABLE_DB] * len(params["batch_sizes"])},
                    points={f"psnr@batch={b}": ["PSNR (dB)", float(b)]
                            for b in params["batch_sizes"]})
        findings = _leak_findings(metrics, params, uninformative)
        return CheckOutput(metrics, findings, [plot], galleries=galleries,
                           details={"method": params["method"], "steps": params["steps"],
                                    "psnr_ceiling_db": PSNR_CEILING})


def _fits(x: Tensor) -> Any:
    def decode(value: Any) -> dict[str, Any]:
        if tuple(value["reconstruction"].shape) != tuple(x.shape) or \
                value["psnr"].shape != (len(x),) or value["labels"].shape != (len(x),):
            raise ValueError("the stored reconstruction does not fit the batch")
        return {**value, "label_recovery": float(value["label_recovery"]),
                "informative": bool(value["informative"])}
    return decode


def _pairs_gallery(size: int, x: Tensor, y: Tensor, piece: dict[str, Any], names: list[str],
                   bounds: tuple[float, float]) -> Gallery:
    shown = min(size, 8)  # pairs: a gallery holds 16 images
    images = torch.stack([image for i in range(shown)
                          for image in (x[i], piece["reconstruction"][i].to(x.device))])
    captions = []
    for i in range(shown):
        label = int(piece["labels"][i])
        captions += [f"original: {names[int(y[i])]}",
                     f"rebuilt: {names[label] if label >= 0 else '?'}, "
                     f"{min(float(piece['psnr'][i]), PSNR_CEILING):.1f} dB"]
    return gallery(f"Batch of {size}: originals beside their reconstructions", images,
                   captions, columns=min(2 * shown, 8), bounds=bounds)


def _leak_findings(metrics: dict[str, float | None], params: dict[str, Any],
                   uninformative: int) -> list[Finding]:
    findings = []
    if uninformative:
        findings.append(Finding("info", "zero_gradient", (
            f"{uninformative} victim batch(es) gave a zero gradient (the model fits them "
            "exactly, or nothing is trainable): there was nothing to reconstruct from them.")))
    leaking = [b for b in params["batch_sizes"]
               if (metrics[f"psnr@batch={b}"] or 0.0) >= RECOGNISABLE_DB]
    if leaking:
        size = max(leaking)
        value = metrics[f"psnr@batch={size}"]
        findings.append(Finding("warn", "gradient_leak", (
            f"From one gradient of a batch of {size}, {params['method']} rebuilt the inputs at "
            f"{value:.1f} dB PSNR on average and recovered "
            f"{metrics[f'label_recovery@batch={size}']:.0%} of the labels. Above "
            f"{RECOGNISABLE_DB:g} dB a reconstruction is recognisable, above 30 dB hard to tell "
            "from the original: whoever sees a client's update in federated training (the "
            "server, an eavesdropper) sees its data. Larger client batches, secure "
            "aggregation or DP-SGD noise make this harder.")))
    else:
        labels = metrics[f"label_recovery@batch={min(params['batch_sizes'])}"] or 0.0
        findings.append(Finding("info", "no_gradient_leak", (
            f"Below {RECOGNISABLE_DB:g} dB PSNR at every batch size: to this attack and budget "
            f"the reconstructions look like noise (though {labels:.0%} of the labels of the "
            f"smallest batch were recovered, which tells what classes a client holds). This "
            "is no proof of privacy: more steps, another method or restarts may still rebuild "
            "the data.")))
    return findings


def _pearson(a: Tensor, b: Tensor) -> Tensor:
    """The correlation of every row of ``a`` [K, ...] with every row of ``b`` [M, ...]."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)
    b = b / b.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (a @ b.T).float()


@register
class ModelInversionCheck(Check):
    name = "model_inversion"
    pillar = "privacy"
    summary = ("What does the model give away about each class? MI-Face's most confident "
               "input per class, compared with the class's mean (and nearest training) image.")
    params = (
        Param("steps", "int", 5000, "gradient descent steps (the paper's alpha)", low=1),
        Param("lr", "float", 0.1, "step size (the paper's lambda)", low=1e-12),
        Param("window", "int", 100, "steps without progress before a class stops (beta)",
              low=1),
        Param("threshold", "float", 0.99, "confidence at which a class stops (gamma)",
              low=1e-6, high=1 - 1e-6),
        Param("blur_sigma", "float", None, "Gaussian denoising after each step (px); None: "
              "none", low=1e-6),
    )
    declared_metrics = {
        "inversion_accuracy": MetricInfo("lower", "fraction", (0.0, 1.0)),
        "mean_class_similarity": MetricInfo("lower", "", (-1.0, 1.0)),
        "class_similarity@*": MetricInfo("lower", "", (-1.0, 1.0)),
        "mean_nearest_psnr": MetricInfo("lower", "dB", (0.0, PSNR_CEILING)),
        "nearest_psnr@*": MetricInfo("lower", "dB", (0.0, PSNR_CEILING)),
        "mean_confidence": MetricInfo("neutral", "probability", (0.0, 1.0)),
    }

    def metric_names(self, params: dict[str, Any]) -> list[str]:
        return ["inversion_accuracy", "mean_class_similarity", "class_similarity@*",
                "mean_nearest_psnr", "nearest_psnr@*", "mean_confidence"]

    def validate_for(self, ctx: CheckContext, params: dict[str, Any]) -> list[str]:
        return _images_only(ctx, "model_inversion")

    def run(self, ctx: CheckContext, params: dict[str, Any]) -> CheckOutput:
        reference = ctx.train_data if ctx.train_data is not None else ctx.data
        k = ctx.model.num_classes
        names = _class_names(reference, k)
        attack = ModelInversion(steps=params["steps"], lr=params["lr"],
                                window=params["window"], threshold=params["threshold"],
                                blur_sigma=params["blur_sigma"])
        result = attack(ctx.model)
        images = result.images.to(reference.x.device)
        present = [c for c in range(k) if bool((reference.y == c).any())]
        means = torch.stack([reference.x[reference.y == c].mean(0) for c in present])
        similarity = _pearson(images[present], means)  # [present, present]
        own = similarity.diag()
        metrics: dict[str, float | None] = {
            "inversion_accuracy": float((similarity.argmax(1) == torch.arange(len(present)))
                                        .float().mean()),
            "mean_class_similarity": float(own.mean()),
            "mean_confidence": float(result.confidence.mean()),
        }
        metrics.update({f"class_similarity@{names[c]}": float(v)
                        for c, v in zip(present, own.tolist(), strict=True)})
        low, high = ctx.model.bounds
        nearest = means
        captions = [f"{names[c]} mean: r={v:.2f}" for c, v in zip(present, own.tolist(),
                                                                  strict=True)]
        if ctx.train_data is not None:
            best, nearest_images = [], []
            for c in present:
                pool = reference.x[reference.y == c]
                scores = psnr(images[c].expand_as(pool), pool, data_range=high - low)
                best.append(min(float(scores.max()), PSNR_CEILING))
                nearest_images.append(pool[int(scores.argmax())])
                metrics[f"nearest_psnr@{names[c]}"] = best[-1]
            nearest = torch.stack(nearest_images)
            captions = [f"{names[c]} nearest: {v:.1f} dB" for c, v in zip(present, best,
                                                                          strict=True)]
            metrics["mean_nearest_psnr"] = sum(best) / len(best)
        else:
            metrics["mean_nearest_psnr"] = None  # needs the training images
        shown = [names[c] for c in present]
        galleries = [
            gallery("Model inversion: each class's most confident input (MI-Face)",
                    images[present], [f"{n}: p={float(result.confidence[c]):.2f}"
                                      for n, c in zip(shown, present, strict=True)],
                    columns=min(len(present), 10), bounds=(low, high)),
            gallery("Nearest training image of each class" if ctx.train_data is not None
                    else f"Mean image of each class ({reference.label})", nearest, captions,
                    columns=min(len(present), 10), bounds=(low, high)),
        ]
        plot = Plot("Correlation of each class's inversion with its class mean", "class",
                    "Pearson correlation", shown, {"own class": own.tolist()}, kind="bar")
        return CheckOutput(metrics, [_inversion_finding(metrics, len(present))], [plot],
                           galleries=galleries, details={
                               "steps_run": result.steps.tolist(),
                               "reference": reference.label})


def _inversion_finding(metrics: dict[str, float | None], classes: int) -> Finding:
    accuracy = metrics["inversion_accuracy"] or 0.0
    similarity = metrics["mean_class_similarity"] or 0.0
    if accuracy > max(0.5, 1.0 / classes):
        return Finding("warn", "inversion_reveals_classes", (
            f"For {accuracy:.0%} of the {classes} classes, the input the model is most sure "
            "of resembles that class's mean image more than any other class's (mean "
            f"correlation {similarity:.2f}): the model gives away what its classes look like. "
            "That is a privacy leak where a class is one person or a small group (Fredrikson "
            "et al. 2015 rebuilt faces this way), and expected where classes are broad "
            "categories such as digits."))
    return Finding("info", "inversion_uninformative", (
        f"Only {accuracy:.0%} of the {classes} classes' inversions resemble their own class "
        f"mean best (mean correlation {similarity:.2f}; chance {1 / classes:.0%}): MI-Face "
        "recovers little of what the classes look like. Stronger inversions (generative "
        "priors) may recover more."))
