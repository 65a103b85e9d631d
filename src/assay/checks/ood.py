"""Check ``ood``: can the model's scores tell in-distribution inputs from others?

Every detector of :mod:`assay.shift.ood` (MSP, MaxLogit, Energy, ODIN, Mahalanobis, KNN,
ViM) scores the evaluation split and each out-of-distribution set; metrics are AUROC,
FPR at 95% TPR, AUPR-in and AUPR-out, named ``auroc@<detector>:<set>`` etc.

OOD sets: ``far`` and ``near`` are roles resolved per data set (MNIST: Fashion-MNIST
and corrupted MNIST; digits: uniform noise and rotated digits; others: noise and
corrupted), so gates keep their names across data sets. ``noise`` (uniform in the
input bounds), ``inverted`` (high + low - x), ``rotated`` (images turned by 180 degrees;
for digit classes only 2, 3, 4, 5 and 7, since 0, 1 and 8 turn into themselves and 6 and
9 into each other) and ``corrupted`` (each sample under one of the 15 common corruptions
at severity 5, in turn) are built from the data; any other entry is a data spec
(``fashion-mnist:test:1000``, an .npz path, read from the audit's data directory) named by
its first part. Detectors that need fitting (Mahalanobis, KNN, ViM) fit on the training
split when the audit has one, else on a held-out half of the evaluation split. A detector
that cannot run on the model (no linear head found) is left out with a "warn" finding;
gates on its metrics fail.

Why ``rotated`` is the digits' near set: turned digits keep the strokes, ink and pixel
statistics of the data and change only what they depict (semantic shift), and none of
them is a digit. On the demo model (``assay.demo``, fitted on the training split) its
AUROC was 0.66-0.92 across the seven detectors against 0.89-1.00 for uniform noise (four
trainings, seeds 0-3: 0.66-0.94 against 0.87-1.00, each detector at least 0.05 lower),
while ``inverted`` digits, the earlier choice, were separated perfectly by Mahalanobis
and ViM (AUROC 1.000): a far set, not a near one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..core.data import Dataset, check_data_spec, load_data, npz_path
from ..core.loaders import DIGIT_CLASSES
from ..core.rng import seeded_generator
from ..errors import AssayValueError
from ..metrics.ood import ood_metrics
from ..shift.corruptions._common import check_images
from ..shift.ood import DETECTORS
from ..results import HIGHER_FRACTION, LOWER_FRACTION, Level
from .base import Check, CheckContext, CheckOutput, Finding, Param, Plot, register

ROLES = {"mnist": {"far": "fashion-mnist", "near": "corrupted"},
         "digits": {"far": "noise", "near": "rotated"}}
DEFAULT_ROLES = {"far": "noise", "near": "corrupted"}
BUILT = ("noise", "inverted", "rotated", "corrupted")
MAX_FIT = 5000
# Digits that a half turn maps onto a digit (0, 1, 8 onto themselves, 6 and 9 onto each
# other): turned, they are in-distribution, so the rotated set leaves them out.
TURN_INTO_DIGITS = (0, 1, 6, 8, 9)


def set_label(entry: str) -> str:
    return entry if entry in ("far", "near", *BUILT) else entry.split(":")[0].rsplit("/", 1)[-1]


def build_ood_set(entry: str, data: Dataset, bounds: tuple[float, float], seed: int,
                  data_root: str | Path | None = None) -> Dataset:
    """The inputs of OOD set ``entry`` (a built-in name or a data spec, read from
    ``data_root`` or ``$ASSAY_DATA_DIR``), as a Dataset."""
    lo, hi = bounds
    n = len(data)
    if entry == "rotated":
        if data.x.ndim != 4:
            raise AssayValueError(f"OOD set 'rotated' turns images; the data {data.label} has "
                                  f"shape {tuple(data.x.shape)}, not [N, C, H, W].")
        keep = torch.ones(n, dtype=torch.bool)
        if data.classes == DIGIT_CLASSES:
            keep = ~torch.isin(data.y, torch.tensor(TURN_INTO_DIGITS))
        return Dataset(torch.rot90(data.x[keep], 2, dims=(2, 3)).contiguous(), data.y[keep],
                       entry, "ood", data.classes)
    if entry == "noise":
        gen = seeded_generator(seed)
        x = lo + (hi - lo) * torch.rand(data.x.shape, generator=gen)
    elif entry == "inverted":
        x = hi + lo - data.x
    elif entry == "corrupted":
        from ..shift.corruptions import corrupt, list_corruptions

        names = list_corruptions()
        gen = seeded_generator(seed)
        x = data.x.clone()
        for index, name in enumerate(names):
            rows = torch.arange(index, n, len(names))
            if len(rows):
                x[rows] = corrupt(data.x[rows], name, 5, generator=gen)
    else:
        other = load_data(entry, data_root=data_root)
        if other.input_shape != data.input_shape:
            raise AssayValueError(f"OOD set {entry!r} has input shape {other.input_shape}; the "
                                  f"model takes {data.input_shape}.")
        return other
    return Dataset(x, data.y, entry, "ood", data.classes)


@register
class OODCheck(Check):
    name = "ood"
    pillar = "distribution shift"
    summary = "Out-of-distribution detection: AUROC, FPR@95%TPR, AUPR per detector and OOD set."
    params = (
        Param("detectors", "list[str]", sorted(DETECTORS), "OOD detectors",
              allowed=tuple(sorted(DETECTORS))),
        Param("ood_sets", "list[str]", ["far", "near"],
              "far, near, noise, inverted, corrupted, or data specs"),
        Param("n", "int", 1000, "in-distribution and OOD samples each", low=2),
        Param("batch_size", "int", 256, "inputs per forward pass", low=1),
    )

    declared_metrics = {"auroc@*": HIGHER_FRACTION, "aupr_in@*": HIGHER_FRACTION,
                        "aupr_out@*": HIGHER_FRACTION,
                        "fpr95@*": LOWER_FRACTION}

    def metric_names(self, params: dict[str, Any]) -> list[str]:
        return [f"{metric}@{det}:{set_label(entry)}" for entry in params["ood_sets"]
                for det in params["detectors"]
                for metric in ("auroc", "fpr95", "aupr_in", "aupr_out")]

    def input_files(self, params: dict[str, Any]) -> list[str]:
        return [path for path in map(npz_path, params["ood_sets"]) if path is not None]

    def validate_params(self, params: dict[str, Any]) -> list[str]:
        problems: list[str] = []
        seen: dict[str, str] = {}
        for entry in params["ood_sets"]:
            label = set_label(entry)
            if label in seen:
                problems.append(f"the 'ood_sets' entries {seen[label]!r} and {entry!r} are both "
                                f"named {label!r} in the metrics. Fix: rename one of the files")
            seen[label] = entry
            if entry not in ("far", "near", *BUILT):
                try:
                    check_data_spec(entry, files=False)
                except AssayValueError as err:
                    problems.append(f"the 'ood_sets' entry {entry!r}: {err}")
        return problems

    def validate_for(self, ctx: CheckContext, params: dict[str, Any]) -> list[str]:
        problems = []
        for entry in params["ood_sets"]:
            try:
                if entry == "rotated" and ctx.data.x.ndim != 4:
                    problems.append(f"the 'ood_sets' entry 'rotated' turns images; the data "
                                    f"{ctx.data.label} is not [N, C, H, W]")
                elif entry == "corrupted":
                    check_images(ctx.data.x, "the ood check's 'corrupted' set")
                elif entry not in ("far", "near", *BUILT):
                    check_data_spec(entry, data_root=ctx.data_root)
            except AssayValueError as err:
                problems.append(f"the 'ood_sets' entry {entry!r}: {err}")
        return problems

    def run(self, ctx: CheckContext, params: dict[str, Any]) -> CheckOutput:
        model, n = ctx.model, params["n"]
        data = ctx.data.subset(n)
        findings: list[Finding] = []
        if ctx.train_data is not None:
            fit_data, test = ctx.train_data.subset(MAX_FIT), data
        else:
            fit_data, test = data.split_off(0.5, seed=ctx.seed)
            findings.append(Finding("info", "fit_on_eval_half",
                                    "No training split was given: the fitted detectors used "
                                    "half of the evaluation split, scored on the other half."))
        roles = ROLES.get(data.name, DEFAULT_ROLES)
        ood_sets: dict[str, Dataset] = {}
        resolved: dict[str, str] = {}
        for entry in params["ood_sets"]:
            source = roles.get(entry, entry)
            if source == "fashion-mnist":
                source = f"fashion-mnist:test:{len(test)}"
            try:
                ood_sets[set_label(entry)] = build_ood_set(source, test, model.bounds, ctx.seed,
                                                           ctx.data_root)
            except AssayValueError as err:
                if entry not in roles:
                    raise
                findings.append(Finding("warn", "ood_set_fallback",
                                        f"OOD set {entry!r} ({source}) is unavailable ({err}); "
                                        "uniform noise used instead."))
                source = "noise"
                ood_sets[set_label(entry)] = build_ood_set("noise", test, model.bounds, ctx.seed)
            resolved[set_label(entry)] = source
        device = model.device
        metrics: dict[str, float] = {}
        plots = []
        ran: list[str] = []
        for det_name in params["detectors"]:
            try:  # a detector that cannot run on this model must not hide the others
                detector = DETECTORS[det_name](batch_size=params["batch_size"])
                detector.fit(model, fit_data.x.to(device), fit_data.y.to(device))
                score_in = detector.score(model, test.x.to(device)).cpu()
                scores_out = {label: detector.score(model, ood.x[:n].to(device)).cpu()
                              for label, ood in ood_sets.items()}
            except AssayValueError as err:
                findings.append(Finding("warn", "detector_failed",
                                        f"Detector {det_name} could not run: {err} Its metrics "
                                        "are missing, so a gate on them fails."))
                continue
            ran.append(det_name)
            for label, score_out in scores_out.items():
                result = ood_metrics(score_in, score_out)
                metrics[f"auroc@{det_name}:{label}"] = result.auroc
                metrics[f"fpr95@{det_name}:{label}"] = result.fpr_at_tpr
                metrics[f"aupr_in@{det_name}:{label}"] = result.aupr_in
                metrics[f"aupr_out@{det_name}:{label}"] = result.aupr_out
            plots.append(_histogram(det_name, score_in, scores_out))
        if not ran:
            raise AssayValueError("no OOD detector could run: " + "; ".join(
                f.message for f in findings if f.code == "detector_failed"))
        best = {label: max(ran, key=lambda d: metrics[f"auroc@{d}:{label}"])
                for label in ood_sets}
        for label, det in best.items():
            auroc = metrics[f"auroc@{det}:{label}"]
            level: Level = "warn" if auroc < 0.8 else "info"
            findings.append(Finding(level, "best_detector",
                                    f"{label} ({resolved[label]}): best detector {det} with "
                                    f"AUROC {auroc:.3f}" + (
                                        " - the model cannot reliably tell these inputs apart."
                                        if level == "warn" else ".")))
        return CheckOutput(metrics, findings, plots, details={
            "ood_sets": resolved, "in_distribution_samples": len(test),
            "fit_samples": len(fit_data)})


def _histogram(detector: str, score_in: torch.Tensor, scores_out: dict[str, torch.Tensor],
               bins: int = 30) -> Plot:
    both = torch.cat([score_in, *scores_out.values()]).double()
    lo, hi = float(both.min()), float(both.max())
    if hi <= lo:
        hi = lo + 1.0
    width = (hi - lo) / bins
    centres = [round(lo + (i + 0.5) * width, 6) for i in range(bins)]

    def density(scores: torch.Tensor) -> list[float]:
        counts = torch.histc(scores.double(), bins=bins, min=lo, max=hi)
        return (counts / max(len(scores), 1)).tolist()

    return Plot(f"{detector} scores", "score (higher = more in-distribution)", "fraction",
                centres, {"in-distribution": density(score_in),
                          **{label: density(score) for label, score in scores_out.items()}})
