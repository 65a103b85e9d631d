"""Write an audit's results as report.json, junit.xml, summary.md and report.html.

Every writer reads the ``AuditResult`` alone; nothing here runs a model.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import secrets
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..results import AuditResult, CheckResult, Gallery, GateResult, cap_galleries
from ..errors import AssayWarning
from ..registry import Registry
from .plots import plot_png_data_uri, value_range

REPORT_FILES = ("report.html", "report.json", "junit.xml", "summary.md")
NO_GATES = "no gates: nothing was required"
_ICON = {"pass": "PASS", "fail": "FAIL", "warn": "WARN", "error": "ERROR"}


@dataclass(frozen=True)
class ReportFormat:
    """One file of the report: its name in the output folder, and the function that
    renders it from the results alone."""

    filename: str
    render: Callable[[AuditResult], str]


# The report's files by format name: json, junit, markdown and html (registered at the end
# of this module, below their renderers); other packages add formats (a ReportFormat, or
# any object with ``filename`` and ``render``) through the "assay.report_formats" group.
REPORT_FORMATS: Registry[ReportFormat] = Registry("report format", group="assay.report_formats")


def write_reports(result: AuditResult, out_dir: str | Path) -> dict[str, Path]:
    """Write every report format into ``out_dir`` (created if needed); return their
    paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return write_files(out, render_reports(result))


def render_reports(result: AuditResult) -> dict[str, str]:
    """Each format's file name -> its text. A plug-in format that fails to render, or
    whose file name is taken or not a plain name, is left out with a warning: it must not
    cost the audit its built-in reports."""
    texts: dict[str, str] = {}
    for name, form in REPORT_FORMATS.items():
        if REPORT_FORMATS.origin(name) == "assay":
            texts[form.filename] = form.render(result)
            continue
        source = f"The report format plug-in {name!r} ({REPORT_FORMATS.origin(name)})"
        filename = getattr(form, "filename", None)
        if (not isinstance(filename, str) or Path(filename).name != filename
                or filename.startswith(".") or filename in texts):
            warnings.warn(f"{source} is left out: its file name {filename!r} is taken or not "
                          "a plain file name.", AssayWarning, stacklevel=2)
            continue
        try:
            texts[filename] = form.render(result)
        except Exception as err:  # a plug-in's bug must not lose the built-in reports
            warnings.warn(f"{source} is left out: it failed to render "
                          f"({type(err).__name__}: {err}).", AssayWarning, stacklevel=2)
    return texts


def write_files(out: Path, texts: dict[str, str]) -> dict[str, Path]:
    """Write every text to a temporary file in ``out``, then rename each into place, so
    that an error or a crash never leaves files of two runs side by side (rendering has
    already succeeded when the first byte is written; only the renames remain)."""
    temporary: dict[str, Path] = {}
    try:
        for name, text in texts.items():
            temporary[name] = out / f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
            with open(temporary[name], "x", encoding="utf-8") as stream:
                stream.write(text)
        for name, path in temporary.items():
            os.replace(path, out / name)
    finally:
        for path in temporary.values():
            path.unlink(missing_ok=True)
    return {name: out / name for name in texts}


def render_json(result: AuditResult) -> str:
    return json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n"


def human_bytes(value: float, *, signed: bool = False) -> str:
    """``13107200`` -> ``"12.5 MiB"``: sizes in KiB / MiB / GiB, as every page writes them."""
    size, unit = abs(value), "B"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            break
        size /= 1024
    sign = ("+" if value >= 0 else "-") if signed else ("-" if value < 0 else "")
    return f"{sign}{size:.0f} B" if unit == "B" else f"{sign}{size:.1f} {unit}"


def _is_size(name: str) -> bool:
    return name.split("@", 1)[0] in ("size_bytes", "bytes")


def format_metric(name: str, value: float | None, *, signed: bool = False) -> str:
    """A metric's value as the pages show it: 4 significant digits, sizes in human units."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if _is_size(name):
        return human_bytes(value, signed=signed)
    if float(value).is_integer() and abs(value) < 1e15:  # counts: 16281, not 1.628e+04
        return f"{int(value):+d}" if signed else f"{int(value)}"
    return f"{value:+.4g}" if signed else f"{value:.4g}"


def status_reasons(check: CheckResult) -> list[str]:
    """Why the check has its status: its error, each failed gate (value and threshold),
    each warning, and how many gates passed (or that there were none)."""
    reasons = [f"error: {check.error}"] if check.error else []
    failed = check.failed_gates
    reasons += [f"failed: {g.metric} = {format_metric(g.metric, g.value)}"
                f"{' (not measured)' if g.value is None else ''}, required {g.op} {g.threshold:g}"
                for g in failed]
    reasons += [f"warning {f.code}: {f.message}" for f in check.findings if f.level == "warn"]
    if not check.gates:
        reasons.append(NO_GATES)
    elif not failed and not check.error:
        reasons.append(f"{len(check.gates)}/{len(check.gates)} gates passed")
    return reasons


def worst_metrics(check: CheckResult) -> list[str]:
    """One metric per kind (``auroc``, ``ece`` and ``ece_ts``, ...): the one with the
    worst value by the direction the check declared; interval bounds and metrics with no
    direction left out."""
    worst: dict[str, str] = {}
    for name, value in check.metrics.items():
        direction = check.direction(name)
        if value is None or not direction or "_ci_" in name:
            continue
        # The kind: the name before its setting ("@..."), a temperature-scaled one with it.
        kind = name.split("@", 1)[0].removesuffix("_ts")
        current = check.metrics.get(worst[kind]) if kind in worst else None
        if current is None or value * direction < current * direction:
            worst[kind] = name
    return list(worst.values())


# --------------------------------------------------------------------------- JUnit
def _identifier(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def render_junit(result: AuditResult) -> str:
    """One testsuite per check, one testcase per gate, each carrying its measured value
    (properties and system-out), the check's warnings in system-out; a check without
    gates is one testcase "runs" that fails only when the check errored."""
    suites = ET.Element("testsuites", name="assay audit")
    totals = {"tests": 0, "failures": 0, "errors": 0}
    for check in result.checks:
        cases: list[GateResult | None] = [*check.gates] or [None]
        suite = ET.SubElement(suites, "testsuite", name=check.id, tests=str(len(cases)),
                              time=f"{check.seconds:.3f}")
        failures = errors = 0
        warnings = [f"WARN {f.code}: {f.message}" for f in check.findings if f.level == "warn"]
        for gate in cases:
            case = ET.SubElement(suite, "testcase",
                                 classname=f"assay.{_identifier(check.pillar)}.{_identifier(check.id)}",
                                 name=gate.expr if gate else "runs",
                                 time=f"{check.seconds / len(cases):.3f}")
            lines = [f"check {check.id}: {_ICON[check.status]}"]
            if gate is not None:
                value = format_metric(gate.metric, gate.value)
                properties = ET.SubElement(case, "properties")
                for key, text in (("metric", gate.metric), ("value", value),
                                  ("threshold", f"{gate.op} {gate.threshold:g}")):
                    ET.SubElement(properties, "property", name=key, value=text)
                lines.append(f"{gate.metric} = {value}, required {gate.op} {gate.threshold:g}: "
                             f"{'passed' if gate.passed else 'FAILED'}")
            else:
                lines.append(NO_GATES)
            if check.status == "error":
                errors += 1
                ET.SubElement(case, "error", message=check.error or "error").text = check.error
            elif gate is not None and not gate.passed:
                failures += 1
                ET.SubElement(case, "failure", message=f"{gate.metric} = "
                              f"{format_metric(gate.metric, gate.value)}, required {gate.op} "
                              f"{gate.threshold:g}")
            ET.SubElement(case, "system-out").text = "\n".join(lines + warnings)
        suite.set("failures", str(failures))
        suite.set("errors", str(errors))
        totals["tests"] += len(cases)
        totals["failures"] += failures
        totals["errors"] += errors
    for key, total in totals.items():
        suites.set(key, str(total))
    suites.set("time", f"{sum(c.seconds for c in result.checks):.3f}")
    ET.indent(suites)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode")
            + "\n")


def metric_tables(metrics: dict[str, float | None]
                  ) -> list[tuple[list[str], dict[str, list]]]:
    """The metrics as tables ``(column names, rows)``, in order of first appearance.
    Metrics named ``name@qualifier`` whose qualifiers carry the same names form a grid when
    there are at least 2 names and 2 qualifiers (rows keyed by qualifier: the compression
    check's ``accuracy@prune:0.5``, the fairness check's ``tpr@sex=Female``); every other
    metric goes in one list, columns ``["value"]`` and one row per metric."""
    by_qualifier: dict[str, list[str]] = {}
    for key in metrics:
        if "@" in key:
            name, qualifier = key.split("@", 1)
            by_qualifier.setdefault(qualifier, []).append(name)
    blocks: dict[tuple[str, ...], list[str]] = {}
    for qualifier, names in by_qualifier.items():
        blocks.setdefault(tuple(names), []).append(qualifier)
    grids = {names: qualifiers for names, qualifiers in blocks.items()
             if len(names) >= 2 and len(qualifiers) >= 2}
    in_grid = {f"{n}@{q}" for names, qualifiers in grids.items() for q in qualifiers
               for n in names}
    plain = {k: [v] for k, v in metrics.items() if k not in in_grid}
    tables = [(["value"], plain)] if plain else []
    tables += [(list(names), {q: [metrics[f"{n}@{q}"] for n in names] for q in qualifiers})
               for names, qualifiers in grids.items()]
    return tables


def metric_grid(metrics: dict[str, float | None]) -> tuple[list[str], dict[str, list]] | None:
    """The metrics as one grid (:func:`metric_tables`) when they form exactly one and
    nothing is left over, else None."""
    tables = metric_tables(metrics)
    return tables[0] if len(tables) == 1 and tables[0][0] != ["value"] else None


_FINGERPRINT = "a fingerprint of the weights and settings, not a file hash"


# --------------------------------------------------------------------------- Markdown
def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(result: AuditResult) -> str:
    model = result.model
    lines = [f"# assay audit: {_ICON[result.status]}", "",
             f"Model `{model.get('name')}` (fingerprint `{model['sha256'][:12]}`: "
             f"{_FINGERPRINT})"]
    if isinstance(model.get("file"), dict):
        file = model["file"]
        lines[-1] += (f", file `{file.get('path')}` ({file.get('format')}"
                      + (f", {human_bytes(file['bytes'])}" if "bytes" in file else "")
                      + f", SHA-256 `{file.get('sha256')}`)")
    lines[-1] += (f"; data `{result.data['name']}:{result.data['split']}` "
                  f"({result.data['n']} samples). assay {result.assay_version}, {result.created}.")
    if not result.gated:
        lines += ["", f"**No gate in this audit ({NO_GATES})**: the status reflects findings "
                      "and errors only."]
    lines += ["", "Full report with every metric, plot and detail: [report.html](report.html).",
              "", "| check | status | why | gates | worst values | seconds |",
              "|---|---|---|---|---|---|"]
    for check in result.checks:
        gates = ", ".join(f"{'ok' if g.passed else 'FAILED'}: `{g.expr}` "
                          f"({format_metric(g.metric, g.value)})" for g in check.gates) or NO_GATES
        worst = ", ".join(f"{k} {format_metric(k, check.metrics[k])}"
                          for k in worst_metrics(check)) or "-"
        cached = " (cached)" if check.cached else ""
        lines.append(f"| {check.id} | {_ICON[check.status]} | "
                     f"{_cell('; '.join(status_reasons(check)))} | {_cell(gates)} | "
                     f"{_cell(worst)} | {check.seconds:.1f}{cached} |")
    for check in result.checks:  # side-by-side tables where the metrics form grids
        grids = [(names, rows) for names, rows in metric_tables(check.metrics)
                 if names != ["value"]]
        if grids:
            lines += ["", f"## {check.id}"]
        for names, rows in grids:
            lines += ["", "| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
            lines += [f"| {q} | " + " | ".join(format_metric(n, v)
                                               for n, v in zip(names, values, strict=True))
                      + " |" for q, values in rows.items()]
    notes = [(None, f) for f in result.findings] + [(c.id, f) for c in result.checks
                                                     for f in c.findings if f.level == "warn"]
    if notes:
        lines += ["", "## Warnings", ""]
        lines += [f"- {'model' if cid is None else cid}: {f.message}" for cid, f in notes
                  if f.level == "warn"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- HTML
_CSS = """
.gallery{display:grid;gap:.4rem;margin:.6rem 0}.gallery figure{margin:0;text-align:center}
.gallery img{image-rendering:pixelated;max-width:100%}
.gallery figcaption{font-size:.75rem;color:#5b6570}
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1000px;
color:#1d232a;line-height:1.45;padding:0 1rem}
h1{margin-bottom:.2rem}.muted{color:#5b6570;font-size:.9rem}
.badge{display:inline-block;padding:.1rem .55rem;border-radius:.6rem;font-weight:600;
font-size:.85rem;color:#fff}.pass{background:#1a7f37}.fail{background:#cf222e}
.warn{background:#9a6700}.error{background:#6e40c9}
table{border-collapse:collapse;margin:.6rem 0;font-size:.92rem}
td,th{border:1px solid #d0d7de;padding:.3rem .6rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}section{border-top:1px solid #d0d7de;margin-top:1.6rem;padding-top:.4rem}
.finding{margin:.3rem 0;padding:.4rem .6rem;border-left:4px solid #9a6700;background:#fff8c5}
.finding.info{border-color:#0969da;background:#ddf4ff}
img{max-width:100%;margin:.4rem .6rem .4rem 0}pre{background:#f6f8fa;padding:.6rem;
overflow-x:auto;font-size:.85rem}details{margin:.5rem 0}
td.why{font-size:.85rem}td.why div+div{margin-top:.2rem}.nogates{font-weight:400}
details{overflow-x:auto}table.data{font-size:.82rem}table.data table.data{margin:0}
table.data td,table.data th{padding:.15rem .45rem}
"""


def _e(value: object) -> str:
    return html.escape(str(value))


def _badge(status: str) -> str:
    return f'<span class="badge {_e(status)}">{_ICON.get(status, status)}</span>'


def _findings_html(findings) -> str:
    return "".join(f'<div class="finding {_e(f.level)}"><b>{_e(f.code)}</b>: {_e(f.message)}</div>'
                   for f in findings)


def _check_html(check: CheckResult) -> str:
    note = f' <span class="muted nogates">({NO_GATES})</span>' if not check.gates else ""
    return (f'<section id="{_e(check.id)}"><h2>{_e(check.id)} {_badge(check.status)}{note}</h2>'
            f"{check_body_html(check)}</section>")


def check_body_html(check: CheckResult, *, beside: CheckResult | None = None) -> str:
    """One check's part of a report page (everything below its heading): gates, metrics,
    findings, plots and parameters. With ``beside`` (the same check of another audit,
    shown next to it), plots of the same title share their y range with its plots."""
    parts = [f'<p class="muted">check <code>{_e(check.name)}</code>, pillar {_e(check.pillar)}, '
             f'{check.seconds:.2f} s{" (from cache)" if check.cached else ""}</p>']
    if check.error:
        parts.append(f'<div class="finding"><b>error</b>: {_e(check.error)}</div>')
    if check.gates:
        rows = "".join(f"<tr><td><code>{_e(g.expr)}</code></td>"
                       f"<td>{format_metric(g.metric, g.value)}</td>"
                       f"<td>{_badge('pass' if g.passed else 'fail')}</td></tr>"
                       for g in check.gates)
        parts.append(f"<table><tr><th>gate</th><th>value</th><th>result</th></tr>{rows}</table>")
    else:
        parts.append(f'<p class="muted">{NO_GATES}: this check measures and reports; add '
                     f'<code>gates</code> to its plan entry to require values.</p>')
    parts += [_metric_table_html(names, rows) for names, rows in metric_tables(check.metrics)]
    parts.append(_findings_html(check.findings))
    parts += [f'<img alt="{_e(p.title)}" '
              f'src="{plot_png_data_uri(p, gates=check.gates, limits=limits)}">'
              for p, limits in zip(check.plots, _shared_limits(check, beside), strict=True)]
    parts += [_gallery_html(g) for g in check.galleries]
    if check.details:
        parts.append(f"<details open><summary>details</summary>{_data_html(check.details)}"
                     f"</details>")
    parts.append(f"<details><summary>parameters</summary>{_data_html(check.params)}</details>")
    return "".join(parts)


def _metric_table_html(names: list[str], rows: dict[str, list]) -> str:
    """A list of metrics (names ``["value"]``) or a grid of ``name@qualifier`` metrics;
    a grid of many names over few qualifiers is turned, so that names run down the side."""
    if names == ["value"]:
        body = "".join(f"<tr><td>{_e(k)}</td><td>{format_metric(k, v[0])}</td></tr>"
                       for k, v in rows.items())
        return f"<table><tr><th>metric</th><th>value</th></tr>{body}</table>"
    if len(names) > max(len(rows), 6):
        head = "".join(f"<th>{_e(q)}</th>" for q in rows)
        body = "".join(f"<tr><td>{_e(n)}</td>" + "".join(
            f"<td>{format_metric(n, values[i])}</td>" for values in rows.values()) + "</tr>"
            for i, n in enumerate(names))
        return f"<table><tr><th></th>{head}</tr>{body}</table>"
    head = "".join(f"<th>{_e(n)}</th>" for n in names)
    body = "".join(f"<tr><td>{_e(q)}</td>" + "".join(
        f"<td>{format_metric(n, v)}</td>" for n, v in zip(names, values, strict=True)) + "</tr>"
        for q, values in rows.items())
    return f"<table><tr><th></th>{head}</tr>{body}</table>"


def _gallery_html(gallery: Gallery) -> str:
    figures = "".join(f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{_e(image)}">'
                      f"<figcaption>{_e(caption)}</figcaption></figure>"
                      for image, caption in zip(gallery.images, gallery.captions, strict=True))
    note = f'<p class="muted">{_e(gallery.note)}</p>' if gallery.note else ""
    return (f"<h3>{_e(gallery.title)}</h3>{note}<div class=\"gallery\" style=\"grid-template-"
            f'columns:repeat({gallery.columns},1fr)">{figures}</div>')


def _shared_limits(check: CheckResult, beside: CheckResult | None) -> list:
    """For each plot of ``check``: the y range covering it and the plot of the same title
    and y label in ``beside``, or None (its own range) when there is no such plot."""
    others = {(p.title, p.y_label): p for p in beside.plots} if beside else {}
    limits = []
    for plot in check.plots:
        other = others.get((plot.title, plot.y_label))
        ranges = [r for r in (value_range(plot, check.gates),
                              beside and other and value_range(other, beside.gates)) if r]
        limits.append((min(r[0] for r in ranges), max(r[1] for r in ranges))
                      if other is not None and ranges else None)
    return limits


# ------------------------------------------------------------- details as tables
def _scalar(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        if _is_size(key):
            return human_bytes(value)
        return str(value) if isinstance(value, int) else f"{value:.4g}"
    return _e(value)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _is_record(value: Any) -> bool:
    """A dict of plain values (a nested dict of plain values is written inline)."""
    return isinstance(value, dict) and bool(value) and all(
        _is_scalar(v) or (isinstance(v, dict) and all(map(_is_scalar, v.values())))
        for v in value.values())


def _is_flat(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(map(_is_scalar, value.values()))


def _records(value: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], dict]] | None:
    """``value`` as the rows of one table when it is made of records (a list of them, or
    dicts of records or of lists of them, e.g. attack stages per eps): ``(keys leading to
    the record, record)``; else None."""
    if isinstance(value, list):
        return [(path, v) for v in value] if (value or path) and all(map(_is_record, value)) \
            else None
    if not (isinstance(value, dict) and value
            and all(isinstance(v, (dict, list)) for v in value.values())):
        return None
    rows: list[tuple[tuple[str, ...], dict]] = []
    for key, item in value.items():
        keyed = path + (str(key),)
        found = [(keyed, item)] if _is_flat(item) else _records(item, keyed)
        if found is None:
            return None
        rows += found
    return rows or None


def _records_table(rows: list[tuple[tuple[str, ...], dict]]) -> str:
    depth = max(len(path) for path, _ in rows)
    columns = list(dict.fromkeys(k for _, record in rows for k in record))
    head = "<th></th>" * depth + "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = []
    for path, record in rows:
        keys = "".join(f"<td>{_e(k)}</td>" for k in path) + "<td></td>" * (depth - len(path))
        cells = "".join(f"<td>{_inline(c, record.get(c))}</td>" for c in columns)
        body.append(f"<tr>{keys}{cells}</tr>")
    return f'<table class="data"><tr>{head}</tr>{"".join(body)}</table>'


def _inline(key: str, value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{_e(k)} = {_scalar(k, v)}" for k, v in value.items()) or "-"
    return _scalar(key, value)


def _data_html(value: Any, key: str = "") -> str:
    """Details and parameters as tables: records as rows of one table, dicts as key-value
    rows, lists of plain values on one line; never raw JSON."""
    rows = _records(value)
    if rows:
        return _records_table(rows)
    if isinstance(value, dict):
        if not value:
            return "-"
        if key and _is_flat(value) and len(value) > 4 and all(len(str(k)) <= 12 for k in value):
            # e.g. per-class accuracy: one row of short keys over one row of values
            head = "".join(f"<th>{_e(k)}</th>" for k in value)
            cells = "".join(f"<td>{_scalar(str(k), v)}</td>" for k, v in value.items())
            return f'<table class="data"><tr>{head}</tr><tr>{cells}</tr></table>'
        body = "".join(f"<tr><th>{_e(k)}</th><td>{_data_html(v, str(k))}</td></tr>"
                       for k, v in value.items())
        return f'<table class="data">{body}</table>'
    if isinstance(value, list):
        if all(_is_scalar(v) for v in value):
            return ", ".join(_scalar(key, v) for v in value) or "-"
        return "<br>".join(_data_html(v, key) for v in value)
    return _scalar(key, value)


# ------------------------------------------------------------------ provenance
def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()
                                if v is not None) + " }"
    return json.dumps(str(value))


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def plan_toml(result: AuditResult) -> str:
    """The plan that ran, as TOML that ``assay audit --plan`` reads back: every check with
    all its parameters (defaults filled in; unset ones left out) and its gates."""
    lines = [f"seed = {_toml_value(result.provenance.get('seed', 0))}"]
    for check in result.checks:
        lines += ["", "[[checks]]", f"name = {_toml_value(check.name)}"]
        if check.id != check.name:
            lines.append(f"id = {_toml_value(check.id)}")
        if check.gates:
            lines.append(f"gates = {_toml_value([g.expr for g in check.gates])}")
        params = {k: v for k, v in check.params.items() if v is not None}
        if params:
            lines.append("[checks.params]")
            lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in params.items()]
    return "\n".join(lines) + "\n"


def _plan_source(source: Any) -> str:
    if source == "<dict>":
        return "given as a dict to run_audit (no plan file)"
    return f"<code>{_e(source)}</code>"


def _provenance_html(result: AuditResult) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>"
                   f"{_plan_source(v) if k == 'plan' else _data_html(v, k)}</td></tr>"
                   for k, v in result.provenance.items())
    return (f'<section><h2>Provenance</h2><table class="data">{rows}</table>'
            f"<details><summary>the plan as it ran (TOML; every parameter, defaults filled in)"
            f"</summary><pre>{_e(plan_toml(result))}</pre></details></section>")


# --------------------------------------------------------------------------- page
def _model_html(model: dict[str, Any]) -> str:
    text = (f"model <b>{_e(model.get('name'))}</b> (fingerprint "
            f"<code title=\"{_e(model['sha256'])}\">{_e(model['sha256'][:16])}</code>: "
            f"{_FINGERPRINT}; {_e(model.get('num_classes'))} classes, input "
            f"{_e(model.get('input_shape'))}, bounds {_e(model.get('bounds'))})")
    file = model.get("file")
    if isinstance(file, dict):
        size = f", {human_bytes(file['bytes'])}" if isinstance(file.get("bytes"), int) else ""
        text += (f"<br>file <code>{_e(file.get('path'))}</code> ({_e(file.get('format'))}{size}), "
                 f"file SHA-256 <code>{_e(file.get('sha256'))}</code> (as sha256sum prints it)")
    return text


def render_html(result: AuditResult) -> str:
    """A self-contained page: inline CSS, plots and images as data URIs, no scripts, no
    network. Galleries are cut to the report's size caps, like in report.json."""
    result = cap_galleries(result)
    model, data = result.model, result.data
    overview = "".join(
        f'<tr><td><a href="#{_e(c.id)}">{_e(c.id)}</a></td><td>{_badge(c.status)}</td>'
        f"<td>{sum(g.passed for g in c.gates)}/{len(c.gates)}</td>"
        f'<td class="why">{"".join(f"<div>{_e(r)}</div>" for r in status_reasons(c))}</td>'
        f"<td>{c.seconds:.2f}</td></tr>"
        for c in result.checks)
    no_gates = ("" if result.gated else
                '<div class="finding"><b>no gates</b>: nothing was required in this audit; '
                "the status reflects findings and errors only. Add <code>gates</code> to the "
                "plan to make a CI job fail on a value.</div>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>assay audit: {_e(model.get('name'))} - {_ICON[result.status]}</title>
<style>{_CSS}</style></head><body>
<h1>assay audit {_badge(result.status)}</h1>
<p class="muted">{_model_html(model)}<br>data <b>{_e(data['name'])}:{_e(data['split'])}</b>
({_e(data['n'])} samples) &middot; assay {_e(result.assay_version)} &middot;
{_e(result.created)}</p>
{no_gates}{_findings_html(result.findings)}
<table><tr><th>check</th><th>status</th><th>gates passed</th><th>why</th><th>seconds</th></tr>
{overview}</table>
{''.join(_check_html(c) for c in result.checks)}
{_provenance_html(result)}
</body></html>
"""


# Each renderer is looked up when it runs, so that one replaced in this module (a test's
# failing renderer) is the one the report uses.
REPORT_FORMATS.add("json", ReportFormat("report.json", lambda result: render_json(result)))
REPORT_FORMATS.add("junit", ReportFormat("junit.xml", lambda result: render_junit(result)))
REPORT_FORMATS.add("markdown", ReportFormat("summary.md",
                                            lambda result: render_markdown(result)))
REPORT_FORMATS.add("html", ReportFormat("report.html", lambda result: render_html(result)))
