"""What a check is, and the registry that lets the runner find checks by name.

A check answers one question about the model (is it accurate? robust?). It declares its
parameters (type, default, allowed values), the metric names it will produce for given
parameters (so a plan's gates are validated before anything runs), and ``run`` returns
metrics, findings and plot data: plain values, never rendered output.
"""

from __future__ import annotations

import importlib
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..core.data import Dataset
from ..core.model import ModelWrapper
from ..core.training import TrainingRecipe
from ..errors import AssayValueError
# The data a check returns lives in the torch-free results layer; re-exported here.
from ..results import CheckOutput, Finding, MetricInfo, Plot, describe_metrics

__all__ = ["BUILTIN_MODULES", "Check", "CheckContext", "CheckOutput", "Finding", "MetricInfo",
           "Param", "Plot", "REGISTRY", "get_check", "load_builtin_checks", "radius_limit",
           "radius_problem", "register"]


@dataclass(frozen=True)
class Param:
    """One declared parameter of a check.

    ``kind`` names the accepted type: "int", "float", "bool", "str", "list[float]",
    "list[int]", "list[str]" or "float-list-or-table" (a list of numbers, or a table of such lists
    keyed by ``allowed`` values). ``allowed`` restricts str values and list items.
    """

    name: str
    kind: str
    default: Any
    doc: str
    allowed: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class CheckContext:
    """What a check runs on: the wrapped model, the evaluation split, an optional
    training split, and the audit's seed. ``progress`` enables progress bars;
    ``data_root`` is where a check reads further data sets (None: ``$ASSAY_DATA_DIR``);
    ``training`` is the plan's ``[training]`` recipe (the model's, and the one reference
    models follow), None when the plan has none."""

    model: ModelWrapper
    data: Dataset
    seed: int = 0
    train_data: Dataset | None = None
    progress: bool = True
    data_root: str | Path | None = None
    training: TrainingRecipe | None = None


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
            value = given.get(param.name, param.default)
            problem = _validate(param, value)
            if problem:
                problems.append(problem)
            else:
                resolved[param.name] = _normalise(param, value)
        if not problems:
            problems = self.validate_params(resolved)
        if problems:
            prefix = f"{where}check {self.name!r}: "
            raise AssayValueError(prefix + "; ".join(problems))
        return resolved


def _validate(param: Param, value: Any) -> str | None:
    def is_number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    expected = {
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": is_number,
        "bool": lambda v: isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
        "list[float]": lambda v: isinstance(v, list) and bool(v) and all(map(is_number, v)),
        "list[int]": lambda v: isinstance(v, list) and bool(v) and all(
            isinstance(i, int) and not isinstance(i, bool) for i in v),
        "list[str]": lambda v: isinstance(v, list) and bool(v) and all(
            isinstance(i, str) for i in v),
        "float-list-or-table": lambda v: (
            isinstance(v, list) and bool(v) and all(map(is_number, v)))
        or (isinstance(v, dict) and bool(v) and all(
            isinstance(i, list) and i and all(map(is_number, i)) for i in v.values())),
    }[param.kind]
    if value is None and param.default is None:
        return None
    allowed_text = f" ({param.doc})" if param.doc else ""
    if not expected(value):
        return (f"the {param.name!r} parameter must be {param.kind}{allowed_text}; "
                f"got {value!r}")
    items = (value if isinstance(value, list) else list(value) if isinstance(value, dict)
             else [value])
    if param.allowed is not None and param.kind in ("str", "list[str]", "list[int]",
                                                    "float-list-or-table"):
        keys = items if param.kind != "float-list-or-table" or isinstance(value, dict) else []
        bad = [i for i in keys if i not in param.allowed]
        if bad:
            return (f"the {param.name!r} parameter must be one of {list(param.allowed)}; "
                    f"got {bad[0]!r}")
    numbers = [v for v in (value if isinstance(value, list) else
                           sum(value.values(), []) if isinstance(value, dict) else [value])
               if is_number(v)]
    if param.low is not None and any(v < param.low for v in numbers):
        return f"the {param.name!r} parameter must be >= {param.low}; got {value!r}"
    if param.high is not None and any(v > param.high for v in numbers):
        return f"the {param.name!r} parameter must be <= {param.high}; got {value!r}"
    # A repeated entry would run twice and be reported once (metric names collide).
    lists = value.items() if isinstance(value, dict) else [(None, value)] \
        if isinstance(value, list) else []
    for key, entries in lists:
        repeated = [v for i, v in enumerate(entries) if v in entries[:i]]
        if repeated:
            where = f" for {key!r}" if key is not None else ""
            return (f"the {param.name!r} parameter lists {repeated[0]!r} more than once{where}; "
                    f"list each value once (got {value!r})")
    return None


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


def _normalise(param: Param, value: Any) -> Any:
    if param.kind == "float" and value is not None:
        return float(value)
    if param.kind == "list[float]":
        return [float(v) for v in value]
    if param.kind == "float-list-or-table" and isinstance(value, list):
        return [float(v) for v in value]
    if param.kind == "float-list-or-table" and isinstance(value, dict):
        return {k: [float(v) for v in vs] for k, vs in value.items()}
    return value


REGISTRY: dict[str, type[Check]] = {}


def register(cls: type[Check]) -> type[Check]:
    """Class decorator: make the check available to plans by its ``name``."""
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise AssayValueError(f"A check named {cls.name!r} is already registered.")
    REGISTRY[cls.name] = cls
    return cls


BUILTIN_MODULES = ("accuracy", "robustness", "corruptions", "calibration", "conformal", "ood",
                   "compression", "certified")


def load_builtin_checks() -> dict[str, type[Check]]:
    """Import the built-in check modules (each registers itself) and return the registry."""
    # By name, at call time: the check modules import this one.
    for module in BUILTIN_MODULES:
        importlib.import_module(f"{__package__}.{module}")
    return REGISTRY


def get_check(name: str) -> Check:
    load_builtin_checks()
    if name not in REGISTRY:
        raise AssayValueError(f"Unknown check {name!r}; registered checks: {sorted(REGISTRY)}.")
    return REGISTRY[name]()
