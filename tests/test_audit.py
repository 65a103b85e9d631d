import json
from importlib import resources
from typing import Any

import pytest
import torch
from torch import nn

from assay.audit.plan import load_plan, parse_gate, plan_from_dict
from assay.results import AuditResult
from assay.audit.runner import run_audit
from assay.checks import Check, CheckOutput, Param, register
from assay.checks.base import REGISTRY
from assay.core.model import ModelWrapper
from assay.errors import AssayValueError
from assay.report.writers import metric_grid, render_html, render_junit, write_reports

CALLS: list[str] = []


@register
class ExplodingCheck(Check):
    name = "test_exploding"
    pillar = "test"
    summary = "raises"
    params = ()

    def metric_names(self, params):
        return ["x"]

    def run(self, ctx, params):
        raise RuntimeError("boom")


@register
class CountingCheck(Check):
    name = "test_counting"
    pillar = "test"
    summary = "counts its runs"
    params = (Param("value", "float", 0.5, "the metric it reports"),)

    def metric_names(self, params):
        return ["value"]

    def run(self, ctx, params):
        CALLS.append(self.name)
        return CheckOutput({"value": params["value"]})


def robustness_plan(**params: Any):
    return {"checks": [{"name": "robustness", "params": params}]}


# ------------------------------------------------------------------------ plans
def test_plan_in_the_documented_shape(tmp_path):
    path = tmp_path / "plan.toml"
    path.write_text('[[checks]]\nname = "robustness"\n'
                    'params = { norms = ["linf"], eps = [0.1, 0.3] }\n'
                    'gates = ["robust_accuracy@linf=0.3 >= 0.4"]\n')
    plan = load_plan(path)
    (spec,) = plan.checks
    assert spec.params["eps"] == [0.1, 0.3] and spec.params["steps"] == 20
    assert spec.gates[0].metric == "robust_accuracy@linf=0.3" and spec.gates[0].threshold == 0.4


@pytest.mark.parametrize("raw,match", [
    ({"checks": [{"name": "nonexistent"}]}, "Unknown check 'nonexistent'"),
    ({"checks": [{"name": "accuracy", "gates": ["recall >= 0.9"]}]}, "unknown metric 'recall'"),
    ({"checks": [{"name": "accuracy", "gates": ["accuracy = 0.9"]}]}, "METRIC OP NUMBER"),
    ({"checks": [{"name": "accuracy", "gates": ["accuracy >= high"]}]}, "not a number"),
    ({"checks": [{"name": "robustness", "params": {"norm": ["linf"]}}]}, "unknown parameter 'norm'"),
    ({"checks": [{"name": "robustness", "params": {"norms": ["l1"]}}]},
     r"check 'robustness': .*'norms' parameter must be .*each item one of \{'linf', 'l2'\}"),
    ({"checks": [{"name": "robustness", "params": {"steps": "ten"}}]},
     "check 'robustness': .*'steps' parameter must be an int"),
    ({"checks": [{"name": "robustness", "params": {"eps": [-0.1]}}]}, ">= 0.0"),
    ({"checks": [{"name": "accuracy"}, {"name": "accuracy"}]}, "used twice"),
    ({"checks": [{"name": "accuracy", "gate": []}]}, "unknown key"),
    ({"checks": []}, "non-empty"),
    ({"checks": [{"name": "accuracy"}], "sead": 1}, "unknown top-level key 'sead'"),
])
def test_bad_plans_are_refused_with_the_key(raw, match):
    with pytest.raises(AssayValueError, match=match):
        plan_from_dict(raw)


def test_all_problems_are_reported_at_once():
    with pytest.raises(AssayValueError) as err:
        plan_from_dict({"checks": [{"name": "robustness", "params": {"steps": -1, "n": 0}}]})
    assert "'steps'" in str(err.value) and "'n'" in str(err.value)


def test_eps_table_per_norm():
    plan = plan_from_dict({"checks": [{"name": "robustness", "params": {
        "norms": ["linf", "l2"], "eps": {"linf": [0.1], "l2": [0.5, 1.0]}},
        "gates": ["robust_accuracy@l2=1 >= 0.1"]}]})
    assert plan.checks[0].gates[0].metric == "robust_accuracy@l2=1"


def test_gate_parsing():
    gate = parse_gate("robust_accuracy@linf=0.05>=0.6")
    assert (gate.metric, gate.op, gate.threshold) == ("robust_accuracy@linf=0.05", ">=", 0.6)
    assert gate.passes(0.6) and not gate.passes(0.59) and not gate.passes(None)
    assert not gate.passes(float("nan"))


# ------------------------------------------------------------------------ runner
def test_audit_metrics_gates_and_eps0(digits, digits_model):
    _, test = digits
    plan = plan_from_dict({"checks": [
        {"name": "accuracy", "gates": ["accuracy >= 0.9"]},
        {"name": "robustness", "params": {"norms": ["linf", "l2"], "eps": [0.0, 0.1], "n": 449},
         "gates": ["robust_accuracy@linf=0.1 >= 0.99"]}]})
    result = run_audit(digits_model, test, plan, progress=False)
    accuracy, robustness = result.checks
    assert accuracy.status == "pass" and robustness.status == "fail"
    assert result.exit_code == 1 and result.status == "fail"
    clean = accuracy.metrics["accuracy"]
    assert robustness.metrics["robust_accuracy@linf=0"] == clean  # exactly, not approximately
    assert robustness.metrics["robust_accuracy@l2=0"] == clean
    assert robustness.metrics["robust_accuracy@linf=0.1"] < clean
    assert not robustness.gates[0].passed and robustness.gates[0].value < 0.99
    assert result.provenance["torch"] == torch.__version__ and result.provenance["seed"] == 0
    assert len(result.model["sha256"]) == 64 and result.data["sha256"] == test.sha256()


def test_a_crashing_check_does_not_stop_the_others(digits, digits_model):
    _, test = digits
    plan = plan_from_dict({"checks": [{"name": "test_exploding", "gates": ["x > 0"]},
                                      {"name": "accuracy"}]})
    result = run_audit(digits_model, test, plan, progress=False)
    crashed, accuracy = result.checks
    assert crashed.status == "error" and "RuntimeError: boom" in crashed.error
    assert crashed.gates[0].passed is False
    assert accuracy.status == "pass" and result.exit_code == 1


def test_finished_checks_are_cached_and_not_recomputed(digits, digits_model, tmp_path):
    _, test = digits
    plan = plan_from_dict({"checks": [{"name": "test_counting"}, {"name": "test_exploding"}]})
    CALLS.clear()
    first = run_audit(digits_model, test, plan, cache_dir=tmp_path, progress=False)
    second = run_audit(digits_model, test, plan, cache_dir=tmp_path, progress=False)
    assert CALLS == ["test_counting"]
    assert not first.checks[0].cached and second.checks[0].cached
    assert second.checks[0].metrics == first.checks[0].metrics
    assert second.checks[1].status == "error"  # errors are retried, never cached
    changed = plan_from_dict({"checks": [{"name": "test_counting", "params": {"value": 0.7}}]})
    run_audit(digits_model, test, changed, cache_dir=tmp_path, progress=False)
    assert CALLS == ["test_counting", "test_counting"]  # new parameters, new key


def test_probability_model_is_audited_with_warnings(digits):
    _, test = digits
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Softmax(dim=1)).eval()
    model = ModelWrapper(net, num_classes=10, input_shape=(1, 8, 8))
    plan = plan_from_dict({"checks": [{"name": "robustness", "params": {"eps": [0.1], "n": 20}}]})
    result = run_audit(model, test, plan, progress=False)
    assert [f.code for f in result.findings] == ["model_probabilities"]
    assert result.checks[0].status == "warn"
    assert "probabilities" in render_html(result)


def test_labels_beyond_the_model_are_refused(digits):
    _, test = digits
    model = ModelWrapper(nn.Sequential(nn.Flatten(), nn.Linear(64, 5)), num_classes=5,
                         input_shape=(1, 8, 8))
    with pytest.raises(AssayValueError, match="10 classes"):
        run_audit(model, test, plan_from_dict({"checks": [{"name": "accuracy"}]}), progress=False)


# ------------------------------------------------------------------------ reports
@pytest.fixture
def audit_result(digits, digits_model):
    _, test = digits
    plan = plan_from_dict({"checks": [
        {"name": "accuracy", "gates": ["accuracy >= 0.5", "accuracy <= 0.1"]},
        {"name": "robustness", "params": {"eps": [0.0, 0.1], "n": 100}},
        {"name": "test_exploding"}]})
    return run_audit(digits_model, test, plan, progress=False)


def test_json_report_matches_schema_and_round_trips(audit_result, tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    paths = write_reports(audit_result, tmp_path)
    data = json.loads(paths["report.json"].read_text())
    schema = json.loads(resources.files("assay.report").joinpath("schema.json").read_text())
    jsonschema.validate(data, schema)
    assert AuditResult.from_dict(data).to_dict() == data
    assert [c["status"] for c in data["checks"]] == ["fail", "pass", "error"]
    # each metric with the direction, unit and range its check declares
    assert data["checks"][0]["metric_info"]["accuracy"] == {
        "direction": "higher", "unit": "fraction", "range": [0.0, 1.0]}
    assert set(data["checks"][1]["metric_info"]) == set(data["checks"][1]["metrics"])


def test_junit_has_one_testcase_per_gate(audit_result):
    import xml.etree.ElementTree as ET

    root = ET.fromstring(render_junit(audit_result))
    cases = root.findall(".//testcase")
    assert [c.get("name") for c in cases] == ["accuracy >= 0.5", "accuracy <= 0.1", "runs", "runs"]
    assert len(root.findall(".//failure")) == 1 and len(root.findall(".//error")) == 1


def test_html_is_self_contained(audit_result):
    page = render_html(audit_result)
    assert "<script" not in page and "http://" not in page and "https://" not in page
    # per-class bars, robustness curve, and the robustness gallery (8 clean, 8 adversarial)
    assert page.count('src="data:image/png;base64,') == 2 + 16
    assert "RuntimeError: boom" in page


def test_metric_grid_only_for_full_grids():
    full = {"acc@a": 1.0, "size@a": 2.0, "acc@b": 3.0, "size@b": None}
    assert metric_grid(full) == (["acc", "size"], {"a": [1.0, 2.0], "b": [3.0, None]})
    assert metric_grid({"acc@a": 1.0, "acc@b": 2.0}) is None  # one name: a plain list
    assert metric_grid({"acc@a": 1.0, "size@a": 2.0, "acc@b": 3.0}) is None  # a hole
    assert metric_grid({"acc@a": 1.0, "size@a": 2.0, "acc@b": 3.0, "n": 4.0}) is None
    assert metric_grid({}) is None


# ------------------------------------------------------------------------ every check
def _registered():
    from assay.checks import load_builtin_checks

    return sorted(name for name in load_builtin_checks() if not name.startswith("test_"))


@pytest.mark.parametrize("name", _registered())
def test_every_check_declares_valid_defaults_and_refuses_unknown_parameters(name):
    check = REGISTRY[name]()
    params = check.resolve_params({})
    assert set(params) == {p.name for p in check.params}
    assert check.metric_names(params), "a check must produce at least one metric"
    assert check.summary and check.pillar
    with pytest.raises(AssayValueError, match=f"check '{name}': unknown parameter 'bogus'"):
        check.resolve_params({"bogus": 1})
    for param in check.params:
        wrong = "text" if param.kind != "str" else 3
        with pytest.raises(AssayValueError, match=f"'{param.name}' parameter"):
            check.resolve_params({param.name: wrong})
