"""Workflows that make a new model from a model and report on it: :func:`harden` (train a
hardened copy, save it, audit before and after, write the comparison) and
:func:`compress` (prune, quantize or distill, save, compare accuracy and size). The CLI's
``assay harden`` and ``assay compress`` call them; they are usable from Python alone.

    >>> defence = AdversarialTraining(method="fast", eps=0.1)         # doctest: +SKIP
    >>> result = harden(model, defence, train, test, out=Path("at.safetensors"),
    ...                 report_dir=Path("at-report"))                  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from .audit.plan import Plan, plan_from_dict
from .core.data import Dataset
from .core.model import ModelWrapper
from .core.threads import threads_for
from .core.training import TrainConfig
from .errors import AssayValueError

if TYPE_CHECKING:  # the results layer is read, never needed to run a workflow
    from .results import AuditResult

log = logging.getLogger("assay")


@dataclass(frozen=True)
class AdversarialTraining:
    """Adversarial training (:func:`assay.defenses.adversarial.adversarial_training`):
    ``method`` pgd, trades or fast at radius ``eps`` in ``norm``; None keeps the method's
    default for ``steps`` (pgd, trades), ``beta`` (trades) and ``alpha`` (fast);
    ``ramp_epochs`` grows the radius from 0 over that many epochs."""

    eps: float
    method: Literal["pgd", "trades", "fast"] = "pgd"
    norm: Literal["linf", "l2"] = "linf"
    steps: int | None = None
    beta: float | None = None
    alpha: float | None = None
    ramp_epochs: float = 0.0

    name = "adversarial"

    @property
    def label(self) -> str:
        return f"{self.method} adversarial training at {self.norm} eps={self.eps:g}"

    def default_plan(self) -> dict[str, Any]:
        return {"checks": [{"name": "accuracy"}, {"name": "robustness", "params": {
            "norms": [self.norm], "eps": [0.0, self.eps / 2, self.eps], "mode": "quick"}}]}

    def train(self, model: ModelWrapper, data: Dataset, config: TrainConfig, *,
              show_progress: bool) -> None:
        from .defenses.adversarial import adversarial_training

        result = adversarial_training(model, data, method=self.method, eps=self.eps,
                                      norm=self.norm, config=config, steps=self.steps,
                                      beta=self.beta, alpha=self.alpha,
                                      ramp_epochs=self.ramp_epochs, show_progress=show_progress)
        if result.collapsed_at is not None:
            log.warning("catastrophic overfitting in epoch %d; the best epoch was kept",
                        result.collapsed_at + 1)


@dataclass(frozen=True)
class GaussianAugmentation:
    """Training under Gaussian noise of level ``sigma``, the base model of randomized
    smoothing (Cohen et al. 2019)."""

    sigma: float = 0.25

    name = "smoothing"

    @property
    def label(self) -> str:
        return f"Gaussian augmentation at sigma={self.sigma:g}"

    def default_plan(self) -> dict[str, Any]:
        return {"checks": [{"name": "accuracy"}, {"name": "certified_robustness",
                                                  "params": {"sigma": self.sigma}}]}

    def train(self, model: ModelWrapper, data: Dataset, config: TrainConfig, *,
              show_progress: bool) -> None:
        from .core.training import fit
        from .defenses.smoothing import gaussian_augmentation_loss

        fit(model, data, config, loss_fn=gaussian_augmentation_loss(self.sigma),
            show_progress=show_progress)


@dataclass(frozen=True)
class FairnessTraining:
    """Training that narrows the gap between the groups of the training data's sensitive
    attribute ``attribute``: ``method`` "reweighing" (Kamiran & Calders 2012) or
    "regularised" (cross-entropy plus ``lam`` times the batch's ``constraint`` gap), the
    losses of :func:`assay.defenses.fairness.mitigation_loss`."""

    attribute: str
    method: Literal["reweighing", "regularised"] = "reweighing"
    constraint: Literal["demographic_parity", "equalized_odds"] = "demographic_parity"
    lam: float = 1.0

    name = "fairness"

    def __post_init__(self) -> None:
        from ._params import check_choice, check_float

        check_choice("method", self.method, ("reweighing", "regularised"), "FairnessTraining")
        check_choice("constraint", self.constraint, ("demographic_parity", "equalized_odds"),
                     "FairnessTraining")
        check_float("lam", self.lam, "FairnessTraining", low=0.0)

    @property
    def label(self) -> str:
        what = ("reweighing" if self.method == "reweighing" else
                f"{self.constraint.replace('_', ' ')} regularisation (lambda {self.lam:g})")
        return f"{what} for {self.attribute}"

    def default_plan(self) -> dict[str, Any]:
        return {"checks": [{"name": "accuracy"},
                           {"name": "fairness", "params": {"attributes": [self.attribute]}}]}

    def train(self, model: ModelWrapper, data: Dataset, config: TrainConfig, *,
              show_progress: bool) -> None:
        from .core.training import fit
        from .defenses.fairness import mitigation_loss

        codes, _ = data.attribute(self.attribute)
        loss = mitigation_loss(self.method, data.y, codes, constraint=self.constraint,
                               lam=self.lam)
        fit(model, data, config, loss_fn=loss, show_progress=show_progress)


@dataclass(frozen=True)
class PrivateTraining:
    """DP-SGD (Abadi et al. 2016: :func:`assay.defenses.dp.train_dp_sgd`) to the claim
    (``epsilon``, ``delta``): clipping norm ``max_grad_norm``, the noise multiplier
    calibrated by ``accountant`` when None (a given one that spends more is refused), the
    training config's batch size the expected Poisson batch. ``seed`` None (the default)
    draws the sampling and the noise from the operating system: noise replayed from a
    known seed protects nothing. The comparison's ``training`` carries the guarantee
    under ``privacy``."""

    epsilon: float
    delta: float
    max_grad_norm: float = 1.0
    noise_multiplier: float | None = None
    accountant: Literal["rdp", "pld"] = "rdp"
    seed: int | None = None

    name = "dp"

    def __post_init__(self) -> None:
        from ._params import check_choice, check_float, check_optional_seed

        owner = "PrivateTraining"
        check_float("epsilon", self.epsilon, owner, low=0.0, low_open=True)
        check_float("delta", self.delta, owner, low=0.0, high=1.0, low_open=True,
                    high_open=True)
        check_float("max_grad_norm", self.max_grad_norm, owner, low=0.0, low_open=True)
        if self.noise_multiplier is not None:
            check_float("noise_multiplier", self.noise_multiplier, owner, low=0.0,
                        low_open=True)
        check_choice("accountant", self.accountant, ("rdp", "pld"), owner)
        check_optional_seed("seed", self.seed, owner)

    @property
    def label(self) -> str:
        return f"DP-SGD at epsilon={self.epsilon:g}, delta={self.delta:g}"

    def default_plan(self) -> dict[str, Any]:
        return {"checks": [{"name": "accuracy"}]}

    def train(self, model: ModelWrapper, data: Dataset, config: TrainConfig, *,
              show_progress: bool):
        from .defenses.dp import train_dp_sgd

        return train_dp_sgd(model, data, epsilon=self.epsilon, delta=self.delta,
                            max_grad_norm=self.max_grad_norm,
                            noise_multiplier=self.noise_multiplier, accountant=self.accountant,
                            config=config, seed=self.seed,
                            show_progress=show_progress).guarantee


@dataclass(frozen=True)
class BackdoorRemoval:
    """Backdoor removal with the clean training data (:mod:`assay.defenses.backdoor.removal`):
    ``method`` "nc_unlearn" (Neural Cleanse finds the suspected target's trigger on a
    seeded fifth of the data, the model is fine-tuned on the rest with it stamped on 20%
    of the inputs, labels kept) or "fine_pruning" (the last convolution's least active
    channels pruned while accuracy on that fifth stays within 4 points, then fine-tuning
    on the rest) or "anp" (Adversarial Neuron Pruning's masks learnt on the data, the
    neurons below 0.2 pruned, no fine-tuning)."""

    method: Literal["nc_unlearn", "fine_pruning", "anp"] = "nc_unlearn"

    name = "backdoor"

    def __post_init__(self) -> None:
        from ._params import check_choice

        check_choice("method", self.method, ("nc_unlearn", "fine_pruning", "anp"),
                     "BackdoorRemoval")

    @property
    def label(self) -> str:
        return {"nc_unlearn": "Neural Cleanse unlearning", "fine_pruning": "Fine-Pruning",
                "anp": "Adversarial Neuron Pruning"}[self.method]

    def default_plan(self) -> dict[str, Any]:
        return {"checks": [{"name": "accuracy"}, {"name": "backdoor_scan"}]}

    def train(self, model: ModelWrapper, data: Dataset, config: TrainConfig, *,
              show_progress: bool) -> None:
        from .defenses.backdoor import NeuralCleanse
        from .defenses.backdoor.removal import adversarial_neuron_prune, fine_prune, unlearn

        if self.method == "anp":
            removal = adversarial_neuron_prune(model, data, seed=config.seed,
                                               batch_size=config.batch_size)
            log.info("pruned %d of %d neurons (per layer: %s)", len(removal.pruned_channels),
                     removal.channels, removal.pruned_per_layer)
            return
        held, rest = data.split_off(0.2, seed=config.seed)
        if self.method == "nc_unlearn":
            scan = NeuralCleanse(seed=config.seed).scan(model, held)
            removal = unlearn(model, rest, scan, config, show_progress=show_progress)
            log.info("unlearnt the trigger of class %d", removal.target)
        else:
            removal = fine_prune(model, rest, held, config, show_progress=show_progress)
            log.info("pruned %d of %d channels of the last convolution",
                     len(removal.pruned_channels), removal.channels)


Defence = (AdversarialTraining | GaussianAugmentation | FairnessTraining | PrivateTraining
           | BackdoorRemoval)


def harden_plan(defence: Defence) -> Plan:
    """The plan of both audits when none is given: accuracy and the defence's own check."""
    return plan_from_dict(defence.default_plan(), source="<harden plan>")


@dataclass(frozen=True)
class HardenResult:
    model: ModelWrapper
    before: AuditResult
    after: AuditResult
    seconds: float
    report: dict[str, Path]


def harden(model: ModelWrapper, defence: Defence, train: Dataset, test: Dataset, *,
           out: Path, report_dir: Path, config: TrainConfig = TrainConfig(),
           plan: Plan | None = None, model_info: dict[str, Any] | None = None,
           show_progress: bool = True) -> HardenResult:
    """Train a hardened copy of ``model`` on ``train`` (``model`` is untouched), write it
    to ``out`` (:func:`assay.core.model_io.save_network`), audit both models on ``test``
    with ``plan`` (default :func:`harden_plan`) and write the before/after report into
    ``report_dir``."""
    from .audit.runner import run_audit
    from .core.inference import has_conv2d
    from .core.model_io import describe_file, save_network
    from .report.compare import write_comparison

    plan = plan if plan is not None else harden_plan(defence)
    hardened = trainable_copy(model)
    hardened.findings = []  # its own audit inspects it; it was not handed over in train mode
    if hardened.device.type == "cpu" and has_conv2d(hardened):
        # the same function with faster CPU convolution kernels (forward + backward 1.3x on
        # the MNIST LeNet); save_network writes contiguous tensors
        hardened.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    started = time.perf_counter()
    # threads sized to the work, as for every check: a small model on 2 threads beside a
    # busy neighbour trained 6x slower than on one (a tabular MLP: 47 s against 8 s)
    with threads_for("auto", hardened, train.x, owner="harden"):
        guarantee = defence.train(hardened, train, config, show_progress=show_progress)
    seconds = time.perf_counter() - started
    hardened.name = f"{model.name} + {defence.label}"
    save_network(hardened.net, out, test)
    before = run_audit(model, test, plan, train_data=train, progress=show_progress,
                       model_info=model_info)
    after = run_audit(hardened, test, plan, train_data=train, progress=show_progress,
                      model_info={"file": describe_file(out)})
    report = write_comparison(
        before, after, report_dir, title=f"Before and after {defence.label}", training={
            "defence": defence.name, "method": dataclasses.asdict(defence),
            "config": dataclasses.asdict(config), "seconds": round(seconds, 3),
            # what a private training guarantees (PrivateTraining); the others return None
            **({"privacy": guarantee.to_dict()} if guarantee is not None else {})})
    return HardenResult(hardened, before, after, seconds, report)


def trainable_copy(model: ModelWrapper) -> ModelWrapper:
    """A deep copy to train. A TorchScript module's deepcopy holds its parameters as
    non-leaf clones, which an optimizer refuses; they are made leaves again."""
    hardened = copy.deepcopy(model)
    with torch.no_grad():
        for param in hardened.parameters():
            if not param.is_leaf:
                param.detach_().requires_grad_(True)
    if not any(p.requires_grad and p.is_floating_point() for p in hardened.parameters()):
        raise AssayValueError(f"{model.name}: the model has no trainable float parameters "
                              "(an int8 model?); harden the float model.")
    return hardened


@dataclass(frozen=True)
class CompressResult:
    model: ModelWrapper
    accuracy_before: float
    accuracy_after: float
    size_before: int
    size_after: int


def compress(model: ModelWrapper, train: Dataset, test: Dataset, *, out: Path,
             prune: float | None = None, structured: bool = False,
             quantize: Literal["int8"] | None = None, static: bool = False,
             distill: str | None = None, config: TrainConfig = TrainConfig(),
             show_progress: bool = True) -> CompressResult:
    """Make one compressed copy of ``model``: magnitude pruning of the fraction ``prune``
    (``structured``: whole filters), int8 quantization (``static``: calibrated on
    ``train``), or distillation into zoo architecture ``distill`` trained on ``train``;
    write it to ``out`` and measure both models' accuracy on ``test`` and their size."""
    from .core.model_io import save_network
    from .defenses import compression
    from .metrics.accuracy import accuracy

    chosen = [name for name, value in (("prune", prune), ("quantize", quantize),
                                       ("distill", distill)) if value is not None]
    if len(chosen) != 1:
        raise AssayValueError("compress takes exactly one of 'prune', 'quantize' and "
                              f"'distill'; got {chosen or 'none'}.")
    new: Any  # the compression functions return a ModelWrapper for a ModelWrapper
    if prune is not None:
        new = compression.prune(model, prune, structure="structured" if structured
                                else "unstructured")
    elif quantize is not None:
        new = compression.quantize(model, "static" if static else "dynamic",
                                   calibration=train if static else None)
    elif distill is not None:
        with threads_for("auto", model, train.x, owner="compress"):
            new = compression.distill(model, distill, train, config=config,
                                      show_progress=show_progress)
    save_network(new.net, out, test)
    before, after = (accuracy(m.predict(test.x), test.y.to(m.device)) for m in (model, new))
    return CompressResult(new, before, after, compression.model_size_bytes(model),
                          compression.model_size_bytes(new))
