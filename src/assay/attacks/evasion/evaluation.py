"""The standard robustness evaluation: an ensemble of diverse attacks, per-sample worst case.

Reference: F. Croce, M. Hein. "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks". ICML 2020 (AutoAttack, "standard" version).

``evaluate_robustness`` runs the stages of a protocol one after the other; each stage
attacks only the points that every earlier stage left robust, so a point counts as
broken when any attack broke it (the per-sample worst case). The final verdict does not
trust the attacks: every adversarial example is checked to lie in the ball and the bounds
and is classified again.

A :class:`Protocol` is a named evaluation with its settings (AutoAttack's ensembles, PGD
with restarts, Square alone for a model without gradients, the single-step FGSM probe).
It builds its stages for the radius that ``evaluate_robustness`` is given, so the radius
is given once: the attacks and the final check of the ball cannot disagree. A protocol
also names the stronger probes that the diagnostics run against it
(:meth:`Protocol.convergence_probe`, :meth:`Protocol.black_box_probe`).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import Any, Callable, Literal

import torch
from torch import Tensor, nn

from ..._params import check_choice, check_float, check_int, check_optional_seed
from ...core.inference import (batched_predict, channels_last_copy, eval_mode,
                               gains_from_channels_last, layout_kept)
from ...errors import AssayValueError
from .._projection import Norm, distance
from .apgd import APGD, APGDT
from .base import (EvasionAttack, check_attack_inputs, check_batch_size,
                   model_bounds)
from .fab import FABT
from .fgsm import FGSM
from .pgd import PGD
from .square import Square

MODES = ("standard", "quick")


@dataclass(frozen=True)
class Stage:
    """One attack of an evaluation, with its budget in words for the report.
    ``black_box``: the attack uses only the model's outputs (the diagnostics compare the
    two kinds)."""

    name: str
    budget: str
    attack: EvasionAttack
    black_box: bool = False


@dataclass(frozen=True)
class StageReport:
    """What one stage did: points attacked and broken, model calls and seconds."""

    name: str
    budget: str
    attacked: int
    broken: int
    queries: int
    seconds: float
    black_box: bool = False

    def as_dict(self) -> dict:
        return {"name": self.name, "budget": self.budget, "attacked": self.attacked,
                "broken": self.broken, "queries": self.queries,
                "seconds": round(self.seconds, 3), "black_box": self.black_box}


@dataclass(frozen=True)
class EvaluationResult:
    """The outcome of :func:`evaluate_robustness`.

    x_adv : Tensor [N, ...] - the adversarial example of each broken point, else the input
    clean_correct : Tensor [N] bool - classified correctly without attack
    robust : Tensor [N] bool - classified correctly and no attack broke it
    stages : list[StageReport] - in the order they ran
    """

    x_adv: Tensor
    clean_correct: Tensor
    robust: Tensor
    stages: list[StageReport] = field(default_factory=list)

    @property
    def clean_accuracy(self) -> float:
        return float(self.clean_correct.float().mean()) if len(self.robust) else float("nan")

    @property
    def robust_accuracy(self) -> float:
        return float(self.robust.float().mean()) if len(self.robust) else float("nan")

    @property
    def queries(self) -> int:
        return sum(s.queries for s in self.stages)

    @property
    def white_box_accuracy(self) -> float:
        """Robust accuracy before the black-box stages added their breaks."""
        black = sum(s.broken for s in self.stages if s.black_box)
        return (float(self.robust.float().sum()) + black) / max(len(self.robust), 1)


def concatenate_evaluations(parts: Sequence[EvaluationResult]) -> EvaluationResult:
    """One evaluation of the points of ``parts`` in order, each part an evaluation of a
    shard of them by the same protocol: per-point tensors concatenated, each stage's counts
    and seconds summed."""
    if not parts:
        raise AssayValueError("concatenate_evaluations: no evaluations given")
    if len(parts) == 1:
        return parts[0]
    names = [s.name for s in parts[0].stages]
    if any([s.name for s in part.stages] != names for part in parts):
        raise AssayValueError("concatenate_evaluations: the parts ran different stages "
                              f"({[[s.name for s in p.stages] for p in parts]})")
    stages = [StageReport(first.name, first.budget,
                          sum(p.stages[i].attacked for p in parts),
                          sum(p.stages[i].broken for p in parts),
                          sum(p.stages[i].queries for p in parts),
                          sum(p.stages[i].seconds for p in parts), first.black_box)
              for i, first in enumerate(parts[0].stages)]
    return EvaluationResult(torch.cat([p.x_adv for p in parts]),
                            torch.cat([p.clean_correct for p in parts]),
                            torch.cat([p.robust for p in parts]), stages)


def standard_stages(*, eps: float, norm: Norm, num_classes: int, seed: int | None = 0,
                    batch_size: int | None = None) -> list[Stage]:
    """AutoAttack's standard composition: APGD-CE (100 steps), APGD-T (100 steps for each of
    the 9 classes ranked 2 to 10 on the clean logits), FAB-T (100 steps, 9 targets) and
    Square (5000 queries, p_init 0.8), one restart each. Fewer classes, fewer targets;
    below four classes there is no APGD-T (its loss needs four logits)."""
    targets = max(1, min(9, num_classes - 1))
    common: dict[str, Any] = dict(eps=eps, norm=norm, seed=seed, batch_size=batch_size)
    stages = [Stage("APGD-CE", "100 steps", APGD(n_iter=100, loss="ce", **common))]
    if num_classes >= 4:  # the targeted DLR loss needs four logits
        stages.append(Stage("APGD-T", f"100 steps x {targets} target classes",
                            APGDT(n_iter=100, n_target_classes=targets, **common)))
    stages += [Stage("FAB-T", f"100 steps x {targets} target classes",
                     FABT(n_iter=100, n_target_classes=targets, **common)),
               Stage("Square", "5000 queries, p_init 0.8",
                     Square(n_queries=5000, p_init=0.8, **common), black_box=True)]
    return stages


def quick_stages(*, eps: float, norm: Norm, num_classes: int, seed: int | None = 0,
                 batch_size: int | None = None) -> list[Stage]:
    """A CI-sized budget, about 1/20 of the standard one: APGD-CE (20 steps), APGD-T (20
    steps for each of the classes ranked 2 to 4) and Square (500 queries, p_init 0.8). No
    FAB-T: after APGD-T it rarely breaks a point (Croce & Hein 2020, table 2)."""
    common: dict[str, Any] = dict(eps=eps, norm=norm, seed=seed, batch_size=batch_size)
    stages = [Stage("APGD-CE", "20 steps", APGD(n_iter=20, loss="ce", **common))]
    if num_classes >= 4:
        targets = min(3, num_classes - 1)
        stages.append(Stage("APGD-T", f"20 steps x {targets} target classes",
                            APGDT(n_iter=20, n_target_classes=targets, **common)))
    stages.append(Stage("Square", "500 queries, p_init 0.8",
                        Square(n_queries=500, p_init=0.8, **common), black_box=True))
    return stages


STAGES: dict[str, Callable[..., list[Stage]]] = {"standard": standard_stages,
                                                  "quick": quick_stages}

# Square's budget when it probes an evaluation that has no black-box stage (PGD).
BLACK_BOX_PROBE_QUERIES = 1000


class Protocol:
    """A named robustness evaluation with its settings; the radius, norm, seed and batch
    size come from :func:`evaluate_robustness`, which builds the stages with them.

    ``label`` describes it in reports; ``white_box``: its stages need input gradients
    (``evaluate_robustness`` refuses a model without them).
    """

    white_box: bool = True

    @property
    def label(self) -> str:
        raise NotImplementedError

    def stages(self, *, eps: float, norm: Norm, num_classes: int, seed: int | None,
               batch_size: int | None) -> list[Stage]:
        raise NotImplementedError

    def convergence_probe(self) -> Protocol | None:
        """A longer attack of the same kind, to see whether this one had converged."""
        return None

    def black_box_probe(self) -> Protocol:
        """The score-based attack that the diagnostics run after this protocol when its
        stages hold none (they read a black-box stage's own breaks otherwise)."""
        return SquareOnly(queries=BLACK_BOX_PROBE_QUERIES)


@dataclass(frozen=True)
class Ensemble(Protocol):
    """AutoAttack's ensemble: ``mode`` "standard" (:func:`standard_stages`) or "quick"
    (:func:`quick_stages`)."""

    mode: Literal["standard", "quick"] = "standard"

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, MODES, "Ensemble")

    @property
    def label(self) -> str:
        return f"{self.mode} ensemble"

    def stages(self, *, eps: float, norm: Norm, num_classes: int, seed: int | None,
               batch_size: int | None) -> list[Stage]:
        return STAGES[self.mode](eps=eps, norm=norm, num_classes=num_classes, seed=seed,
                                 batch_size=batch_size)

    def convergence_probe(self) -> Protocol:
        return APGDCrossEntropy(steps=200 if self.mode == "standard" else 40)


@dataclass(frozen=True)
class PGDRestarts(Protocol):
    """PGD (Madry et al. 2018) with ``steps`` steps (int >= 0, default 20) and ``restarts``
    random restarts (int >= 1, default 1)."""

    steps: int = 20
    restarts: int = 1

    def __post_init__(self) -> None:
        check_int("steps", self.steps, "PGDRestarts", low=0)
        check_int("restarts", self.restarts, "PGDRestarts", low=1)

    @property
    def label(self) -> str:
        return f"PGD-{self.steps}, {self.restarts} restart(s)"

    def stages(self, *, eps: float, norm: Norm, num_classes: int, seed: int | None,
               batch_size: int | None) -> list[Stage]:
        attack = PGD(eps=eps, norm=norm, steps=self.steps, restarts=self.restarts, seed=seed,
                     batch_size=batch_size)
        return [Stage("PGD", f"{self.steps} steps x {self.restarts} restarts", attack)]

    def convergence_probe(self) -> Protocol:
        return PGDRestarts(steps=max(2 * self.steps, 10), restarts=self.restarts + 1)


@dataclass(frozen=True)
class APGDCrossEntropy(Protocol):
    """APGD on the cross-entropy (Croce & Hein 2020), ``steps`` iterations (int >= 1)."""

    steps: int = 100

    def __post_init__(self) -> None:
        check_int("steps", self.steps, "APGDCrossEntropy", low=1)

    @property
    def label(self) -> str:
        return f"APGD-CE-{self.steps}"

    def stages(self, *, eps: float, norm: Norm, num_classes: int, seed: int | None,
               batch_size: int | None) -> list[Stage]:
        return [Stage("APGD-CE", f"{self.steps} steps",
                      APGD(eps=eps, norm=norm, n_iter=self.steps, seed=seed,
                           batch_size=batch_size))]


@dataclass(frozen=True)
class SquareOnly(Protocol):
    """The black-box Square attack alone (Andriushchenko et al. 2020), ``queries`` queries
    (int >= 1, default 5000), p_init 0.8: for a model whose outputs carry no gradient (an
    int8 or exported model), and as the black-box probe of a white-box evaluation."""

    queries: int = 5000
    white_box = False

    def __post_init__(self) -> None:
        check_int("queries", self.queries, "SquareOnly", low=1)

    @property
    def label(self) -> str:
        return "Square only (no gradients)"

    def stages(self, *, eps: float, norm: Norm, num_classes: int, seed: int | None,
               batch_size: int | None) -> list[Stage]:
        return [Stage("Square", f"{self.queries} queries, p_init 0.8",
                      Square(eps=eps, norm=norm, n_queries=self.queries, p_init=0.8, seed=seed,
                             batch_size=batch_size), black_box=True)]


@dataclass(frozen=True)
class SingleStep(Protocol):
    """One FGSM step (Goodfellow et al. 2015): the diagnostics' check that the iterative
    evaluation is not stuck."""

    @property
    def label(self) -> str:
        return "FGSM"

    def stages(self, *, eps: float, norm: Norm, num_classes: int, seed: int | None,
               batch_size: int | None) -> list[Stage]:
        return [Stage("FGSM", "1 step", FGSM(eps=eps, norm=norm, batch_size=batch_size))]


def evaluate_robustness(model: nn.Module, x: Tensor, y: Tensor, *, eps: float,
                        norm: Norm = "linf", mode: str | Protocol = "standard",
                        seed: int | None = 0,
                        batch_size: int | None = 256,
                        stages: list[Stage] | None = None,
                        channels_last: bool | None = None,
                        on_stage: Callable[[StageReport], None] | None = None) -> EvaluationResult:
    """Robust accuracy of ``model`` on ``(x, y)`` under the evaluation ``mode``.

    Parameters
    ----------
    model : nn.Module returning logits (an :class:`assay.core.model.ModelWrapper` brings
        its bounds; a bare module is taken to have inputs in [0, 1])
    x : Tensor [N, ...] in the model's bounds (finite, of the model's input shape); y : Tensor
        [N] int64 labels in 0..K-1; anything else is an ``AssayValueError``
    eps : float >= 0 - radius of the threat model; eps = 0 gives clean accuracy exactly
    norm : {"linf", "l2"}, default "linf"
    mode : {"standard", "quick"} or a :class:`Protocol`, default "standard" - the
        evaluation: a name of AutoAttack's ensembles (``Ensemble(mode)``), or a protocol
        such as ``PGDRestarts(steps=20)`` or ``SquareOnly(queries=1000)``, whose stages are
        built for ``eps``; ignored when ``stages`` is given
    seed : int or None, default 0 - seeds every stage
    batch_size : int or None, default 256 - inputs per forward pass
    stages : list[Stage] or None - a custom ensemble, run in the order given; its attacks
        must use ``eps`` themselves (prefer a :class:`Protocol`, built for ``eps``)
    channels_last : bool or None, default None - attack a copy of the model with its
        convolution weights in channels_last memory format (same function, faster kernels:
        on the MNIST LeNet with 2 CPU threads, forward 1.9x and forward+backward 1.3x
        faster). None: on CPU for 4-D inputs when the model has 2-D convolutions. Results
        can differ from the default layout by float rounding only. False: the attacks run
        the model in its own layout (they make no channels_last copy of their own).
    on_stage : called with each finished stage's report (progress display)
    """
    owner = "evaluate_robustness"
    eps = check_float("eps", eps, owner, low=0.0)
    norm = check_choice("norm", norm, ("linf", "l2"), owner)
    protocol = mode if isinstance(mode, Protocol) else Ensemble(check_choice("mode", mode,
                                                                             MODES, owner))
    seed = check_optional_seed("seed", seed, owner)
    batch_size = check_batch_size(batch_size, owner)
    # Labels beyond the model's classes would count as "not robust" and give accuracy 0.
    check_attack_inputs(model, x, y, owner)
    if channels_last is None:
        channels_last = gains_from_channels_last(model, x)
    if channels_last:
        model = channels_last_copy(model)
    with eval_mode(model), contextlib.nullcontext() if channels_last else layout_kept():
        clean_correct = _predict(model, x, batch_size) == y
        if stages is None and eps > 0 and protocol.white_box and not is_differentiable(model, x):
            raise AssayValueError(f"{owner}: the model's outputs carry no gradient (an int8 or "
                                  "exported model?); the white-box stages cannot run. Fix: "
                                  "pass mode=SquareOnly(queries=5000), a black-box protocol.")
        if stages is None and eps > 0:
            num_classes = int(getattr(model, "num_classes", 0) or _count_classes(model, x))
            stages = protocol.stages(eps=eps, norm=norm, num_classes=num_classes, seed=seed,
                                     batch_size=batch_size)
        x_adv = x.detach().clone()
        robust = clean_correct.clone()
        reports = []
        for stage in stages or []:
            index = robust.nonzero().squeeze(1)
            started = time.perf_counter()
            broken, queries = 0, 0
            if len(index):
                result = stage.attack.run(model, x[index], y[index])
                queries = result.queries
                hit = index[result.success]
                x_adv[hit] = result.x_adv[result.success]
                robust[hit] = False
                broken = len(hit)
            reports.append(StageReport(stage.name, stage.budget, len(index), broken, queries,
                                       time.perf_counter() - started, stage.black_box))
            if on_stage is not None:
                on_stage(reports[-1])
        robust = _verified(model, x, x_adv, y, clean_correct, eps, norm, batch_size)
    return EvaluationResult(x_adv, clean_correct, robust, reports)


def is_differentiable(model: nn.Module, x: Tensor) -> bool:
    """Whether the model's logits carry a gradient back to its input (int8-quantized and
    some exported models do not; gradient attacks cannot run on them). Quantized layers
    count as non-differentiable even where autograd runs through them: their backward is
    not implemented and returns wrong gradients silently."""
    for module in model.modules():
        if type(module).__module__.startswith(("torch.ao.nn.quantized", "torch.nn.quantized")):
            return False
        graph = getattr(module, "graph", None) if isinstance(module, torch.jit.ScriptModule) \
            else None
        if graph is not None and "quantized::" in str(graph):
            return False
    if len(x) == 0:
        return True
    probe = x[:1].detach().clone().requires_grad_(True)
    with torch.enable_grad():
        return bool(model(probe).requires_grad)


def _predict(model: nn.Module, x: Tensor, batch_size: int | None) -> Tensor:
    # The model runs where x is: evaluate_robustness gets x on the model's device.
    return batched_predict(model, x, batch_size=batch_size, device=x.device,
                           owner="evaluate_robustness")


def _count_classes(model: nn.Module, x: Tensor) -> int:
    with torch.no_grad():
        return int(model(x[:1]).shape[1]) if len(x) else 0


def _verified(model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, clean_correct: Tensor,
              eps: float, norm: Norm, batch_size: int | None) -> Tensor:
    """Robust points, re-derived from the adversarial examples themselves: a point is
    broken only by an example inside the ball and the bounds that the model misclassifies."""
    lo, hi = model_bounds(model)
    size = distance(x_adv, x, norm) if len(x) else torch.zeros(0, device=x.device)
    inside = (size <= eps * (1 + 1e-5) + 1e-6)
    if len(x):
        flat = x_adv.flatten(1)
        inside &= (flat.amin(1) >= lo - 1e-6) & (flat.amax(1) <= hi + 1e-6)
    if bool((~inside).any()):
        raise AssayValueError(f"evaluate_robustness: {int((~inside).sum())} adversarial examples "
                              f"leave the {norm} ball of radius {eps:g} or the bounds; an attack "
                              "is faulty.")
    return clean_correct & (_predict(model, x_adv, batch_size) == y)
