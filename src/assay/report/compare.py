"""A before/after report: two audits of the same plan (a model and its hardened or
compressed version) side by side, with the change of every metric.

``write_comparison`` writes each audit's own four reports under ``before/`` and
``after/`` and, at the top, ``comparison.html`` (self-contained: the change of every metric,
then both audits check by check, side by side, their plots on shared y ranges),
``comparison.json`` (the training settings, both audits and the changes; schema in
``comparison_schema.json``) and ``comparison.md``.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from ..results import AuditResult, CheckResult, json_safe
from .writers import (_CSS, _ICON, _findings_html, check_body_html, format_metric, write_files,
                      write_reports)

SCHEMA_VERSION = "1.0"
__all__ = ["metric_deltas", "metric_direction", "write_comparison"]


def metric_direction(name: str, *checks: CheckResult | None) -> int:
    """+1 when a larger value of metric ``name`` is better, -1 when a smaller one is, 0
    when neither or when none of ``checks`` declares its direction (an unknown metric is
    never marked better or worse); the first check that declares it decides."""
    return next((c.direction(name) for c in checks
                 if c is not None and name in c.metric_info), 0)


def metric_deltas(before: AuditResult, after: AuditResult) -> list[dict]:
    """One row per (check, metric) present in either audit: before, after, after - before,
    and ``better``: True / False when the change is an improvement / a regression by the
    direction the check declared (the after audit's first), None when there is no change
    or no direction."""
    rows = []
    for check_id, old, new in _paired_checks(before, after):
        old_metrics = old.metrics if old else {}
        new_metrics = new.metrics if new else {}
        for name in list(old_metrics) + [m for m in new_metrics if m not in old_metrics]:
            b, a = old_metrics.get(name), new_metrics.get(name)
            delta = a - b if a is not None and b is not None else None
            if delta is not None and not math.isfinite(delta):  # a NaN (unmeasured) side
                delta = None
            direction = metric_direction(name, new, old)
            better = None if not delta or not direction else delta * direction > 0
            rows.append({"check": check_id, "metric": name, "before": b, "after": a,
                         "delta": delta, "better": better})
    return rows


def write_comparison(before: AuditResult, after: AuditResult, out_dir: str | Path, *,
                     title: str, training: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write both audits and the comparison pages into ``out_dir``; return the paths.

    ``training``: how the after model was made (e.g. the training settings, the method's
    settings and ``seconds``, the measured training time); plain JSON values, shown on the
    pages and kept in comparison.json."""
    out = Path(out_dir)
    write_reports(before, out / "before")
    write_reports(after, out / "after")
    rows = metric_deltas(before, after)
    training = json_safe(training) if training else None
    document = {"schema_version": SCHEMA_VERSION, "title": title, "training": training,
                "before": before.to_dict(), "after": after.to_dict(), "deltas": json_safe(rows)}
    return write_files(out, {
        "comparison.html": _html(before, after, rows, title, training),
        "comparison.json": json.dumps(document, indent=2, allow_nan=False) + "\n",
        "comparison.md": _markdown(before, after, rows, title, training)})


def _training_lines(training: dict[str, Any] | None) -> list[tuple[str, str]]:
    """(setting, value as text) rows; the training time in seconds and minutes."""
    if not training:
        return []
    rows = []
    for key, value in training.items():
        if key == "seconds" and isinstance(value, (int, float)):
            text = f"{value:.1f} s ({value / 60:.1f} min)"
        elif isinstance(value, dict):
            text = ", ".join(f"{k} = {v}" for k, v in value.items() if v is not None)
        else:
            text = str(value)
        rows.append((str(key), text))
    return rows


def _paired_checks(before: AuditResult, after: AuditResult):
    """(id, before check or None, after check or None) in the before audit's order."""
    before_checks = {c.id: c for c in before.checks}
    after_checks = {c.id: c for c in after.checks}
    ids = list(before_checks) + [i for i in after_checks if i not in before_checks]
    return [(i, before_checks.get(i), after_checks.get(i)) for i in ids]


def _markdown(before: AuditResult, after: AuditResult, rows: list[dict], title: str,
              training: dict[str, Any] | None) -> str:
    mark = {True: " (better)", False: " (worse)", None: ""}
    lines = [f"# {title}", "", f"Before: **{before.status.upper()}** "
             f"({before.model.get('name', 'model')}); after: **{after.status.upper()}** "
             f"({after.model.get('name', 'model')}).", "",
             "| check | before | after |", "|---|---|---|"]
    if training:
        lines[4:4] = ["Training: " + "; ".join(f"{k} {v}" for k, v in _training_lines(training))
                      + ".", ""]
    lines += [f"| {cid} | {b.status.upper() if b else '-'} | {a.status.upper() if a else '-'} |"
              for cid, b, a in _paired_checks(before, after)]
    lines += ["", "| check | metric | before | after | change |", "|---|---|---|---|---|"]
    lines += [f"| {r['check']} | {r['metric']} | {format_metric(r['metric'], r['before'])} | "
              f"{format_metric(r['metric'], r['after'])} | "
              f"{format_metric(r['metric'], r['delta'], signed=True)}{mark[r['better']]} |"
              for r in rows]
    for label, audit in (("before", before), ("after", after)):
        warnings = [(c.id, f.message) for c in audit.checks for f in c.findings
                    if f.level == "warn"] + [("model", f.message) for f in audit.findings
                                             if f.level == "warn"]
        if warnings:
            lines += ["", f"## Warnings {label}", ""]
            lines += [f"- {cid}: {message}" for cid, message in warnings]
    lines += ["", "Full reports: before/report.html, after/report.html.", ""]
    return "\n".join(lines)


def _html(before: AuditResult, after: AuditResult, rows: list[dict], title: str,
          training: dict[str, Any] | None) -> str:
    """One self-contained page: the training settings, the change of every metric, then
    each check of both audits side by side (gates, metrics, findings, plots on shared y
    ranges)."""
    e = html.escape

    def badge(status: str) -> str:
        return f'<span class="badge {e(status)}">{_ICON[status]}</span>'

    def change(row: dict) -> str:
        cls = {True: "better", False: "worse", None: ""}[row["better"]]
        return f'<td class="{cls}">{format_metric(row["metric"], row["delta"], signed=True)}</td>'

    def side(check, label: str, other) -> str:
        if check is None:
            return f'<div><h3>{label}</h3><p class="muted">not in this audit</p></div>'
        return (f"<div><h3>{label} {badge(check.status)}</h3>"
                f"{check_body_html(check, beside=other)}</div>")

    pairs = _paired_checks(before, after)
    body = "".join(f"<tr><td>{e(r['check'])}</td><td><code>{e(r['metric'])}</code></td>"
                   f"<td>{format_metric(r['metric'], r['before'])}</td>"
                   f"<td>{format_metric(r['metric'], r['after'])}</td>{change(r)}</tr>"
                   for r in rows)
    statuses = "".join(
        f'<tr><td><a href="#{e(cid)}">{e(cid)}</a></td>'
        f"<td>{badge(b.status) if b else '-'}</td><td>{badge(a.status) if a else '-'}</td></tr>"
        for cid, b, a in pairs)
    sections = "".join(
        f'<section id="{e(cid)}"><h2>{e(cid)}</h2><div class="pair">'
        f'{side(b, "before", a)}{side(a, "after", b)}</div></section>' for cid, b, a in pairs)
    settings = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>"
                       for k, v in _training_lines(training))
    settings = f"<h2>Training</h2><table>{settings}</table>" if settings else ""
    audit_findings = "".join(
        f"<p><b>{label}</b></p>{_findings_html(audit.findings)}"
        for label, audit in (("before", before), ("after", after)) if audit.findings)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>{_CSS}body{{max-width:1500px}}td.better{{color:#1a7f37}}td.worse{{color:#cf222e}}
.pair{{display:grid;grid-template-columns:1fr 1fr;gap:1.2rem}}.pair>div{{min-width:0}}</style>
</head><body>
<h1>{e(title)}</h1>
<p class="muted">before: {e(str(before.model.get('name', 'model')))} {badge(before.status)} &middot;
after: {e(str(after.model.get('name', 'model')))} {badge(after.status)} &middot;
data {e(str(after.data.get('name')))}:{e(str(after.data.get('split')))}
({e(str(after.data.get('n')))} samples) &middot; each audit's own report:
<a href="before/report.html">before</a>, <a href="after/report.html">after</a></p>
{audit_findings}{settings}
<table><tr><th>check</th><th>before</th><th>after</th></tr>{statuses}</table>
<p class="muted">change = after - before; green where the change is an improvement, red where
it is a regression (for error rates, calibration errors, FPR, drops, abstentions, size and
latency, lower is better); unmarked where neither is better (settings, counts, coverage and
set size) or the change is zero. Plots of the same check share their y range.</p>
<table><tr><th>check</th><th>metric</th><th>before</th><th>after</th><th>change</th></tr>
{body}</table>
{sections}
</body></html>
"""
