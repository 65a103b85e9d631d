"""Audit results: plain frozen dataclasses that round-trip through the report's JSON.

The JSON layout is versioned by ``SCHEMA_VERSION`` and described by
``assay/report/schema.json`` (and docs/report-schema.md).
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Literal

from ..checks.base import Finding, Plot

SCHEMA_VERSION = "1.0"
Status = Literal["pass", "fail", "warn", "error"]
STATUSES: tuple[str, ...] = typing.get_args(Status)


@dataclass(frozen=True)
class GateResult:
    expr: str
    metric: str
    op: str
    threshold: float
    value: float | None
    passed: bool

    @property
    def outcome(self) -> str:
        """The gate and the value it saw, e.g. "accuracy >= 0.9 (got 0.8512)"."""
        shown = "none" if self.value is None else f"{self.value:.4g}"
        return f"{self.expr} (got {shown})"


@dataclass(frozen=True)
class CheckResult:
    id: str
    name: str
    pillar: str
    status: Status
    params: dict[str, Any]
    metrics: dict[str, float | None]
    gates: tuple[GateResult, ...] = ()
    findings: tuple[Finding, ...] = ()
    plots: tuple[Plot, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None
    cached: bool = False

    @property
    def gated(self) -> bool:
        """Whether the plan required anything of this check; without gates its "pass"
        only means it ran without a warning."""
        return bool(self.gates)

    @property
    def failed_gates(self) -> tuple[GateResult, ...]:
        return tuple(g for g in self.gates if not g.passed)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["metrics"] = {k: _finite_or_none(v) for k, v in self.metrics.items()}
        return json_safe(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckResult:
        return cls(
            id=data["id"], name=data["name"], pillar=data["pillar"], status=data["status"],
            params=data["params"], metrics=data["metrics"],
            gates=tuple(GateResult(**g) for g in data.get("gates", [])),
            findings=tuple(Finding(**f) for f in data.get("findings", [])),
            plots=tuple(Plot(**p) for p in data.get("plots", [])),
            details=data.get("details", {}), seconds=data.get("seconds", 0.0),
            error=data.get("error"), cached=data.get("cached", False))


@dataclass(frozen=True)
class AuditResult:
    assay_version: str
    created: str
    status: Status
    model: dict[str, Any]
    data: dict[str, Any]
    provenance: dict[str, Any]
    checks: tuple[CheckResult, ...]
    findings: tuple[Finding, ...] = ()
    schema_version: str = SCHEMA_VERSION

    @property
    def gates_passed(self) -> bool:
        return all(g.passed for c in self.checks for g in c.gates)

    @property
    def gated(self) -> bool:
        """Whether any check had a gate; without one a "pass" required nothing."""
        return any(c.gated for c in self.checks)

    @property
    def exit_code(self) -> int:
        """0 when every gate passed and no check errored, else 1."""
        failed = not self.gates_passed or any(c.status == "error" for c in self.checks)
        return 1 if failed else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "assay_version": self.assay_version,
            "created": self.created,
            "status": self.status,
            "model": json_safe(self.model),
            "data": json_safe(self.data),
            "provenance": json_safe(self.provenance),
            "findings": [asdict(f) for f in self.findings],
            "checks": [c.to_dict() for c in self.checks],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AuditResult:
        return cls(
            schema_version=data["schema_version"], assay_version=data["assay_version"],
            created=data["created"], status=data["status"], model=data["model"],
            data=data["data"], provenance=data["provenance"],
            checks=tuple(CheckResult.from_dict(c) for c in data["checks"]),
            findings=tuple(Finding(**f) for f in data.get("findings", [])))


def check_status(gates: tuple[GateResult, ...], findings: tuple[Finding, ...] | list[Finding]
                 ) -> Status:
    """The status of a check that ran: "fail" when a gate failed, else "warn" when a
    finding warns, else "pass". Derived on every run, from the cache or not."""
    if not all(g.passed for g in gates):
        return "fail"
    if any(f.level == "warn" for f in findings):
        return "warn"
    return "pass"


def overall_status(checks: tuple[CheckResult, ...] | list[CheckResult]) -> Status:
    statuses = {c.status for c in checks}
    for status in ("error", "fail", "warn"):
        if status in statuses:
            return status  # type: ignore[return-value]
    return "pass"


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def json_safe(value: Any) -> Any:
    """Replace NaN/inf by None and tuples by lists, so the JSON is strict."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


# ----------------------------------------------------------------- reading stored JSON
# Strict readers for JSON written by assay and read back (the cache): each raises
# ValueError saying which field is wrong, so a hand-edited entry is refused, not trusted.
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def metrics_from_json(raw: Any) -> dict[str, float | None]:
    if not isinstance(raw, dict):
        raise ValueError(f"'metrics' must be an object; got {type(raw).__name__}")
    for name, value in raw.items():
        if value is not None and not (_is_number(value) and math.isfinite(value)):
            raise ValueError(f"metric {name!r} must be a finite number or null; got {value!r}")
    return {name: None if v is None else float(v) for name, v in raw.items()}


def findings_from_json(raw: Any) -> tuple[Finding, ...]:
    if not isinstance(raw, list):
        raise ValueError(f"'findings' must be an array; got {type(raw).__name__}")
    levels = typing.get_args(typing.get_type_hints(Finding)["level"])
    found = []
    for index, item in enumerate(raw):
        where = f"findings[{index}]"
        if not isinstance(item, dict) or set(item) != {"level", "code", "message"}:
            raise ValueError(f"{where} must be an object with exactly level, code, message")
        if item["level"] not in levels:
            raise ValueError(f"{where}.level must be one of {list(levels)}; got {item['level']!r}")
        if not isinstance(item["code"], str) or not isinstance(item["message"], str):
            raise ValueError(f"{where}: code and message must be strings")
        found.append(Finding(**item))
    return tuple(found)


def plots_from_json(raw: Any) -> tuple[Plot, ...]:
    """Plots as stored; every field is checked against its annotation in :class:`Plot`."""
    if not isinstance(raw, list):
        raise ValueError(f"'plots' must be an array; got {type(raw).__name__}")
    hints = typing.get_type_hints(Plot)
    required = {f.name for f in fields(Plot)
                if f.default is MISSING and f.default_factory is MISSING}
    plots = []
    for index, item in enumerate(raw):
        where = f"plots[{index}]"
        if not isinstance(item, dict):
            raise ValueError(f"{where} must be an object")
        if set(item) - set(hints):
            raise ValueError(f"{where}: unknown fields {sorted(set(item) - set(hints))}")
        if required - set(item):
            raise ValueError(f"{where}: missing fields {sorted(required - set(item))}")
        for name, value in item.items():
            if not _conforms(value, hints[name]):
                raise ValueError(f"{where}.{name} must be {hints[name]}; got {value!r:.80}")
        plots.append(Plot(**item))
    return tuple(plots)


def _conforms(value: Any, hint: Any) -> bool:
    """Whether JSON ``value`` fits type ``hint`` (a float may be null: NaN is stored so)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is float:
        return value is None or _is_number(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint in (str, list, dict):
        return isinstance(value, hint)
    if origin is Literal:
        return value in args
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, option) for option in args)
    if origin is list:
        return isinstance(value, list) and all(_conforms(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(
            isinstance(k, str) and _conforms(v, args[1]) for k, v in value.items())
    return False
