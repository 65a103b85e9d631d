"""Another package's check, declared as an entry point in the "assay.checks" group, is listed
by ``assay checks`` with where it came from and runs in an audit; one named like a built-in
is left out with a warning. The entry points are faked (``assay.registry.entry_points``),
the plug-in module lives in tmp_path, and the global registry is restored afterwards."""

import sys
import textwrap
import types
from importlib import metadata

import pytest

from assay import registry as registry_module
from assay.audit.plan import plan_from_dict
from assay.audit.runner import run_audit
from assay.checks import CHECKS
from assay.cli.main import main
from assay.errors import AssayWarning

PLUGIN_MODULE = "assay_test_plugin_pkg"
PLUGIN_SOURCE = textwrap.dedent('''
    """A third-party package's checks (written by tests/test_plugins.py)."""
    from assay.checks import Check, CheckOutput, MetricInfo, Param


    class MeanConfidence(Check):
        name = "mean_confidence"
        pillar = "plugins"
        summary = "Mean top-1 softmax probability (a tiny plug-in check)."
        params = (Param("n", "int", 50, "use the first n samples", low=1),)
        declared_metrics = {"mean_confidence": MetricInfo("higher")}

        def metric_names(self, params):
            return ["mean_confidence"]

        def run(self, ctx, params):
            logits = ctx.model.predict_logits(ctx.data.x[:params["n"]])
            top = logits.softmax(dim=1).max(dim=1).values
            return CheckOutput({"mean_confidence": float(top.mean())})


    class FakeAccuracy(MeanConfidence):
        """Would turn every accuracy gate into a pass if it could replace the built-in."""
        name = "accuracy"

        def metric_names(self, params):
            return ["accuracy"]

        def run(self, ctx, params):
            return CheckOutput({"accuracy": 1.0})
''')


@pytest.fixture
def plugin_checks(monkeypatch, tmp_path):
    """CHECKS with the plug-in's entry points loaded; the registry without them after."""
    (tmp_path / f"{PLUGIN_MODULE}.py").write_text(PLUGIN_SOURCE)
    points = [metadata.EntryPoint("mean_confidence", f"{PLUGIN_MODULE}:MeanConfidence",
                                  "assay.checks"),
              metadata.EntryPoint("accuracy", f"{PLUGIN_MODULE}:FakeAccuracy", "assay.checks")]
    real = registry_module.entry_points
    with monkeypatch.context() as patch:
        patch.syspath_prepend(str(tmp_path))
        patch.delitem(sys.modules, PLUGIN_MODULE, raising=False)
        patch.setattr(registry_module, "entry_points",
                      lambda group: points if group == "assay.checks" else real(group))
        with pytest.warns(AssayWarning, match="'accuracy' is already a check of assay"):
            CHECKS.reload()
        yield CHECKS
    CHECKS.reload()
    assert "mean_confidence" not in CHECKS


def test_a_plugin_check_is_listed_with_its_origin(plugin_checks, capsys):
    assert main(["checks"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("mean_confidence"))
    assert "[plugins]" in line
    assert f"(from plugin 'mean_confidence' ({PLUGIN_MODULE}:MeanConfidence))" in line
    assert "    n (int, default 50): use the first n samples" in out
    assert "metrics: mean_confidence" in out
    accuracy = next(line for line in out.splitlines() if line.startswith("accuracy"))
    assert "from plugin" not in accuracy  # the built-in stays


def test_a_plan_naming_a_plugin_check_runs_it(plugin_checks, digits, digits_model):
    _, test = digits
    plan = plan_from_dict({"checks": [
        {"name": "accuracy", "params": {"n": 100}, "gates": ["accuracy >= 0.5"]},
        {"name": "mean_confidence", "params": {"n": 40}, "gates": ["mean_confidence >= 0.1"]},
    ]})
    result = run_audit(digits_model, test, plan, progress=False, threads=1)
    by_name = {check.name: check for check in result.checks}
    plugged = by_name["mean_confidence"]
    assert plugged.status == "pass" and 0.1 <= plugged.metrics["mean_confidence"] <= 1.0
    assert plugged.metric_info["mean_confidence"].direction == "higher"
    # the built-in accuracy ran, not the plug-in that claimed its name
    assert CHECKS["accuracy"].__module__ == "assay.checks.accuracy"
    assert by_name["accuracy"].pillar != "plugins"


def test_a_plugin_that_names_itself_otherwise_is_left_out(monkeypatch, tmp_path):
    (tmp_path / f"{PLUGIN_MODULE}.py").write_text(PLUGIN_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, PLUGIN_MODULE, raising=False)
    points = [metadata.EntryPoint("confidence", f"{PLUGIN_MODULE}:MeanConfidence", "things")]
    monkeypatch.setattr(registry_module, "entry_points", lambda group: points)
    things = registry_module.Registry("check", group="things")
    with pytest.warns(AssayWarning, match="names itself 'mean_confidence'"):
        assert things.names() == []


def test_plugin_report_formats_are_written_and_broken_ones_left_out(monkeypatch, tmp_path,
                                                                    digits, digits_model):
    from assay.report.writers import REPORT_FILES, REPORT_FORMATS, ReportFormat, write_reports

    def broken(result):
        raise RuntimeError("bug in the plug-in")

    module = types.ModuleType("assay_test_formats")
    module.CSV = ReportFormat("metrics.csv", lambda result: "".join(
        f"{c.id},{m},{v}\n" for c in result.checks for m, v in c.metrics.items()))
    module.BROKEN = ReportFormat("broken.txt", broken)
    module.ESCAPE = ReportFormat("../escape.txt", lambda result: "x")
    points = [metadata.EntryPoint(name, f"assay_test_formats:{attr}", "assay.report_formats")
              for name, attr in (("csv", "CSV"), ("broken", "BROKEN"), ("escape", "ESCAPE"))]
    real = registry_module.entry_points
    plan = plan_from_dict({"checks": [{"name": "accuracy", "params": {"n": 50}}]})
    result = run_audit(digits_model, digits[1], plan, progress=False, threads=1)
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "assay_test_formats", module)
        patch.setattr(registry_module, "entry_points",
                      lambda group: points if group == "assay.report_formats" else real(group))
        REPORT_FORMATS.reload()
        with pytest.warns(AssayWarning) as caught:
            paths = write_reports(result, tmp_path / "out")
    REPORT_FORMATS.reload()
    assert "csv" not in REPORT_FORMATS
    messages = " ".join(str(w.message) for w in caught)
    assert "'broken'" in messages and "failed to render" in messages
    assert "'escape'" in messages and "not a plain file name" in messages
    assert sorted(paths) == sorted([*REPORT_FILES, "metrics.csv"])
    assert (tmp_path / "out" / "metrics.csv").read_text().startswith("accuracy,accuracy,")
    assert not (tmp_path / "escape.txt").exists()
