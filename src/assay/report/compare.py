"""A before/after report: two audits of the same plan (a model and its hardened or
compressed version) side by side, with the change of every metric.

``write_comparison`` writes each audit's own four reports under ``before/`` and
``after/`` and, at the top, ``comparison.html`` (self-contained: the change of every metric,
then both audits check by check, side by side, with their plots), ``comparison.json`` (both
audits and the changes) and ``comparison.md``.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from ..audit.results import AuditResult
from .writers import _CSS, _ICON, _findings_html, check_body_html, write_reports


# Metrics where a smaller value is the better one (matched on the name before any "@");
# a few others (temperature, coverage, set size, counts) are neither better nor worse.
_LOWER_IS_BETTER = ("abstain_rate", "ece", "ece_equal_mass", "classwise_ece", "mce", "nll",
                    "brier", "fpr95", "class_coverage_gap", "accuracy_drop",
                    "robust_accuracy_drop", "size_bytes", "latency_ms")
_NEUTRAL = ("temperature", "coverage", "set_size", "n")


def metric_direction(name: str) -> int:
    """+1 when a larger value of metric ``name`` is better, -1 when a smaller one is, 0 when
    neither (e.g. a temperature or a sample count)."""
    base = name.split("@", 1)[0]
    for suffix in ("_ts", "_ci_low", "_ci_high"):
        base = base.removesuffix(suffix)
    if base in _NEUTRAL:
        return 0
    return -1 if base in _LOWER_IS_BETTER else 1


def metric_deltas(before: AuditResult, after: AuditResult) -> list[dict]:
    """One row per (check, metric) present in either audit: before, after, after - before,
    and ``better``: True / False when the change is an improvement / a regression by
    :func:`metric_direction`, None when there is no change or no direction."""
    rows = []
    for check_id, old, new in _paired_checks(before, after):
        old_metrics = old.metrics if old else {}
        new_metrics = new.metrics if new else {}
        for name in list(old_metrics) + [m for m in new_metrics if m not in old_metrics]:
            b, a = old_metrics.get(name), new_metrics.get(name)
            delta = a - b if a is not None and b is not None else None
            direction = metric_direction(name)
            better = None if not delta or not direction else delta * direction > 0
            rows.append({"check": check_id, "metric": name, "before": b, "after": a,
                         "delta": delta, "better": better})
    return rows


def write_comparison(before: AuditResult, after: AuditResult, out_dir: str | Path, *,
                     title: str) -> dict[str, Path]:
    """Write both audits and the comparison pages into ``out_dir``; return the paths."""
    out = Path(out_dir)
    write_reports(before, out / "before")
    write_reports(after, out / "after")
    rows = metric_deltas(before, after)
    paths = {name: out / name for name in ("comparison.html", "comparison.json",
                                           "comparison.md")}
    paths["comparison.json"].write_text(json.dumps(
        {"title": title, "before": before.to_dict(), "after": after.to_dict(), "deltas": rows},
        indent=2, allow_nan=False) + "\n", encoding="utf-8")
    paths["comparison.md"].write_text(_markdown(before, after, rows, title), encoding="utf-8")
    paths["comparison.html"].write_text(_html(before, after, rows, title), encoding="utf-8")
    return paths


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.4g}" if signed else f"{value:.4g}"


def _paired_checks(before: AuditResult, after: AuditResult):
    """(id, before check or None, after check or None) in the before audit's order."""
    before_checks = {c.id: c for c in before.checks}
    after_checks = {c.id: c for c in after.checks}
    ids = list(before_checks) + [i for i in after_checks if i not in before_checks]
    return [(i, before_checks.get(i), after_checks.get(i)) for i in ids]


def _markdown(before: AuditResult, after: AuditResult, rows: list[dict], title: str) -> str:
    mark = {True: " (better)", False: " (worse)", None: ""}
    lines = [f"# {title}", "", f"Before: **{before.status.upper()}** "
             f"({before.model.get('name', 'model')}); after: **{after.status.upper()}** "
             f"({after.model.get('name', 'model')}).", "",
             "| check | before | after |", "|---|---|---|"]
    lines += [f"| {cid} | {b.status.upper() if b else '-'} | {a.status.upper() if a else '-'} |"
              for cid, b, a in _paired_checks(before, after)]
    lines += ["", "| check | metric | before | after | change |", "|---|---|---|---|---|"]
    lines += [f"| {r['check']} | {r['metric']} | {_fmt(r['before'])} | {_fmt(r['after'])} | "
              f"{_fmt(r['delta'], True)}{mark[r['better']]} |" for r in rows]
    for label, audit in (("before", before), ("after", after)):
        warnings = [(c.id, f.message) for c in audit.checks for f in c.findings
                    if f.level == "warn"] + [("model", f.message) for f in audit.findings
                                             if f.level == "warn"]
        if warnings:
            lines += ["", f"## Warnings {label}", ""]
            lines += [f"- {cid}: {message}" for cid, message in warnings]
    lines += ["", "Full reports: before/report.html, after/report.html.", ""]
    return "\n".join(lines)


def _html(before: AuditResult, after: AuditResult, rows: list[dict], title: str) -> str:
    """One self-contained page: the change of every metric, then each check of both audits
    side by side (gates, metrics, findings, plots)."""
    e = html.escape

    def badge(status: str) -> str:
        return f'<span class="badge {e(status)}">{_ICON[status]}</span>'

    def change(row: dict) -> str:
        cls = {True: "better", False: "worse", None: ""}[row["better"]]
        return f'<td class="{cls}">{_fmt(row["delta"], True)}</td>'

    def side(check, label: str) -> str:
        if check is None:
            return f'<div><h3>{label}</h3><p class="muted">not in this audit</p></div>'
        return f"<div><h3>{label} {badge(check.status)}</h3>{check_body_html(check)}</div>"

    pairs = _paired_checks(before, after)
    body = "".join(f"<tr><td>{e(r['check'])}</td><td><code>{e(r['metric'])}</code></td>"
                   f"<td>{_fmt(r['before'])}</td><td>{_fmt(r['after'])}</td>{change(r)}</tr>"
                   for r in rows)
    statuses = "".join(
        f'<tr><td><a href="#{e(cid)}">{e(cid)}</a></td>'
        f"<td>{badge(b.status) if b else '-'}</td><td>{badge(a.status) if a else '-'}</td></tr>"
        for cid, b, a in pairs)
    sections = "".join(
        f'<section id="{e(cid)}"><h2>{e(cid)}</h2><div class="pair">'
        f'{side(b, "before")}{side(a, "after")}</div></section>' for cid, b, a in pairs)
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
data {e(str(after.data.get('name')))}:{e(str(after.data.get('split')))} ({e(str(after.data.get('n')))}
samples) &middot; each audit's own report: <a href="before/report.html">before</a>,
<a href="after/report.html">after</a></p>
{audit_findings}
<table><tr><th>check</th><th>before</th><th>after</th></tr>{statuses}</table>
<p class="muted">change = after - before; green where the change is an improvement, red where
it is a regression (for error rates, abstentions, size and latency, lower is better).</p>
<table><tr><th>check</th><th>metric</th><th>before</th><th>after</th><th>change</th></tr>
{body}</table>
{sections}
</body></html>
"""
