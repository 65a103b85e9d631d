"""A before/after report: two audits of the same plan (a model and its hardened or
compressed version) side by side, with the change of every metric.

``write_comparison`` writes each audit's own four reports under ``before/`` and
``after/`` and, at the top, ``comparison.html`` (self-contained), ``comparison.json`` and
``comparison.md``.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from ..audit.results import AuditResult
from .writers import _CSS, _ICON, write_reports


def metric_deltas(before: AuditResult, after: AuditResult) -> list[dict]:
    """One row per (check, metric) present in either audit: before, after, after - before."""
    rows = []
    after_checks = {c.id: c for c in after.checks}
    for check in before.checks:
        other = after_checks.get(check.id)
        names = list(check.metrics) + [m for m in (other.metrics if other else {})
                                       if m not in check.metrics]
        for name in names:
            b = check.metrics.get(name)
            a = other.metrics.get(name) if other else None
            delta = a - b if a is not None and b is not None else None
            rows.append({"check": check.id, "metric": name, "before": b, "after": a,
                         "delta": delta})
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


def _markdown(before: AuditResult, after: AuditResult, rows: list[dict], title: str) -> str:
    lines = [f"# {title}", "", f"Before: **{before.status.upper()}** "
             f"({before.model.get('name', 'model')}); after: **{after.status.upper()}** "
             f"({after.model.get('name', 'model')}).", "",
             "| check | metric | before | after | change |", "|---|---|---|---|---|"]
    lines += [f"| {r['check']} | {r['metric']} | {_fmt(r['before'])} | {_fmt(r['after'])} | "
              f"{_fmt(r['delta'], True)} |" for r in rows]
    lines += ["", "Full reports: before/report.html, after/report.html.", ""]
    return "\n".join(lines)


def _html(before: AuditResult, after: AuditResult, rows: list[dict], title: str) -> str:
    e = html.escape

    def badge(status: str) -> str:
        return f'<span class="badge {e(status)}">{_ICON[status]}</span>'

    def change(row: dict) -> str:
        delta = row["delta"]
        cls = "" if not delta else ("up" if delta > 0 else "down")
        return f'<td class="{cls}">{_fmt(delta, True)}</td>'

    body = "".join(f"<tr><td>{e(r['check'])}</td><td><code>{e(r['metric'])}</code></td>"
                   f"<td>{_fmt(r['before'])}</td><td>{_fmt(r['after'])}</td>{change(r)}</tr>"
                   for r in rows)
    statuses = "".join(
        f"<tr><td>{e(c.id)}</td><td>{badge(c.status)}</td><td>"
        f"{badge(next((a.status for a in after.checks if a.id == c.id), 'error'))}</td></tr>"
        for c in before.checks)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>{_CSS}td.up{{color:#1a7f37}}td.down{{color:#cf222e}}</style></head><body>
<h1>{e(title)}</h1>
<p class="muted">before: {e(str(before.model.get('name', 'model')))} {badge(before.status)} &middot;
after: {e(str(after.model.get('name', 'model')))} {badge(after.status)} &middot;
full reports: <a href="before/report.html">before</a>, <a href="after/report.html">after</a></p>
<table><tr><th>check</th><th>before</th><th>after</th></tr>{statuses}</table>
<table><tr><th>check</th><th>metric</th><th>before</th><th>after</th><th>change</th></tr>
{body}</table>
</body></html>
"""
