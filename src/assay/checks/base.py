"""What a check is, and the registry that lets the runner find checks by name.

A check answers one question about the model (is it accurate? robust?). It declares its
parameters (type, default, allowed values), the metric names it will produce for given
parameters (so a plan's gates are validated before anything runs), and ``run`` returns
metrics, findings and plot data: plain values, never rendered output.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..core.data import Dataset
from ..core.model import ModelWrapper
from ..core.training import TrainingRecipe
from .._params import (Bool, Choice, Constraint, Float, Int, ListOf, ListOrTable, Optional,
                       Str)
from ..errors import AssayValueError
from ..registry import Registry
# The data a check returns lives in the torch-free results layer; re-exported here.
from ..results import CheckOutput, Finding, MetricInfo, Plot, describe_metrics

__all__ = ["BUILTIN_MODULES", "CHECKS", "Check", "CheckContext", "CheckOutput", "Finding",
           "MetricInfo", "Param", "Plot", "REGISTRY", "get_check", "load_builtin_checks",
           "radius_limit", "radius_problem", "register"]


@dataclass(frozen=True)
class Param:
    """One declared parameter of a check.

    ``kind`` names the accepted type: "int", "float", "bool", "str", "list[float]",
    "list[int]", "list[str]" or "float-list-or-table" (a list of numbers, or a table of such lists
    keyed by ``allowed`` values). ``allowed`` restricts str values and list items (the keys
    of a table); ``low`` and ``high`` bound numbers. They are turned into ``constraint``
    (see :mod:`assay._params`), which validates the parameter; a parameter whose default
    is None also takes None. Lists are non-empty and list each value once.
    """

    name: str
    kind: str
    default: Any
    doc: str
    allowed: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    constraint: Constraint = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "constraint", _constraint_of(self))


def _constraint_of(param: Param) -> Constraint:
    """The constraint that ``param``'s kind, allowed values and bounds declare."""
    allowed = tuple(param.allowed) if param.allowed is not None else None
    numbers = Float(param.low, param.high)
    ints = Int(None if param.low is None else math.ceil(param.low),
               None if param.high is None else math.floor(param.high))
    kinds: dict[str, Callable[[], Constraint]] = {
        "int": lambda: ints,
        "float": lambda: numbers,
        "bool": Bool,
        "str": lambda: Choice(allowed) if allowed is not None else Str(),
        "list[float]": lambda: ListOf(numbers),
        "list[int]": lambda: ListOf(Choice(allowed) if allowed is not None else ints),
        "list[str]": lambda: ListOf(Choice(allowed) if allowed is not None else Str()),
        "float-list-or-table": lambda: ListOrTable(ListOf(numbers), allowed or ()),
    }
    if param.kind not in kinds:
        raise AssayValueError(f"Param {param.name!r}: unknown kind {param.kind!r}; "
                              f"known: {sorted(kinds)}.")
    constraint = kinds[param.kind]()
    return Optional(constraint) if param.default is None else constraint


@dataclass(frozen=True)
class CheckContext:
    """What a check runs on: the wrapped model, the evaluation split, an optional
    training split, and the audit's seed. ``progress`` enables progress bars;
    ``data_root`` is where a check reads further data sets (None: ``$ASSAY_DATA_DIR``);
    ``training`` is the plan's ``[training]`` recipe (the model's, and the one reference
    models follow), None when the plan has none.

    ``pieces`` (the runner's ``assay.audit.cache.TaskPieces``: the cached pieces of this
    task, scoped to its cache key) and ``executor`` (the one running the audit) serve
    :meth:`piece` and :meth:`map`; without them a piece is just computed and a map runs in
    order."""

    model: ModelWrapper
    data: Dataset
    seed: int = 0
    train_data: Dataset | None = None
    progress: bool = True
    data_root: str | Path | None = None
    training: TrainingRecipe | None = None
    pieces: Any = None
    executor: Any = None

    def piece(self, name: str, compute: Callable[[], Any], *,
              encode: Callable[[Any], Any] | None = None,
              decode: Callable[[Any], Any] | None = None) -> Any:
        """The piece ``name`` of this check: read back from the cache when an earlier
        (interrupted) run stored it, else ``compute()``, stored as soon as it returns.
        ``encode`` turns the value into JSON values and tensors (default: it is one);
        ``decode`` turns that back, raising ValueError (or TypeError, KeyError) for a
        stored value that does not fit, which is then recomputed. The name must tell the
        check's pieces apart; the cache key already holds the parameters, model, data,
        seed and versions."""
        if self.pieces is None:
            return compute()
        return self.pieces.piece(name, compute, encode=encode, decode=decode)

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        """``[fn(item) for item in items]`` through the audit's executor, which may run
        independent pieces anywhere (the local executor: one after another, in order)."""
        if self.executor is None:
            return [fn(item) for item in items]
        return self.executor.map(fn, items)


class Check(ABC):
    """Subclass, set ``name``, ``pillar``, ``summary``, ``params`` and ``declared_metrics``,
    implement ``metric_names`` and ``run``, and decorate with :func:`register`.

    ``declared_metrics`` maps a metric name or an ``fnmatch`` pattern
    (``"robust_accuracy@*"``) to its :class:`MetricInfo` (which way is better, unit,
    range); the runner attaches it to the result, and the report reads directions from
    there only, so a metric without one is never marked better or worse."""

    name: ClassVar[str]
    pillar: ClassVar[str]
    summary: ClassVar[str]
    params: ClassVar[tuple[Param, ...]] = ()
    declared_metrics: ClassVar[Mapping[str, MetricInfo]] = {}

    @abstractmethod
    def metric_names(self, params: dict[str, Any]) -> list[str]:
        """The metrics ``run`` will return for these (validated) parameters."""

    @abstractmethod
    def run(self, ctx: CheckContext, params: dict[str, Any]) -> CheckOutput:
        """Compute the metrics. ``params`` is complete and validated."""

    def describe_metrics(self, names: Iterable[str]) -> dict[str, MetricInfo]:
        """Each metric of ``names`` with the :class:`MetricInfo` this check declares for it
        (:attr:`declared_metrics`); undeclared names are left out."""
        return describe_metrics(names, self.declared_metrics)

    def validate_params(self, params: dict[str, Any]) -> list[str]:
        """Problems with resolved ``params`` that need no model or data (a file that must
        exist, two entries that mean the same), each naming the parameter and the fix.
        Called when the plan is loaded."""
        return []

    def input_files(self, params: dict[str, Any]) -> list[str]:
        """Files named by ``params`` whose contents decide the output (a baseline model, an
        OOD set): the cache key holds their sha256, so a file changed in place is never
        answered from the cache."""
        return []

    def validate_for(self, ctx: CheckContext, params: dict[str, Any]) -> list[str]:
        """Problems with ``params`` for this model and data (an eps larger than the input
        range, a data set that is not there), each naming the parameter and the fix. The
        runner asks every check of a plan before the first one runs."""
        return []

    def resolve_params(self, given: dict[str, Any], *, where: str = "") -> dict[str, Any]:
        """Fill defaults and validate ``given``; raise one error listing every problem."""
        declared = {p.name: p for p in self.params}
        problems = [f"unknown parameter {key!r}; known: {sorted(declared)}"
                    for key in given if key not in declared]
        resolved: dict[str, Any] = {}
        for param in self.params:
            try:
                resolved[param.name] = param.constraint.check(
                    param.name, given.get(param.name, param.default), "")  # prefixed below
            except AssayValueError as err:
                problems.append(str(err).rstrip("."))  # joined with "; " below
        if not problems:
            problems = self.validate_params(resolved)
        if problems:
            prefix = f"{where}check {self.name!r}: "
            raise AssayValueError(prefix + "; ".join(problems))
        return resolved


def radius_limit(norm: str, bounds: tuple[float, float], input_shape: tuple[int, ...]) -> float:
    """The largest radius that still means something in the input box: every point of
    the box lies within it of every other (Linf: the box's width; L2 and L1: its diameter
    in that norm, width * sqrt(D) and width * D for D input values)."""
    width = bounds[1] - bounds[0]
    size = math.prod(input_shape)
    return {"linf": width, "l2": width * math.sqrt(size), "l1": width * size}[norm]


def radius_problem(name: str, norm: str, radii: list[float], ctx: CheckContext) -> str | None:
    """A message when a radius exceeds :func:`radius_limit` for the model's bounds and the
    data's input shape (e.g. eps = 1e308: it overflows and says nothing a smaller one
    would not), else None."""
    limit = radius_limit(norm, ctx.model.bounds, ctx.data.input_shape)
    over = [r for r in radii if r > limit * (1 + 1e-9)]
    if not over:
        return None
    return (f"the {name!r} parameter has {norm} radius {over[0]:g}, larger than the input "
            f"range allows ({limit:g} for bounds {list(ctx.model.bounds)} and inputs of shape "
            f"{list(ctx.data.input_shape)}): every input is then within reach of every other. "
            f"Fix: use radii up to {limit:g}")


BUILTIN_MODULES = ("accuracy", "robustness", "corruptions", "calibration", "conformal", "ood",
                   "compression", "certified", "explanations", "fairness", "privacy",
                   "backdoor", "poisoning", "dp_audit", "extraction", "attribute_inference",
                   "reconstruction")

# Built-in checks are imported on first use (by name: the check modules import this one);
# other packages add theirs through the "assay.checks" entry-point group.
CHECKS: Registry[type[Check]] = Registry(
    "check", group="assay.checks", builtins=[f"{__package__}.{m}" for m in BUILTIN_MODULES])
REGISTRY = CHECKS  # the name this registry had before it was a Registry


def register(cls: type[Check]) -> type[Check]:
    """Class decorator: make the check available to plans by its ``name``."""
    return CHECKS.add(cls.name, cls)


def load_builtin_checks() -> Registry[type[Check]]:
    """The check registry, with the built-in checks and the plug-ins loaded."""
    CHECKS.names()
    return CHECKS


def get_check(name: str) -> Check:
    """A new instance of the check called ``name``; an unknown name is an error listing
    the registered ones."""
    return CHECKS.lookup(name)()
