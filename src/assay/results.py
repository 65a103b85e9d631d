"""The results layer: what checks return and audits record, as plain frozen dataclasses.

Findings, plots, a check's output, gate / check / audit results, the metadata of each
metric (which way is better, unit, range) and the strict readers of stored JSON live
here. This module imports no torch and nothing from assay but its errors, so the report
(which reads results only) renders without loading a model library.

The JSON layout is versioned by ``SCHEMA_VERSION`` and described by
``assay/report/schema.json`` (and docs/report-schema.md).
"""

from __future__ import annotations

import hashlib
import math
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from fnmatch import fnmatchcase
from typing import Any, Literal

from .errors import AssayValueError

SCHEMA_VERSION = "1.0"
Status = Literal["pass", "fail", "warn", "error"]
STATUSES: tuple[str, ...] = typing.get_args(Status)
Level = Literal["info", "warn"]
Direction = Literal["higher", "lower", "neutral"]
DIRECTIONS: tuple[str, ...] = typing.get_args(Direction)


# ------------------------------------------------------------------ what a check returns
@dataclass(frozen=True)
class Finding:
    """An observation a check makes; a "warn" finding turns the check's status to warn."""

    level: Level
    code: str
    message: str


@dataclass(frozen=True)
class Plot:
    """Data for one plot; the report draws it. ``kind`` is "line", "bar" or "heatmap".

    ``series`` maps a legend label (for a heatmap: a row label) to values aligned with
    ``x`` (for a heatmap: the column labels). Optional, all aligned with ``x``:
    ``reference`` lines that are not data (drawn dashed, e.g. perfect calibration),
    ``counts``: the samples behind each point of a series (drawn under the plot; a
    series with counts is not joined into a curve), ``points``: metric name ->
    ``[series label, x value]``, the point a metric is, so the report can draw its gate,
    and ``intervals``: per series, ``[low, high]`` for each value (a confidence interval,
    drawn as an error bar; ``[null, null]`` where there is none).
    """

    title: str
    x_label: str
    y_label: str
    x: list[float] | list[str]
    series: dict[str, list[float]]
    kind: Literal["line", "bar", "heatmap"] = "line"
    reference: dict[str, list[float]] = field(default_factory=dict)
    counts: dict[str, list[int]] = field(default_factory=dict)
    points: dict[str, list] = field(default_factory=dict)
    intervals: dict[str, list[list[float | None]]] = field(default_factory=dict)


# A report stays small: the images of a gallery past the first MAX_GALLERY_IMAGES, and any
# past MAX_REPORT_IMAGE_BYTES of PNG over the whole report, are dropped with a note.
MAX_GALLERY_IMAGES = 16
MAX_REPORT_IMAGE_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True)
class Gallery:
    """A grid of images with captions; the report shows it. ``images`` are PNG files as
    base64 strings (in report.json: sha256 keys into the top-level ``assets``), each with
    the caption of the same index; ``note`` says what was dropped to keep the report small."""

    title: str
    images: list[str]
    captions: list[str]
    columns: int = 8
    note: str = ""

    def __post_init__(self) -> None:
        if len(self.images) != len(self.captions):
            raise AssayValueError(f"Gallery {self.title!r} has {len(self.images)} images and "
                                  f"{len(self.captions)} captions; give one caption per image.")


@dataclass
class CheckOutput:
    """What ``Check.run`` returns (and the cache stores): no gates, no status."""

    metrics: Mapping[str, float | None]  # None: not measurable here (a gate on it fails)
    findings: list[Finding] = field(default_factory=list)
    plots: list[Plot] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    galleries: list[Gallery] = field(default_factory=list)


# ------------------------------------------------------------------ metric metadata
@dataclass(frozen=True)
class MetricInfo:
    """What a metric's number means: ``direction`` "higher" or "lower" (is better) or
    "neutral" (a setting, a count, a trade-off: a change is neither better nor worse),
    its ``unit`` ("fraction", "bytes", "ms", "nats", ...; "" for a pure number) and the
    ``range`` of values it can take, ``(low, high)`` with None for an open end."""

    direction: Direction
    unit: str = ""
    range: tuple[float | None, float | None] | None = None

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise AssayValueError(f"The 'direction' parameter of MetricInfo must be one of "
                                  f"{list(DIRECTIONS)}. Got {self.direction!r} instead.")
        if self.range is not None:
            low, high = self.range
            if low is not None and high is not None and low > high:
                raise AssayValueError(f"The 'range' parameter of MetricInfo must be (low, "
                                      f"high) with low <= high. Got {self.range!r} instead.")

    @property
    def sign(self) -> int:
        """+1 when a larger value is better, -1 when a smaller one is, 0 when neither."""
        return {"higher": 1, "lower": -1, "neutral": 0}[self.direction]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetricInfo:
        bounds = data.get("range")
        return cls(data["direction"], data.get("unit", ""),
                   None if bounds is None else (bounds[0], bounds[1]))


# The commonest kinds: shares of samples (accuracies, error rates), one way better.
HIGHER_FRACTION = MetricInfo("higher", "fraction", (0.0, 1.0))
LOWER_FRACTION = MetricInfo("lower", "fraction", (0.0, 1.0))


def describe_metrics(names: Iterable[str], declared: Mapping[str, MetricInfo]
                     ) -> dict[str, MetricInfo]:
    """The info of each metric in ``names`` from a check's ``declared`` table, keyed by a
    metric name or an ``fnmatch`` pattern (``"robust_accuracy@*"``): an exact key first,
    else the first pattern that matches. A metric nothing matches is left out (the report
    then never marks it better or worse)."""
    described = {}
    for name in names:
        info = declared.get(name) or next(
            (info for pattern, info in declared.items() if fnmatchcase(name, pattern)), None)
        if info is not None:
            described[name] = info
    return described


# ------------------------------------------------------------------ what an audit records
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
    """One check of an audit. ``metric_info`` holds each metric's :class:`MetricInfo` as
    the check declared it; the report takes directions from it alone."""

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
    metric_info: dict[str, MetricInfo] = field(default_factory=dict)
    galleries: tuple[Gallery, ...] = ()

    @property
    def gated(self) -> bool:
        """Whether the plan required anything of this check; without gates its "pass"
        only means it ran without a warning."""
        return bool(self.gates)

    @property
    def failed_gates(self) -> tuple[GateResult, ...]:
        return tuple(g for g in self.gates if not g.passed)

    def direction(self, metric: str) -> int:
        """:attr:`MetricInfo.sign` of ``metric``; 0 when it has no declared info."""
        info = self.metric_info.get(metric)
        return info.sign if info else 0

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
            error=data.get("error"), cached=data.get("cached", False),
            metric_info={k: MetricInfo.from_dict(v)
                         for k, v in data.get("metric_info", {}).items()},
            galleries=tuple(Gallery(**g) for g in data.get("galleries", [])))


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
        """The JSON of the audit; gallery images are stored once, in ``assets`` (sha256 of
        the PNG -> its base64), and each gallery lists their keys."""
        assets: dict[str, str] = {}
        checks = []
        for check in cap_galleries(self).checks:
            data = check.to_dict()
            for gallery in data["galleries"]:
                keys = [hashlib.sha256(image.encode("ascii")).hexdigest()
                        for image in gallery["images"]]
                assets.update(zip(keys, gallery["images"]))
                gallery["images"] = keys
            checks.append(data)
        return {
            "schema_version": self.schema_version,
            "assay_version": self.assay_version,
            "created": self.created,
            "status": self.status,
            "model": json_safe(self.model),
            "data": json_safe(self.data),
            "provenance": json_safe(self.provenance),
            "findings": [asdict(f) for f in self.findings],
            "checks": checks,
            "assets": assets,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AuditResult:
        return cls(
            schema_version=data["schema_version"], assay_version=data["assay_version"],
            created=data["created"], status=data["status"], model=data["model"],
            data=data["data"], provenance=data["provenance"],
            checks=tuple(CheckResult.from_dict(_resolve_assets(c, data.get("assets", {})))
                         for c in data["checks"]),
            findings=tuple(Finding(**f) for f in data.get("findings", [])))


def _resolve_assets(check: dict[str, Any], assets: dict[str, str]) -> dict[str, Any]:
    """A check's JSON with its galleries' asset keys replaced by the images."""
    if not check.get("galleries"):
        return check
    try:
        galleries = [{**g, "images": [assets[key] for key in g["images"]]}
                     for g in check["galleries"]]
    except KeyError as err:
        raise AssayValueError(f"report.json: check {check.get('id')!r} has a gallery image "
                              f"{err} that is not in 'assets'; the file was edited or "
                              "truncated, write it again.") from None
    return {**check, "galleries": galleries}


def cap_galleries(result: AuditResult, *, per_gallery: int = MAX_GALLERY_IMAGES,
                  total_bytes: int = MAX_REPORT_IMAGE_BYTES) -> AuditResult:
    """``result`` with each gallery cut to ``per_gallery`` images and the report's images
    to ``total_bytes`` of PNG (later checks lose theirs first); a cut gallery's ``note``
    says how many images were dropped. A result within the caps comes back unchanged."""
    left = total_bytes
    checks = []
    for check in result.checks:
        galleries = []
        for gallery in check.galleries:
            kept = []
            for image in gallery.images[:per_gallery]:
                size = len(image) * 3 // 4  # bytes of the PNG behind the base64
                if size > left:
                    break
                left -= size
                kept.append(image)
            dropped = len(gallery.images) - len(kept)
            if dropped:
                note = (f"{dropped} of {len(gallery.images)} images dropped to keep the report "
                        f"small (at most {per_gallery} per gallery, "
                        f"{total_bytes // 1024} KiB in all).")
                gallery = replace(gallery, images=kept, captions=gallery.captions[:len(kept)],
                                  note=" ".join(filter(None, [gallery.note, note])))
            galleries.append(gallery)
        checks.append(replace(check, galleries=tuple(galleries)))
    return replace(result, checks=tuple(checks))


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
            return status
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
    levels = typing.get_args(Level)
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
    return _records_from_json(raw, Plot, "plots")


def galleries_from_json(raw: Any) -> tuple[Gallery, ...]:
    """Galleries as stored (images inline); each field is checked like a plot's."""
    return _records_from_json(raw, Gallery, "galleries")


def _records_from_json(raw: Any, cls: type, name: str) -> tuple:
    if not isinstance(raw, list):
        raise ValueError(f"'{name}' must be an array; got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    required = {f.name for f in fields(cls)
                if f.default is MISSING and f.default_factory is MISSING}
    records = []
    for index, item in enumerate(raw):
        where = f"{name}[{index}]"
        if not isinstance(item, dict):
            raise ValueError(f"{where} must be an object")
        if set(item) - set(hints):
            raise ValueError(f"{where}: unknown fields {sorted(set(item) - set(hints))}")
        if required - set(item):
            raise ValueError(f"{where}: missing fields {sorted(required - set(item))}")
        for key, value in item.items():
            if not _conforms(value, hints[key]):
                raise ValueError(f"{where}.{key} must be {hints[key]}; got {value!r:.80}")
        try:
            records.append(cls(**item))
        except AssayValueError as err:
            raise ValueError(f"{where}: {err}") from None
    return tuple(records)


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
