"""Parameter validation shared by every algorithm, check and plan.

Messages follow one pattern: "The 'x' parameter of Y must be <allowed>. Got <value> instead."
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from .errors import AssayValueError


def _fail(name: str, owner: str, allowed: str, value: Any) -> AssayValueError:
    return AssayValueError(
        f"The '{name}' parameter of {owner} must be {allowed}. Got {value!r} instead."
    )


def check_choice(name: str, value: Any, allowed: Iterable[Any], owner: str) -> Any:
    allowed = tuple(allowed)
    if value not in allowed:
        shown = "{" + ", ".join(repr(a) for a in allowed) + "}"
        raise _fail(name, owner, f"one of {shown}", value)
    return value


def check_int(name: str, value: Any, owner: str, *, low: int | None = None,
              high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(name, owner, _range_text("an int", low, high), value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise _fail(name, owner, _range_text("an int", low, high), value)
    return value


def check_float(name: str, value: Any, owner: str, *, low: float | None = None,
                high: float | None = None, low_open: bool = False,
                high_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(name, owner, _range_text("a finite number", low, high, low_open, high_open),
                    value)
    bad_low = low is not None and (value <= low if low_open else value < low)
    bad_high = high is not None and (value >= high if high_open else value > high)
    if bad_low or bad_high:
        raise _fail(name, owner, _range_text("a number", low, high, low_open, high_open), value)
    return float(value)


def check_bool(name: str, value: Any, owner: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(name, owner, "a bool (true or false)", value)
    return value


def check_optional_seed(name: str, value: Any, owner: str) -> int | None:
    if value is None:
        return None
    return check_int(name, value, owner, low=0)


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
