"""Audit results: plain frozen dataclasses that round-trip through the report's JSON.

The JSON layout is versioned by ``SCHEMA_VERSION`` and described by
``assay/report/schema.json`` (and docs/report-schema.md).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ..checks.base import Finding, Plot

SCHEMA_VERSION = "1.0"
Status = Literal["pass", "fail", "warn", "error"]


@dataclass(frozen=True)
class GateResult:
    expr: str
    metric: str
    op: str
    threshold: float
    value: float | None
    passed: bool


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

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["metrics"] = {k: _finite_or_none(v) for k, v in self.metrics.items()}
        return _json_safe(data)

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
            "model": _json_safe(self.model),
            "data": _json_safe(self.data),
            "provenance": _json_safe(self.provenance),
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


def _json_safe(value: Any) -> Any:
    """Replace NaN/inf by None and tuples by lists, so the JSON is strict."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
