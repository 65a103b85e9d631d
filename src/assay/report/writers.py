"""Write an audit's results as report.json, junit.xml, summary.md and report.html.

Every writer reads the ``AuditResult`` alone; nothing here runs a model.
"""

from __future__ import annotations

import html
import json
import xml.etree.ElementTree as ET
from pathlib import Path

from ..audit.results import AuditResult, CheckResult
from .plots import plot_png_data_uri

REPORT_FILES = ("report.html", "report.json", "junit.xml", "summary.md")
_ICON = {"pass": "PASS", "fail": "FAIL", "warn": "WARN", "error": "ERROR"}


def write_reports(result: AuditResult, out_dir: str | Path) -> dict[str, Path]:
    """Write the four reports into ``out_dir`` (created if needed); return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in REPORT_FILES}
    paths["report.json"].write_text(render_json(result), encoding="utf-8")
    paths["junit.xml"].write_text(render_junit(result), encoding="utf-8")
    paths["summary.md"].write_text(render_markdown(result), encoding="utf-8")
    paths["report.html"].write_text(render_html(result), encoding="utf-8")
    return paths


def render_json(result: AuditResult) -> str:
    return json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n"


def _metric(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


# --------------------------------------------------------------------------- JUnit
def render_junit(result: AuditResult) -> str:
    """One testsuite per check, one testcase per gate; a check without gates is one
    testcase that fails only when the check errored."""
    suites = ET.Element("testsuites", name="assay audit")
    for check in result.checks:
        cases = list(check.gates) or [None]
        suite = ET.SubElement(suites, "testsuite", name=check.id, tests=str(len(cases)),
                              time=f"{check.seconds:.3f}")
        failures = errors = 0
        for gate in cases:
            case = ET.SubElement(suite, "testcase", classname=f"assay.{check.pillar}.{check.id}",
                                 name=gate.expr if gate else "runs",
                                 time=f"{check.seconds / len(cases):.3f}")
            if check.status == "error":
                errors += 1
                ET.SubElement(case, "error", message=check.error or "error").text = check.error
            elif gate is not None and not gate.passed:
                failures += 1
                ET.SubElement(case, "failure", message=f"{gate.metric} = {_metric(gate.value)}, "
                              f"required {gate.op} {gate.threshold:g}")
        suite.set("failures", str(failures))
        suite.set("errors", str(errors))
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def metric_grid(metrics: dict[str, float | None]) -> tuple[list[str], dict[str, list]] | None:
    """Metrics named ``name@qualifier`` that form a full grid (at least 2 names x 2
    qualifiers, e.g. the compression check's ``accuracy@prune:0.5``) as ``(names, rows)``,
    rows keyed by qualifier in order of appearance; None when they do not."""
    names: dict[str, None] = {}
    qualifiers: dict[str, None] = {}
    for key in metrics:
        if "@" not in key:
            return None
        name, qualifier = key.split("@", 1)
        names[name] = qualifiers[qualifier] = None
    if len(names) < 2 or len(qualifiers) < 2 or len(metrics) != len(names) * len(qualifiers):
        return None
    rows = {q: [metrics[f"{n}@{q}"] for n in names] for q in qualifiers}
    return list(names), rows


# --------------------------------------------------------------------------- Markdown
def render_markdown(result: AuditResult) -> str:
    lines = [f"# assay audit: {_ICON[result.status]}", "",
             f"Model `{result.model.get('name')}` (sha256 `{result.model['sha256'][:12]}`), "
             f"data `{result.data['name']}:{result.data['split']}` ({result.data['n']} samples). "
             f"assay {result.assay_version}, {result.created}.", "",
             "| check | status | gates | key metrics | seconds |", "|---|---|---|---|---|"]
    for check in result.checks:
        gates = ", ".join(f"{'ok' if g.passed else 'FAILED'}: `{g.expr}` ({_metric(g.value)})"
                          for g in check.gates) or "-"
        metrics = ", ".join(f"{k} {_metric(v)}" for k, v in list(check.metrics.items())[:6])
        cached = " (cached)" if check.cached else ""
        lines.append(f"| {check.id} | {_ICON[check.status]} | {gates} | "
                     f"{metrics or check.error or '-'} | {check.seconds:.1f}{cached} |")
    for check in result.checks:  # side-by-side tables where the metrics form a grid
        grid = metric_grid(check.metrics)
        if grid:
            names, rows = grid
            lines += ["", f"## {check.id}", "", "| | " + " | ".join(names) + " |",
                      "|---|" + "---:|" * len(names)]
            lines += [f"| {q} | " + " | ".join(_metric(v) for v in values) + " |"
                      for q, values in rows.items()]
    notes = [(None, f) for f in result.findings] + [(c.id, f) for c in result.checks
                                                     for f in c.findings if f.level == "warn"]
    if notes:
        lines += ["", "## Warnings", ""]
        lines += [f"- {'model' if cid is None else cid}: {f.message}" for cid, f in notes
                  if f.level == "warn"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- HTML
_CSS = """
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
"""


def _e(value: object) -> str:
    return html.escape(str(value))


def _badge(status: str) -> str:
    return f'<span class="badge {_e(status)}">{_ICON.get(status, status)}</span>'


def _findings_html(findings) -> str:
    return "".join(f'<div class="finding {_e(f.level)}"><b>{_e(f.code)}</b>: {_e(f.message)}</div>'
                   for f in findings)


def _check_html(check: CheckResult) -> str:
    return (f'<section id="{_e(check.id)}"><h2>{_e(check.id)} {_badge(check.status)}</h2>'
            f"{check_body_html(check)}</section>")


def check_body_html(check: CheckResult) -> str:
    """One check's part of a report page (everything below its heading): gates, metrics,
    findings, plots and parameters."""
    parts = [f'<p class="muted">check <code>{_e(check.name)}</code>, pillar {_e(check.pillar)}, '
             f'{check.seconds:.2f} s{" (from cache)" if check.cached else ""}</p>']
    if check.error:
        parts.append(f'<div class="finding"><b>error</b>: {_e(check.error)}</div>')
    if check.gates:
        rows = "".join(f"<tr><td><code>{_e(g.expr)}</code></td><td>{_metric(g.value)}</td>"
                       f"<td>{_badge('pass' if g.passed else 'fail')}</td></tr>" for g in check.gates)
        parts.append(f"<table><tr><th>gate</th><th>value</th><th>result</th></tr>{rows}</table>")
    grid = metric_grid(check.metrics)
    if grid:
        names, table = grid
        head = "".join(f"<th>{_e(n)}</th>" for n in names)
        rows = "".join(f"<tr><td>{_e(q)}</td>" + "".join(f"<td>{_metric(v)}</td>" for v in values)
                       + "</tr>" for q, values in table.items())
        parts.append(f"<table><tr><th></th>{head}</tr>{rows}</table>")
    elif check.metrics:
        rows = "".join(f"<tr><td>{_e(k)}</td><td>{_metric(v)}</td></tr>"
                       for k, v in check.metrics.items())
        parts.append(f"<table><tr><th>metric</th><th>value</th></tr>{rows}</table>")
    parts.append(_findings_html(check.findings))
    parts += [f'<img alt="{_e(p.title)}" src="{plot_png_data_uri(p)}">' for p in check.plots]
    parts.append(f"<details><summary>parameters and details</summary><pre>"
                 f"{_e(json.dumps({'params': check.params, 'details': check.details}, indent=2, default=str))}"
                 f"</pre></details>")
    return "".join(parts)


def render_html(result: AuditResult) -> str:
    """A self-contained page: inline CSS, plots as data URIs, no scripts, no network."""
    model, data = result.model, result.data
    overview = "".join(
        f'<tr><td><a href="#{_e(c.id)}">{_e(c.id)}</a></td><td>{_badge(c.status)}</td>'
        f"<td>{sum(g.passed for g in c.gates)}/{len(c.gates)}</td><td>{c.seconds:.2f}</td></tr>"
        for c in result.checks)
    provenance = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>"
                         for k, v in result.provenance.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>assay audit: {_e(model.get('name'))} - {_ICON[result.status]}</title>
<style>{_CSS}</style></head><body>
<h1>assay audit {_badge(result.status)}</h1>
<p class="muted">model <b>{_e(model.get('name'))}</b> (sha256 <code>{_e(model['sha256'][:16])}</code>,
{_e(model.get('num_classes'))} classes, input {_e(model.get('input_shape'))}, bounds
{_e(model.get('bounds'))}) &middot; data <b>{_e(data['name'])}:{_e(data['split'])}</b>
({_e(data['n'])} samples) &middot; assay {_e(result.assay_version)} &middot; {_e(result.created)}</p>
{_findings_html(result.findings)}
<table><tr><th>check</th><th>status</th><th>gates passed</th><th>seconds</th></tr>{overview}</table>
{''.join(_check_html(c) for c in result.checks)}
<section><h2>Provenance</h2><table>{provenance}</table></section>
</body></html>
"""
