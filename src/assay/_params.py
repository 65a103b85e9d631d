"""Parameter validation shared by every algorithm, check and plan.

A parameter's allowed values are declared once, as data: a :class:`Constraint` (``Int``,
``Float``, ``Choice``, ``Bool``, ``Str``, ``Optional``, ``ListOf``, ``ListOrTable``, and
:func:`Seed`). The same object validates an attack's constructor argument and a check's
plan parameter, describes itself for messages and ``assay checks``, and lists values it
must refuse (``invalid_examples``), so one shared test can try them on every registered
algorithm and check. Messages follow one pattern::

    The 'x' parameter of Y must be <allowed>. Got <value> instead.

The ``check_*`` functions are the same constraints in function form, for code that
validates one argument in place.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from .errors import AssayValueError

__all__ = ["Bool", "Choice", "Constraint", "Float", "Int", "ListOf", "ListOrTable", "Optional",
           "Seed", "Str", "check_bool", "check_choice", "check_float", "check_int",
           "check_optional_seed", "check_values"]


def _fail(name: str, owner: str, allowed: str, value: Any, detail: str = "") -> AssayValueError:
    return AssayValueError(
        f"The '{name}' parameter{f' of {owner}' if owner else ''} must be {allowed}. "
        f"Got {value!r} instead"
        + (f": {detail}." if detail else ".")
    )


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


class Constraint:
    """The allowed values of one parameter. Subclasses are frozen dataclasses that define
    ``describe`` (the allowed values in words), ``problem`` (None when a value is allowed,
    else a detail, possibly empty), ``normalise``, ``example`` (one allowed value) and
    ``invalid_examples`` (values that must be refused)."""

    def describe(self) -> str:
        raise NotImplementedError

    def problem(self, value: Any) -> str | None:
        raise NotImplementedError

    def normalise(self, value: Any) -> Any:
        return value

    def example(self) -> Any:
        raise NotImplementedError

    def invalid_examples(self) -> list[Any]:
        raise NotImplementedError

    def allows(self, value: Any) -> bool:
        return self.problem(value) is None

    def check(self, name: str, value: Any, owner: str) -> Any:
        """``value`` in normal form (a float for a ``Float``), or an ``AssayValueError``
        naming ``name`` of ``owner``, the allowed values and ``value``."""
        detail = self.problem(value)
        if detail is not None:
            raise _fail(name, owner, self.describe(), value, detail)
        return self.normalise(value)


@dataclass(frozen=True)
class Int(Constraint):
    """An int (never a bool) in [low, high]; None: unbounded on that side."""

    low: int | None = None
    high: int | None = None

    def describe(self) -> str:
        return _range_text("an int", self.low, self.high)

    def problem(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return ""
        if (self.low is not None and value < self.low) or \
                (self.high is not None and value > self.high):
            return ""
        return None

    def example(self) -> int:
        return self.low if self.low is not None else self.high if self.high is not None else 0

    def invalid_examples(self) -> list[Any]:
        bad: list[Any] = ["text", None, True, float(self.example()) + 0.5]
        bad += [self.low - 1] if self.low is not None else []
        return bad + ([self.high + 1] if self.high is not None else [])


@dataclass(frozen=True)
class Float(Constraint):
    """A finite number (an int is accepted and made a float; a bool is not) between low
    and high, each bound closed unless ``low_open`` / ``high_open``."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def describe(self) -> str:
        return _range_text("a finite number", self.low, self.high, self.low_open,
                           self.high_open)

    def problem(self, value: Any) -> str | None:
        if not _is_number(value):
            return ""
        low, high = self.low, self.high
        if low is not None and (value <= low if self.low_open else value < low):
            return ""
        if high is not None and (value >= high if self.high_open else value > high):
            return ""
        return None

    def normalise(self, value: Any) -> float:
        return float(value)

    def example(self) -> float:
        low, high = self.low, self.high
        if low is not None and high is not None:
            return (low + high) / 2 if self.low_open or self.high_open else float(low)
        if low is not None:
            return low + 1.0 if self.low_open else float(low)
        return high - 1.0 if high is not None else 0.0

    def invalid_examples(self) -> list[Any]:
        bad: list[Any] = ["text", None, True, math.nan, math.inf, -math.inf]
        if self.low is not None:
            bad.append(self.low if self.low_open else self.low - 1.0)
        if self.high is not None:
            bad.append(self.high if self.high_open else self.high + 1.0)
        return bad


@dataclass(frozen=True)
class Choice(Constraint):
    """One of ``values``, of the same type (1.0 is not the choice 1, True not 1)."""

    values: tuple[Any, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", tuple(self.values))

    def describe(self) -> str:
        return "one of {" + ", ".join(repr(v) for v in self.values) + "}"

    def problem(self, value: Any) -> str | None:
        for allowed in self.values:
            same_type = type(value) is type(allowed) or (
                isinstance(value, type(allowed)) and not isinstance(value, bool))
            if same_type and value == allowed:
                return None
        return ""

    def example(self) -> Any:
        return self.values[0]

    def invalid_examples(self) -> list[Any]:
        bad: list[Any] = ["<not one of them>", 12345]
        return bad + ([None] if None not in self.values else [])


@dataclass(frozen=True)
class Bool(Constraint):
    """True or False (not 1, not "yes")."""

    def describe(self) -> str:
        return "a bool (true or false)"

    def problem(self, value: Any) -> str | None:
        return None if isinstance(value, bool) else ""

    def example(self) -> bool:
        return False

    def invalid_examples(self) -> list[Any]:
        return [1, 0, "yes", None]


@dataclass(frozen=True)
class Str(Constraint):
    """Any string."""

    def describe(self) -> str:
        return "a string"

    def problem(self, value: Any) -> str | None:
        return None if isinstance(value, str) else ""

    def example(self) -> str:
        return "text"

    def invalid_examples(self) -> list[Any]:
        return [3, None, ["text"]]


@dataclass(frozen=True)
class Optional(Constraint):
    """None, or a value ``inner`` allows."""

    inner: Constraint

    def describe(self) -> str:
        return f"None or {self.inner.describe()}"

    def problem(self, value: Any) -> str | None:
        return None if value is None else self.inner.problem(value)

    def normalise(self, value: Any) -> Any:
        return None if value is None else self.inner.normalise(value)

    def example(self) -> Any:
        return self.inner.example()

    def invalid_examples(self) -> list[Any]:
        return [v for v in self.inner.invalid_examples() if v is not None]


def Seed() -> Optional:  # noqa: N802 - reads like the other constraints
    """A seed: None (no fixed seed) or an int >= 0."""
    return Optional(Int(low=0))


@dataclass(frozen=True)
class ListOf(Constraint):
    """A list whose items ``item`` allows; non-empty and without repeats unless told
    otherwise (a repeated entry would run twice and be reported once)."""

    item: Constraint
    nonempty: bool = True
    unique: bool = True

    def describe(self) -> str:
        text = "a non-empty list" if self.nonempty else "a list"
        text += f", each item {self.item.describe()}"
        return text + (", no item twice" if self.unique else "")

    def problem(self, value: Any) -> str | None:
        if not isinstance(value, list) or (self.nonempty and not value):
            return ""
        for entry in value:
            if not self.item.allows(entry):
                return f"{entry!r} is not allowed"
        if self.unique:
            normal = [self.item.normalise(v) for v in value]
            repeated = [v for i, v in enumerate(value) if normal[i] in normal[:i]]
            if repeated:
                return f"{repeated[0]!r} is listed more than once"
        return None

    def normalise(self, value: Any) -> list[Any]:
        return [self.item.normalise(v) for v in value]

    def example(self) -> list[Any]:
        return [self.item.example()]

    def invalid_examples(self) -> list[Any]:
        bad: list[Any] = ["text", None, {"a": 1}]
        bad += [[]] if self.nonempty else []
        bad += [[v] for v in self.item.invalid_examples()]
        return bad + ([[self.item.example()] * 2] if self.unique else [])


@dataclass(frozen=True)
class ListOrTable(Constraint):
    """A list that ``items`` allows, or a non-empty table of such lists keyed by some of
    ``keys`` (robustness radii per norm: ``{linf = [0.1], l2 = [0.5]}``)."""

    items: ListOf
    keys: tuple[Any, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", tuple(self.keys))

    def describe(self) -> str:
        return (f"{self.items.describe()}, or a table of such lists keyed by "
                f"{Choice(self.keys).describe()}")

    def problem(self, value: Any) -> str | None:
        if not isinstance(value, Mapping):
            return self.items.problem(value)
        if not value:
            return "the table is empty"
        for key, entries in value.items():
            if key not in self.keys:
                return f"the key {key!r} is not allowed"
            detail = self.items.problem(entries)
            if detail is not None:
                return f"{detail or 'the entry is not allowed'} for {key!r}"
        return None

    def normalise(self, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: self.items.normalise(v) for k, v in value.items()}
        return self.items.normalise(value)

    def example(self) -> list[Any]:
        return self.items.example()

    def invalid_examples(self) -> list[Any]:
        key = self.keys[0]
        bad = self.items.invalid_examples()
        tables = [{}, {"<not a key>": self.items.example()}]
        tables += [{key: v} for v in self.items.invalid_examples() if not isinstance(v, dict)]
        return [v for v in bad if not isinstance(v, dict)] + tables


class Configured:
    """Base of the algorithms configured once by keyword-only settings: ``constraints``
    declares each setting's allowed values as data, :meth:`_validated` checks one
    against it, and the shared contract tests try every constraint's invalid examples."""

    constraints: ClassVar[Mapping[str, Constraint]] = {}

    def _validated(self, name: str, value: Any) -> Any:
        """``value`` checked against ``constraints[name]``, in normal form."""
        return self.constraints[name].check(name, value, type(self).__name__)


def check_values(constraints: Mapping[str, Constraint], values: Mapping[str, Any],
                 owner: str) -> dict[str, Any]:
    """Every value of ``values`` checked against its constraint, in normal form; one
    ``AssayValueError`` naming every bad parameter."""
    normal: dict[str, Any] = {}
    problems = []
    for name, value in values.items():
        try:
            normal[name] = constraints[name].check(name, value, owner)
        except AssayValueError as err:
            problems.append(str(err))
    if problems:
        raise AssayValueError(" ".join(problems))
    return normal


# -- the same constraints as functions -----------------------------------------------
def check_choice(name: str, value: Any, allowed: Iterable[Any], owner: str) -> Any:
    return Choice(tuple(allowed)).check(name, value, owner)


def check_int(name: str, value: Any, owner: str, *, low: int | None = None,
              high: int | None = None) -> int:
    return Int(low, high).check(name, value, owner)


def check_float(name: str, value: Any, owner: str, *, low: float | None = None,
                high: float | None = None, low_open: bool = False,
                high_open: bool = False) -> float:
    return Float(low, high, low_open, high_open).check(name, value, owner)


def check_bool(name: str, value: Any, owner: str) -> bool:
    return Bool().check(name, value, owner)


def check_optional_seed(name: str, value: Any, owner: str) -> int | None:
    return Seed().check(name, value, owner)


def _range_text(kind: str, low: Any, high: Any, low_open: bool = False,
                high_open: bool = False) -> str:
    if low is None and high is None:
        return kind
    if high is None:
        return f"{kind} {'>' if low_open else '>='} {low}"
    if low is None:
        return f"{kind} {'<' if high_open else '<='} {high}"
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    return f"{kind} in {left}{low}, {high}{right}"
