"""What a person sees in the reports: why a check warned or failed, tables rather than raw
JSON, gates drawn on their plots, legible plots, honest hashes, JUnit and summary.md that
a CI page can show, files written atomically."""

import dataclasses
import json
import re
import tomllib
import xml.etree.ElementTree as ET
from importlib import resources

import pytest
import torch
from torch import nn

from assay.audit.plan import plan_from_dict
from assay.checks import REGISTRY, load_builtin_checks
from assay.checks.base import CheckContext, Finding, Plot, get_check
from assay.core.loaders import load_digits
from assay.core.model import ModelWrapper
from assay.report import writers
from assay.report.compare import metric_deltas, write_comparison
from assay.report.plots import DPI, plot_figure
from assay.report.writers import (NO_GATES, format_metric, plan_toml, render_html, render_junit,
                                  render_markdown, write_reports)
from assay.errors import AssayValueError
from assay.results import (AuditResult, CheckResult, GateResult, MetricInfo,
                           describe_metrics)

FINGERPRINT = "ab" * 32
FILE_SHA = "cd" * 32


def gate(metric, op, threshold, value):
    passed = value is not None and (value >= threshold if op == ">=" else value <= threshold)
    return GateResult(f"{metric} {op} {threshold:g}", metric, op, threshold, value, passed)


def robustness(robust=0.12, threshold=0.4, status=None):
    g = gate("robust_accuracy@linf=0.3", ">=", threshold, robust)
    curve = Plot("Robust accuracy (linf)", "epsilon (linf)", "accuracy", [0.0, 0.1, 0.3],
                 {"evaluation": [0.95, 0.6, robust], "FGSM": [0.95, 0.7, 0.5]},
                 points={f"robust_accuracy@linf={e:g}": ["evaluation", e] for e in (0, 0.1, 0.3)})
    stages = {"0": [], "0.3": [{"name": "APGD-CE", "budget": "20 steps", "attacked": 95,
                                "broken": 70, "queries": 1900, "seconds": 0.5, "black_box": False},
                               {"name": "Square", "budget": "500 queries", "attacked": 25,
                                "broken": 13, "queries": 9000, "seconds": 1.5, "black_box": True}]}
    return CheckResult(
        "robustness", "robustness", "robustness", status or ("pass" if g.passed else "fail"),
        {"norms": ["linf"], "eps": [0.0, 0.1, 0.3], "mode": "quick", "n": 100},
        {"clean_accuracy": 0.95, "robust_accuracy@linf=0": 0.95, "robust_accuracy@linf=0.1": 0.6,
         "robust_accuracy@linf=0.3": robust}, gates=(g,), plots=(curve,),
        details={"evaluation": "quick ensemble", "curves": {"linf": {
            "eps": [0.0, 0.1, 0.3], "robust_accuracy": [0.95, 0.6, robust], "stages": stages}},
            "diagnostics": [{"code": "eps0", "passed": True, "message": "ok",
                             "values": {"eps0": 0.95}}]})


def corruptions():
    return CheckResult(
        "corruptions", "corruptions", "distribution shift", "warn", {"severities": [1, 2]},
        {"clean_accuracy": 0.95, "mean_corruption_accuracy": 0.8, "accuracy@fog": 0.9,
         "accuracy@glass_blur": 0.5, "accuracy@severity=1": 0.85, "accuracy@severity=2": 0.75},
        gates=(gate("mean_corruption_accuracy", ">=", 0.7, 0.8),),
        findings=(Finding("warn", "worst_corruption", "glass_blur loses 0.45 accuracy"),))


def ungated():
    return CheckResult("calibration", "calibration", "uncertainty", "pass", {"n_bins": 15},
                       {"ece": 0.03, "ece_ts": 0.02, "temperature": 1.1})


def errored():
    return CheckResult("ood", "ood", "distribution shift", "error", {}, {},
                       error="RuntimeError: boom")


def audit(*checks, name="plain", provenance=None, model_extra=None):
    status = next((s for s in ("error", "fail", "warn") if s in {c.status for c in checks}),
                  "pass")
    model = {"name": name, "sha256": FINGERPRINT, "num_classes": 10, "input_shape": [1, 8, 8],
             "bounds": [0.0, 1.0], **(model_extra or {})}
    return AuditResult("0.1.0", "2026-01-01T00:00:00+00:00", status, model,
                       {"name": "digits", "split": "test", "n": 100, "sha256": "0" * 64,
                        "num_classes": 10},
                       provenance or {"assay": "0.1.0", "torch": "2", "python": "3.11",
                                      "seed": 3, "plan": "<dict>", "seconds": 1.0},
                       checks)


def overview(page: str) -> str:
    return page[page.index("<th>why</th>"):page.index("<section")]


# ------------------------------------------------------------------- overview
def test_overview_says_why_each_check_failed_warned_or_errored():
    page = render_html(audit(robustness(), corruptions(), ungated(), errored()))
    table = overview(page)
    assert "failed: robust_accuracy@linf=0.3 = 0.12, required &gt;= 0.4" in table
    assert "warning worst_corruption: glass_blur loses 0.45 accuracy" in table
    assert "error: RuntimeError: boom" in table
    assert NO_GATES in table  # calibration: nothing was required
    # the check's own header says so too
    assert re.search(r'<h2>calibration <span class="badge pass">PASS</span>'
                     rf'<span[^>]*>\({NO_GATES}\)</span></h2>', page.replace("> <", "><"))


def test_an_audit_without_gates_says_nothing_was_required():
    result = audit(ungated())
    page, summary = render_html(result), render_markdown(result)
    head = page[:page.index("<table")]
    assert "<b>no gates</b>: nothing was required" in head
    assert NO_GATES in summary.split("| check |")[0]
    gated = audit(robustness(robust=0.5))
    assert "no gates" not in render_html(gated)[:render_html(gated).index("<table")]


# ------------------------------------------------------------- tables, not JSON
def test_details_and_parameters_are_tables_not_raw_json():
    page = render_html(audit(robustness()))
    section = page[page.index('<section id="robustness">'):]
    assert '"attacked"' not in section and "{&quot;" not in section and "<pre>{" not in section
    # the attack-stage breakdown: one row per stage, with attacked and broken columns
    stage_table = section[section.index("<th>attacked</th>") - 400:]
    assert "<th>broken</th>" in stage_table
    assert re.search(r"<td>0.3</td><td>APGD-CE</td><td>20 steps</td><td>95</td><td>70</td>",
                     section)
    assert "<th>mode</th><td>quick</td>" in section  # parameters as key-value rows


# ----------------------------------------------------------------- plots
def _gate_markers(figure):
    return [line for axes in figure.axes for line in axes.get_lines()
            if line.get_marker() == "_"]


def test_a_gate_on_a_plotted_point_is_drawn_at_its_threshold():
    check = robustness(robust=0.12, threshold=0.4)
    figure = plot_figure(check.plots[0], gates=check.gates)
    markers = _gate_markers(figure)
    assert len(markers) == 1
    assert list(markers[0].get_xdata()) == [0.3] and list(markers[0].get_ydata()) == [0.4]
    assert markers[0].get_color() == "#cf222e"  # failed: red
    # a gate on a metric that is no point of the plot draws nothing
    scalar = gate("clean_accuracy", ">=", 0.9, 0.95)
    assert not _gate_markers(plot_figure(check.plots[0], gates=(scalar,)))


def test_gates_on_bars_are_drawn_on_their_bar():
    plot = Plot("Accuracy", "variant", "accuracy", ["original", "prune:0.5"],
                {"clean": [0.95, 0.9], "robust": [0.5, 0.4]}, kind="bar",
                points={"robust_accuracy@prune:0.5": ["robust", "prune:0.5"]})
    markers = _gate_markers(plot_figure(plot, gates=(
        gate("robust_accuracy@prune:0.5", ">=", 0.45, 0.4),)))
    assert len(markers) == 1 and list(markers[0].get_ydata()) == [0.45]
    assert markers[0].get_xdata()[0] == pytest.approx(1 + 0.4)  # second group, second bar


def _drawn(figure):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure).draw()
    return figure.canvas.get_renderer()


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_tick_labels_of_close_scores_do_not_run_together():
    """ODIN scores span 0.1002-0.1019: nine ticks of '0.10025' ran into one another."""
    x = [round(0.10020 + i * 0.00006, 6) for i in range(30)]
    plot = Plot("odin scores", "score", "fraction", x, {"in": [0.03] * 30, "far": [0.02] * 30})
    figure = plot_figure(plot)
    renderer = _drawn(figure)
    labels = [t for t in figure.axes[0].get_xticklabels() if t.get_text() and t.get_visible()]
    boxes = [t.get_window_extent(renderer) for t in labels]
    inside = [b for b in boxes if b.x0 >= 0 and b.x1 <= figure.bbox.width]
    assert len(inside) >= 2
    assert not any(_overlap(a, b) for i, a in enumerate(inside) for b in inside[i + 1:])


def _texts(figure):
    from matplotlib.text import Text

    return [t for t in figure.findobj(Text) if t.get_text().strip() and t.get_visible()]


@pytest.mark.parametrize("plot", [
    Plot("Accuracy per corruption and severity", "severity", "accuracy", ["1", "2", "3"],
         {f"corruption {i}": [0.9, 0.5, 0.3] for i in range(15)}, kind="heatmap"),
    Plot("Set sizes", "set size", "samples", ["0", "1", "2"],
         {"lac": [17, 208, 0], "aps": [20, 185, 18]}, kind="bar"),
    Plot("Reliability", "confidence", "accuracy", [0.25, 0.75], {"before": [0.2, 0.8]},
         reference={"perfect calibration": [0.25, 0.75]}, counts={"before": [3, 40]}),
])
def test_every_text_of_a_plot_is_at_least_10_px_at_the_size_shown(plot):
    figure = plot_figure(plot)
    sizes = [t.get_fontsize() * DPI / 72 for t in _texts(figure)]
    assert sizes and min(sizes) >= 10
    # the page shows images at their own size: no wider than a half of a before/after page
    assert figure.get_figwidth() * DPI <= 700


def test_the_legend_never_covers_a_bar():
    plot = Plot("Set sizes", "set size", "samples", ["0", "1", "2", "3"],
                {"lac": [17, 208, 0, 0], "aps": [20, 185, 18, 2], "raps": [20, 185, 18, 2]},
                kind="bar")
    figure = plot_figure(plot)
    renderer = _drawn(figure)
    legends = figure.legends + [a.get_legend() for a in figure.axes if a.get_legend()]
    assert legends
    axes_box = figure.axes[0].get_window_extent(renderer)
    assert not any(_overlap(legend.get_window_extent(renderer), axes_box) for legend in legends)


def _digits_context(n=120):
    data = load_digits("test").subset(n)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    torch.nn.init.normal_(net[1].weight, std=2.0, generator=torch.Generator().manual_seed(0))
    model = ModelWrapper(net, num_classes=10, input_shape=(1, 8, 8))
    return CheckContext(model, data, seed=0, progress=False)


def test_the_reliability_diagram_draws_a_reference_line_and_the_counts():
    check = get_check("calibration")
    output = check.run(_digits_context(), check.resolve_params({"n_bins": 10}))
    plot = output.plots[0]
    assert "perfect calibration" not in plot.series and "perfect calibration" in plot.reference
    assert set(plot.counts) == set(plot.series)
    assert sum(plot.counts["before"]) == output.details["eval_samples"]
    figure = plot_figure(plot)
    main, below = figure.axes[:2]
    lines = {line.get_label(): line for line in main.get_lines()}
    assert lines["perfect calibration"].get_linestyle() == "--"
    for label in plot.series:  # points, not a curve joining bins of a few samples
        assert lines[label].get_linestyle() == "None"
    assert below.get_ylabel() == "samples" and len(below.patches) == 2 * len(plot.x)


def test_the_ood_plots_show_every_ood_set():
    check = get_check("ood")
    output = check.run(_digits_context(200), check.resolve_params(
        {"detectors": ["msp", "energy"], "ood_sets": ["far", "near"], "n": 200}))
    assert len(output.plots) == 2
    for plot in output.plots:
        assert set(plot.series) == {"in-distribution", "far", "near"}


def test_before_after_plots_share_their_y_range(tmp_path, monkeypatch):
    seen = []

    def capture(plot, *, gates=(), limits=None):
        seen.append((plot.title, limits))
        return "data:image/png;base64,"

    monkeypatch.setattr(writers, "plot_png_data_uri", capture)
    write_comparison(audit(robustness(robust=0.05)), audit(robustness(robust=0.8), name="hard"),
                     tmp_path, title="t")
    pages = {}  # the comparison page draws each plot twice with one range
    for title, limits in seen:
        pages.setdefault(title, []).append(limits)
    shared = [limits for limits in pages["Robust accuracy (linf)"] if limits is not None]
    assert len(shared) == 2 and shared[0] == shared[1]
    low, high = shared[0]
    assert low <= 0.05 and high >= 0.95


# ------------------------------------------------------------- comparison.json
def test_comparison_json_has_the_training_and_matches_its_schema(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    referencing = pytest.importorskip("referencing")
    training = {"defence": "adversarial", "method": {"method": "pgd", "eps": 0.3, "beta": None},
                "config": {"epochs": 2, "batch_size": 64, "lr": 0.001}, "seconds": 12.5}
    paths = write_comparison(audit(robustness(0.1)), audit(robustness(0.8), name="hard"),
                             tmp_path, title="Before and after PGD", training=training)
    data = json.loads(paths["comparison.json"].read_text())
    assert data["schema_version"] == "1.0" and data["training"] == training
    files = resources.files("assay.report")
    report = json.loads(files.joinpath("schema.json").read_text())
    schema = json.loads(files.joinpath("comparison_schema.json").read_text())
    registry = referencing.Registry().with_resource(
        report["$id"], referencing.Resource.from_contents(report))
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    validator.validate(data)
    bad = {**data, "after": {**data["after"], "status": "great"}}
    assert not validator.is_valid(bad)  # the audits themselves are checked
    assert "12.5 s" in paths["comparison.html"].read_text()
    assert "12.5 s" in paths["comparison.md"].read_text()


# ------------------------------------------------------------- directions
def declared(check):
    """``check`` with the metric info its registered check declares, as the runner adds it."""
    return dataclasses.replace(
        check, metric_info=get_check(check.name).describe_metrics(check.metrics))


def test_relative_mce_and_other_errors_are_lower_is_better():
    for check, name in (("corruptions", "relative_mce"), ("corruptions", "mce"),
                        ("calibration", "mce"), ("calibration", "ece_equal_mass_ts"),
                        ("ood", "fpr95@odin:near"), ("calibration", "brier"),
                        ("compression", "accuracy_drop@prune:0.5"),
                        ("compression", "size_bytes@int8:dynamic"),
                        ("certified_robustness", "abstain_rate")):
        assert get_check(check).describe_metrics([name])[name].direction == "lower", name
    before = audit(declared(CheckResult("corruptions", "corruptions", "distribution shift",
                                        "pass", {}, {"relative_mce": 1.0})))
    after = audit(declared(CheckResult("corruptions", "corruptions", "distribution shift",
                                       "pass", {}, {"relative_mce": 1.4})))
    assert metric_deltas(before, after)[0]["better"] is False
    # unknown: never marked better, in the comparison or among the worst values
    assert get_check("corruptions").describe_metrics(["some_new_metric"]) == {}
    plain = (CheckResult("c", "c", "p", "pass", {}, {"some_new_metric": 1.0}),
             CheckResult("c", "c", "p", "pass", {}, {"some_new_metric": 2.0}))
    assert metric_deltas(audit(plain[0]), audit(plain[1]))[0]["better"] is None
    assert writers.worst_metrics(plain[1]) == []


def test_metric_info_refuses_what_it_cannot_mean():
    with pytest.raises(AssayValueError, match="'direction' parameter of MetricInfo must be one "
                                              r"of \['higher', 'lower', 'neutral'\]"):
        MetricInfo("up")
    with pytest.raises(AssayValueError, match="low <= high"):
        MetricInfo("higher", "fraction", (1.0, 0.0))
    declared = {"robust_accuracy": MetricInfo("lower"), "robust_accuracy@*": MetricInfo("higher")}
    described = describe_metrics(["robust_accuracy", "robust_accuracy@linf=0.1", "other"],
                                 declared)
    assert described == {"robust_accuracy": MetricInfo("lower"),
                         "robust_accuracy@linf=0.1": MetricInfo("higher")}


def _every_check_and_metric_names():
    for name, cls in load_builtin_checks().items():
        if name.startswith("test_"):
            continue
        check = cls()
        params = check.resolve_params({})
        names = check.metric_names(params)
        if "baseline" in params:  # metrics that only a baseline model produces
            names += check.metric_names({**params, "baseline": "baseline.pt"})
        yield check, sorted(set(names))


def test_every_metric_of_every_check_has_a_declared_direction():
    assert len(REGISTRY) >= 8
    for check, names in _every_check_and_metric_names():
        info = check.describe_metrics(names)
        undeclared = [m for m in names if m not in info]
        assert not undeclared, (f"declare these metrics in {type(check).__name__}."
                                f"declared_metrics: {undeclared}")
        assert all(i.direction in ("higher", "lower", "neutral") for i in info.values())


def test_metric_info_travels_in_report_json():
    check = declared(corruptions())
    result = AuditResult.from_dict(json.loads(writers.render_json(audit(check))))
    assert result.checks[0].metric_info == check.metric_info
    assert result.checks[0].metric_info["accuracy@fog"].sign == 1
    legacy = audit(corruptions()).to_dict()  # a report from before metric_info
    for entry in legacy["checks"]:
        entry.pop("metric_info")
    assert AuditResult.from_dict(legacy).checks[0].metric_info == {}


# ------------------------------------------------------------- units, hashes, provenance
def test_sizes_are_written_in_human_units():
    assert format_metric("size_bytes@original", 13107200.0) == "12.5 MiB"
    assert format_metric("size_bytes@int8:dynamic", 52531.0) == "51.3 KiB"
    assert format_metric("size_bytes@original", -2048.0, signed=True) == "-2.0 KiB"
    check = CheckResult("compression", "compression", "robustness", "pass", {}, {
        "accuracy@original": 0.9, "size_bytes@original": 13107200.0,
        "accuracy@prune:0.5": 0.8, "size_bytes@prune:0.5": 13107200.0},
        details={"variants": {"original": {"size_bytes": 13107200.0}}})
    page = render_html(audit(check))
    assert "e+07" not in page and page.count("12.5 MiB") >= 3
    assert "e+07" not in render_markdown(audit(check))


def test_the_compression_plot_is_in_the_units_of_the_page():
    check = get_check("compression")
    output = check.run(_digits_context(40), check.resolve_params(
        {"variants": ["prune:0.5"], "n": 40, "steps": 1}))
    accuracy, size = output.plots
    assert size.y_label == "size (KiB)"
    kib = output.metrics["size_bytes@original"] / 1024
    assert size.series["size"][0] == pytest.approx(kib)
    assert accuracy.points["robust_accuracy@prune:0.5"] == ["robust", "prune:0.5"]


def test_the_header_names_the_fingerprint_and_the_file_hash():
    result = audit(ungated(), model_extra={"file": {
        "path": "model.pt", "sha256": FILE_SHA, "format": "torchscript", "bytes": 52531}})
    page, summary = render_html(result), render_markdown(result)
    head = page[:page.index("<table")]
    assert "sha256 <code>" not in head  # the fingerprint is not labelled a sha256
    assert "fingerprint" in head and FINGERPRINT[:16] in head
    assert f"file SHA-256 <code>{FILE_SHA}</code>" in head and "51.3 KiB" in head
    assert "fingerprint" in summary and FILE_SHA in summary


def test_provenance_shows_the_plan_as_toml_not_a_dict():
    result = audit(robustness(robust=0.5), corruptions(), ungated())
    page = render_html(result)
    provenance = page[page.index("<h2>Provenance"):]
    assert "&lt;dict&gt;" not in provenance and "{'" not in provenance
    assert "[[checks]]" in provenance
    text = plan_toml(result)
    raw = tomllib.loads(text)
    assert raw["seed"] == 3 and [c["name"] for c in raw["checks"]] == [
        "robustness", "corruptions", "calibration"]
    plan = plan_from_dict(raw)  # what ran is a plan that runs
    assert [g.expr for g in plan.checks[0].gates] == ["robust_accuracy@linf=0.3 >= 0.4"]
    assert plan.checks[0].params["mode"] == "quick"


# ------------------------------------------------------------- JUnit and summary.md
def test_junit_carries_values_warnings_and_totals():
    root = ET.fromstring(render_junit(audit(robustness(robust=0.5), corruptions(), ungated(),
                                            errored())))
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("4", "0", "1")
    assert float(root.get("time")) >= 0
    cases = root.findall(".//testcase")
    assert all(" " not in c.get("classname") for c in cases)
    passing = cases[0]
    values = {p.get("name"): p.get("value") for p in passing.iter("property")}
    assert values == {"metric": "robust_accuracy@linf=0.3", "value": "0.5", "threshold": ">= 0.4"}
    assert "robust_accuracy@linf=0.3 = 0.5, required >= 0.4: passed" in passing.find(
        "system-out").text
    warned = cases[1].find("system-out").text
    assert "WARN" in warned and "glass_blur loses 0.45 accuracy" in warned
    assert NO_GATES in cases[2].find("system-out").text


def test_summary_shows_every_gate_the_worst_values_and_links_the_report():
    metrics = {f"auroc@d{i}:far": 0.99 - i / 100 for i in range(9)}
    metrics["auroc@odin:near"] = 0.49  # the worst, tenth of ten
    gates = tuple(gate(f"auroc@d{i}:far", ">=", 0.5, 0.99 - i / 100) for i in range(8))
    check = declared(CheckResult("ood", "ood", "distribution shift", "pass", {}, metrics,
                                 gates=gates))
    summary = render_markdown(audit(check))
    row = next(line for line in summary.splitlines() if line.startswith("| ood |"))
    assert all(g.expr in row for g in gates)
    assert "auroc@odin:near 0.49" in row
    assert "[report.html](report.html)" in summary


# ------------------------------------------------------------- atomic writes
def test_reports_are_replaced_all_at_once_or_not_at_all(tmp_path, monkeypatch):
    first = audit(robustness(robust=0.5))
    write_reports(first, tmp_path)
    before = {p.name: p.read_text() for p in tmp_path.iterdir()}

    def boom(result):
        raise RuntimeError("rendering failed")

    monkeypatch.setattr(writers, "render_html", boom)
    with pytest.raises(RuntimeError):
        write_reports(audit(robustness(robust=0.1)), tmp_path)
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == before
    monkeypatch.undo()

    real_open = open
    calls = []

    def failing_open(path, *args, **kwargs):  # the disk fills up at the third file
        calls.append(path)
        if len(calls) == 3:
            raise OSError("No space left on device")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", failing_open)
    with pytest.raises(OSError):
        write_reports(audit(robustness(robust=0.1)), tmp_path)
    monkeypatch.undo()
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == before  # no temp files left


def test_assay_harden_records_the_training_in_comparison_json(tmp_path):
    from assay.cli import main

    plan = tmp_path / "plan.toml"
    plan.write_text('[[checks]]\nname = "accuracy"\n')
    code = main(["harden", "smoothing", "--arch", "mlp", "--data", "digits:train:200",
                 "--eval-data", "digits:test:50", "--sigma", "0.25", "--epochs", "1",
                 "--plan", str(plan), "--out", str(tmp_path / "s.safetensors"), "--quiet"])
    assert code == 0
    training = json.loads((tmp_path / "s-report" / "comparison.json").read_text())["training"]
    assert training["defence"] == "smoothing" and training["method"] == {"sigma": 0.25}
    assert training["config"]["epochs"] == 1 and training["seconds"] > 0
