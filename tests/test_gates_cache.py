"""Gates are evaluated on every run, the cache holds outputs only and is validated on
read, and a plan without gates says it required nothing (issue 11, items 1, 2 and 4)."""

import json
import logging

import numpy as np
import pytest
import torch
from torch import nn

from assay.audit.cache import ResultCache
from assay.audit.plan import plan_from_dict
from assay.audit.runner import run_audit
from assay.checks import Check, CheckOutput, Finding, Param, Plot, register
from assay.cli import main
from assay.core.data import Dataset
from assay.core.loaders import load_digits
from assay.core.model import ModelWrapper
from assay.results import MetricInfo

RUNS: list[float] = []


@register
class ValueCheck(Check):
    """Reports ``value`` (or NaN), a plot, and optionally a warning; counts its runs."""

    name = "test_gc_value"
    pillar = "test"
    summary = "reports its parameter"
    params = (Param("value", "float", 0.5, "the metric it reports"),
              Param("warn", "bool", False, "add a warn finding"),
              Param("nan", "bool", False, "report NaN instead"),
              Param("opaque_details", "bool", False, "details that JSON cannot hold"))

    def metric_names(self, params):
        return ["value"]

    def run(self, ctx, params):
        RUNS.append(params["value"])
        findings = [Finding("warn", "odd", "something odd")] if params["warn"] else []
        details = {"object": object()} if params["opaque_details"] else {"k": [1, 2]}
        value = float("nan") if params["nan"] else params["value"]
        return CheckOutput({"value": value}, findings,
                           [Plot("v", "x", "y", [0.0, 1.0], {"v": [0.1, 0.2]})], details)


@pytest.fixture
def model():
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    return ModelWrapper(net, num_classes=10, input_shape=(1, 8, 8))


@pytest.fixture
def test_split():
    return load_digits("test").subset(64)


def audit(model, data, cache_dir, gates=(), **params):
    plan = plan_from_dict({"checks": [{"name": "test_gc_value", "params": params,
                                       "gates": list(gates)}]})
    return run_audit(model, data, plan, cache_dir=cache_dir, progress=False).checks[0]


# ------------------------------------------------------------ item 1: gates never cached
def test_gates_and_status_are_judged_again_after_a_cache_hit(model, test_split, tmp_path):
    RUNS.clear()
    first = audit(model, test_split, tmp_path, ["value >= 0.4"])
    stricter = audit(model, test_split, tmp_path, ["value >= 0.6"])
    none = audit(model, test_split, tmp_path)
    added = audit(model, test_split, tmp_path, ["value >= 0.4", "value <= 0.1"])
    assert RUNS == [0.5]  # one computation, four verdicts
    assert first.status == "pass" and not first.cached
    assert stricter.cached and stricter.status == "fail"
    assert [(g.expr, g.passed) for g in stricter.gates] == [("value >= 0.6", False)]
    assert none.cached and none.status == "pass" and none.gates == () and not none.gated
    assert added.status == "fail" and [g.passed for g in added.gates] == [True, False]
    assert first.gated and added.failed_gates[0].expr == "value <= 0.1"


def test_metric_info_comes_from_the_checks_declaration_even_on_a_cache_hit(
        model, test_split, tmp_path, monkeypatch):
    monkeypatch.setattr(ValueCheck, "declared_metrics", {"value": MetricInfo("lower", "ratio")})
    fresh = audit(model, test_split, tmp_path)
    monkeypatch.setattr(ValueCheck, "declared_metrics", {"val*": MetricInfo("higher")})
    cached = audit(model, test_split, tmp_path)
    assert not fresh.cached and fresh.metric_info == {"value": MetricInfo("lower", "ratio")}
    assert cached.cached and cached.metric_info == {"value": MetricInfo("higher")}
    (entry,) = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert "metric_info" not in entry  # outputs only: the declaration is read afresh


def test_warn_status_is_derived_from_cached_findings(model, test_split, tmp_path):
    fresh = audit(model, test_split, tmp_path, warn=True)
    cached = audit(model, test_split, tmp_path, warn=True)
    failing = audit(model, test_split, tmp_path, ["value > 1"], warn=True)
    assert fresh.status == cached.status == "warn" and cached.cached
    assert cached.findings == fresh.findings and cached.plots == fresh.plots
    assert failing.status == "fail"  # a failed gate outranks a warning


def test_a_gate_on_a_nan_metric_fails_fresh_and_cached(model, test_split, tmp_path):
    fresh = audit(model, test_split, tmp_path, ["value >= 0"], nan=True)
    cached = audit(model, test_split, tmp_path, ["value >= 0"], nan=True)
    assert cached.cached and cached.metrics["value"] is None
    assert fresh.status == cached.status == "fail"


def test_cache_entry_holds_outputs_not_verdicts(model, test_split, tmp_path):
    audit(model, test_split, tmp_path, ["value >= 0.4"])
    (entry,) = tmp_path.glob("*.json")
    stored = json.loads(entry.read_text())
    assert set(stored) == {"format", "metrics", "findings", "plots", "details", "seconds",
                           "galleries"}


def test_the_key_holds_the_torch_version(model, test_split, tmp_path, monkeypatch):
    RUNS.clear()
    audit(model, test_split, tmp_path)
    monkeypatch.setattr(torch, "__version__", "0.0.0+other")
    audit(model, test_split, tmp_path)
    assert len(RUNS) == 2


def test_an_output_that_cannot_be_cached_is_kept(model, test_split, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="assay"):
        result = audit(model, test_split, tmp_path, ["value >= 0.4"], opaque_details=True)
    assert result.status == "pass" and "could not cache" in caplog.text
    assert not list(tmp_path.glob("*"))  # no half-written or temporary file left


def write_model_and_data(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    model_file = tmp_path / "linear.pt"
    torch.jit.save(torch.jit.script(net), str(model_file))
    test = load_digits("test")
    data_file = tmp_path / "digits.npz"
    np.savez(data_file, x=test.x.numpy(), y=test.y.numpy())
    return model_file, data_file


def test_a_stricter_gate_on_a_cached_run_fails_through_the_cli(tmp_path):
    """The issue's run: accuracy >= 0.05 into o1, then >= 0.99 into o1 must exit 1."""
    model_file, data_file = write_model_and_data(tmp_path)
    plan, out = tmp_path / "plan.toml", tmp_path / "o1"

    def run(accuracy_gate, ece_gates=""):
        plan.write_text(f'[[checks]]\nname = "accuracy"\ngates = ["{accuracy_gate}"]\n'
                        f'[[checks]]\nname = "calibration"\n{ece_gates}')
        code = main(["audit", "--model", str(model_file), "--data", str(data_file),
                     "--plan", str(plan), "--out", str(out), "--quiet"])
        return code, json.loads((out / "report.json").read_text())["checks"]

    code, checks = run("accuracy >= 0.05")
    assert code == 0 and not checks[0]["cached"]
    code, checks = run("accuracy >= 0.99")
    assert code == 1 and checks[0]["cached"] and checks[0]["status"] == "fail"
    assert [g["expr"] for g in checks[0]["gates"]] == ["accuracy >= 0.99"]
    code, checks = run("accuracy >= 0.05", 'gates = ["ece <= 0.000001"]\n')  # gate added
    assert code == 1 and checks[1]["cached"] and checks[1]["gates"][0]["passed"] is False


# ------------------------------------------------------------ item 4: entries validated
def first_entry(model, test_split, tmp_path):
    audit(model, test_split, tmp_path, ["value >= 0.4"])
    (entry,) = tmp_path.glob("*.json")
    return entry


EDITS = {
    "metrics not an object": lambda e: {**e, "metrics": "abc"},
    "metric not a number": lambda e: {**e, "metrics": {"value": "abc"}},
    "metric a boolean": lambda e: {**e, "metrics": {"value": True}},
    "a status field": lambda e: {**e, "status": "bogus"},
    "seconds not a number": lambda e: {**e, "seconds": "slow"},
    "negative seconds": lambda e: {**e, "seconds": -1},
    "finding level": lambda e: {**e, "findings": [{"level": "loud", "code": "c", "message": "m"}]},
    "finding keys": lambda e: {**e, "findings": [{"level": "warn"}]},
    "plot kind": lambda e: {**e, "plots": [{**e["plots"][0], "kind": "pie"}]},
    "plot series": lambda e: {**e, "plots": [{**e["plots"][0], "series": {"v": ["x", "y"]}}]},
    "plot missing field": lambda e: {**e, "plots": [{"title": "t"}]},
    "details not an object": lambda e: {**e, "details": [1]},
    "old format": lambda e: {**e, "format": 1},
    "not an object": lambda e: [e],
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_hand_edited_entries_are_logged_and_recomputed(edit, model, test_split, tmp_path,
                                                       caplog):
    entry = first_entry(model, test_split, tmp_path)
    entry.write_text(json.dumps(EDITS[edit](json.loads(entry.read_text()))))
    RUNS.clear()
    with caplog.at_level(logging.WARNING, logger="assay"):
        result = audit(model, test_split, tmp_path, ["value >= 0.4"])
    assert RUNS == [0.5] and not result.cached and result.status == "pass"
    assert entry.name in caplog.text and "does not fit the cache schema" in caplog.text
    assert ResultCache(tmp_path).get(entry.stem) is not None  # rewritten, valid again


def test_a_truncated_entry_is_recomputed_and_says_so(model, test_split, tmp_path, caplog):
    entry = first_entry(model, test_split, tmp_path)
    entry.write_text(entry.read_text()[:25])
    RUNS.clear()
    with caplog.at_level(logging.WARNING, logger="assay"):
        result = audit(model, test_split, tmp_path, ["value >= 0.4"])
    assert RUNS == [0.5] and result.status == "pass"
    assert entry.name in caplog.text and "truncated" in caplog.text


# ------------------------------------------------------------ item 2: chance and no gates
def constant_model(label: int) -> ModelWrapper:
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with torch.no_grad():
        net[1].weight.zero_()
        net[1].bias.zero_()
        net[1].bias[label] = 1.0
    return ModelWrapper(net.eval(), num_classes=10, input_shape=(1, 8, 8))


def accuracy_check(model, data, **params):
    plan = plan_from_dict({"checks": [{"name": "accuracy", "params": params}]})
    return run_audit(model, data, plan, progress=False).checks[0]


def test_accuracy_at_chance_warns(test_split):
    check = accuracy_check(constant_model(0), load_digits("test"))
    counts = torch.bincount(load_digits("test").y)
    assert check.metrics["chance_accuracy"] == pytest.approx(float(counts.max()) / counts.sum())
    assert check.metrics["gain_over_chance"] <= 0
    assert check.status == "warn" and "near_chance" in [f.code for f in check.findings]


def test_a_trained_model_is_not_near_chance(digits_model):
    check = accuracy_check(digits_model, load_digits("test"))
    assert check.metrics["gain_over_chance"] > 0.9
    assert "near_chance" not in [f.code for f in check.findings]


def test_the_rule_asks_the_interval_not_the_point_estimate():
    from assay.checks.accuracy import _chance_findings

    # 7 of 10 right where chance is 0.5: 0.7 is above the 0.55 bar, its interval is not.
    assert [f.code for f in _chance_findings(0.7, 0.397, 0.892, 0.5, "a")] == ["near_chance"]
    assert _chance_findings(0.7, 0.671, 0.727, 0.5, "a") == []  # 700 of 1000


def test_one_label_only_warns_and_has_no_gain():
    data = load_digits("test")
    ones = data.y == 1
    single = Dataset(data.x[ones], data.y[ones], data.name, data.split, data.classes)
    check = accuracy_check(constant_model(1), single)
    assert check.metrics["gain_over_chance"] is None
    assert "single_class" in [f.code for f in check.findings]


def test_the_default_plan_has_gates_and_fails_an_untrained_model(tmp_path, capsys):
    model_file, data_file = write_model_and_data(tmp_path)
    code = main(["audit", "--model", str(model_file), "--data", str(data_file),
                 "--out", str(tmp_path / "r"), "--quiet"])
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert code == 1
    assert [[g["expr"] for g in c["gates"]] for c in report["checks"]] == [
        ["gain_over_chance >= 0.5"], ["robust_accuracy@linf=0.1 >= 0.3"]]
    assert report["checks"][0]["gates"][0]["passed"] is False
    assert "FAILED accuracy: gain_over_chance >= 0.5" in capsys.readouterr().err


def test_a_plan_without_gates_says_nothing_was_required(tmp_path, capsys):
    model_file, data_file = write_model_and_data(tmp_path)
    plan = tmp_path / "plan.toml"
    plan.write_text('[[checks]]\nname = "calibration"\n')
    code = main(["audit", "--model", str(model_file), "--data", str(data_file),
                 "--plan", str(plan), "--out", str(tmp_path / "r"), "--quiet"])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 0 and "(no gates: nothing was required)" in last


@register
class FileCheck(Check):
    """Reports the sum of an .npz file's array; the file is one of its input files."""

    name = "test_gc_file"
    pillar = "test"
    summary = "reads a file"
    params = (Param("path", "str", "", "an .npz file"),)

    def metric_names(self, params):
        return ["total"]

    def input_files(self, params):
        return [params["path"]]

    def run(self, ctx, params):
        RUNS.append(params["path"])
        with np.load(params["path"]) as arrays:
            return CheckOutput({"total": float(arrays["v"].sum())})


def test_an_input_file_changed_in_place_is_not_answered_from_the_cache(model, test_split,
                                                                        tmp_path):
    RUNS.clear()
    path = tmp_path / "values.npz"
    plan = plan_from_dict({"checks": [{"name": "test_gc_file", "params": {"path": str(path)},
                                       "gates": ["total >= 1"]}]})
    np.savez(path, v=np.ones(3))
    first = run_audit(model, test_split, plan, cache_dir=tmp_path / "c", progress=False)
    again = run_audit(model, test_split, plan, cache_dir=tmp_path / "c", progress=False)
    np.savez(path, v=np.zeros(3))  # same path, new contents: a stale PASS would be wrong
    changed = run_audit(model, test_split, plan, cache_dir=tmp_path / "c", progress=False)
    assert [first.status, again.checks[0].cached, changed.checks[0].cached] == [
        "pass", True, False]
    assert changed.status == "fail" and changed.checks[0].metrics["total"] == 0.0
    assert len(RUNS) == 2
