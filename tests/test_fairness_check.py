"""The fairness check: its metrics are the fairness report's, gates on groups are validated
before work, and what cannot be measured fails instead of passing."""

import math

import pytest
import torch
from torch import nn

from assay.audit.plan import plan_from_dict
from assay.audit.runner import run_audit
from assay.core.data import Dataset
from assay.core.model import ModelWrapper
from assay.errors import AssayValueError
from assay.metrics.fairness import Groups, fairness_report


def _biased(n: int = 2000, seed: int = 0):
    """Rows whose first feature is shifted for men (the last is sex itself); the model
    thresholds the first, so it selects men more often (a demographic parity ratio well
    under 0.8)."""
    g = torch.Generator().manual_seed(seed)
    sex = torch.randint(0, 2, (n,), generator=g)
    race = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, 3, generator=g)
    x[:, 0] += 0.8 * sex
    x[:, 2] = sex.float()  # sex is a feature too, as in Adult: a trained model can offset it
    y = ((x[:, 0] + 0.5 * torch.randn(n, generator=g)) > 0.4).long()
    data = Dataset(x, y, "synth", "test", ("no", "yes"),
                   attributes={"sex": sex, "race": race},
                   attribute_values={"sex": ("Female", "Male"), "race": ("A", "B c", "C")})
    net = nn.Linear(3, 2)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[-2.0, 0, 0], [2.0, 0, 0]]))
        net.bias.zero_()
    model = ModelWrapper(net.eval(), num_classes=2, input_shape=(3,), bounds=(-10.0, 10.0))
    return model, data


def _run(model, data, params, gates=()):
    plan = plan_from_dict({"checks": [{"name": "fairness", "params": params,
                                       "gates": list(gates)}]}, source="test")
    return run_audit(model, data, plan, cache_dir=None, progress=False).checks[0]


def test_metrics_are_the_fairness_report_and_a_biased_model_fails_its_gate():
    model, data = _biased()
    check = _run(model, data, {"attributes": ["sex", "sex*race"], "n_bootstrap": 200},
                 ["demographic_parity_ratio@sex >= 0.8"])
    assert check.status == "fail" and [g.passed for g in check.gates] == [False]
    predicted = model.predict(data.x).cpu()
    sex = Groups(data.attributes["sex"], ("Female", "Male"), "sex")
    race = Groups(data.attributes["race"], ("A", "B c", "C"), "race")
    for spec, groups in (("sex", sex), ("sex*race", sex.intersect(race))):
        report = fairness_report(data.y, predicted, groups, n_bootstrap=0)
        for name, value in report.summary.items():
            if name != "ece_difference":
                assert check.metrics[f"{name}@{spec}"] == pytest.approx(value, abs=1e-12)
        for index, group in enumerate(groups.names):
            label = group.replace(" ", "_")
            assert check.metrics[f"selection_rate@{spec}={label}"] == pytest.approx(
                report.by_group["selection_rate"][index], abs=1e-12)
    assert check.metrics["demographic_parity_ratio@sex"] < 0.7
    assert any(f.code == "four_fifths_rule" for f in check.findings)
    titles = [p.title for p in check.plots]
    assert any("by sex*race" in t for t in titles) and any("ratio" in t for t in titles)
    bars = next(p for p in check.plots if p.title.startswith("Selection and error rates by sex,"))
    low, high = bars.intervals["selection rate"][0]
    assert low < bars.series["selection rate"][0] < high  # the interval holds its estimate


def test_gates_on_groups_are_checked_before_work_and_a_missing_group_fails():
    model, data = _biased()
    with pytest.raises(AssayValueError, match="unknown metric 'selection_rate@age=old'"):
        _run(model, data, {"attributes": ["sex"]}, ["selection_rate@age=old <= 0.5"])
    check = _run(model, data, {"attributes": ["sex"], "n_bootstrap": 0},
                 ["selection_rate@sex=Other <= 0.9"])  # a value the data does not have
    assert check.status == "fail" and not check.gates[0].passed


@pytest.mark.parametrize("params, match", [
    ({"attributes": ["age"]}, "'age', which synth:test does not have.*race, sex"),
    ({"attributes": ["sex*sex"]}, "intersection of different ones"),
    ({"positive_class": 2}, "model has 2 classes"),
])
def test_bad_parameters_are_refused_before_work(params, match):
    model, data = _biased()
    with pytest.raises(AssayValueError, match=match):
        _run(model, data, params)


def test_data_without_sensitive_attributes_is_refused():
    model, data = _biased()
    plain = Dataset(data.x, data.y, "synth", "test", data.classes)
    with pytest.raises(AssayValueError, match="no sensitive attributes"):
        _run(model, plain, {})


def test_small_groups_are_reported_not_gated_and_one_group_left_is_nan():
    model, data = _biased(n=400)
    tiny = torch.zeros(400, dtype=torch.int64)
    tiny[:5] = 1  # 5 members: under the default minimum of 30
    data = Dataset(data.x, data.y, "synth", "test", data.classes, attributes={"site": tiny})
    check = _run(model, data, {"n_bootstrap": 0}, ["demographic_parity_ratio@site >= 0.0"])
    assert check.metrics["size@site=1"] == 5.0
    assert math.isnan(check.metrics["demographic_parity_ratio@site"])
    assert not check.gates[0].passed  # unmeasured: fails even a gate that anything passes
    assert {f.code for f in check.findings} >= {"small_groups", "unmeasured"}


def test_many_classes_compare_accuracy_unless_a_favourable_class_is_named():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(600, 4, generator=g)
    y = x.argmax(1)
    group = (torch.rand(600, generator=g) < 0.5).long()
    x[group == 1] += 0.7 * torch.randn(int(group.sum()), 4, generator=g)  # noisier group
    data = Dataset(x, y, "four", "test", tuple("abcd"), attributes={"g": group})
    model = ModelWrapper(nn.Identity(), num_classes=4, input_shape=(4,), bounds=(-20.0, 20.0))
    plain = _run(model, data, {"n_bootstrap": 0})
    assert "demographic_parity_ratio@g" not in plain.metrics
    correct = (x.argmax(1) == y).double()
    for code in (0, 1):
        assert plain.metrics[f"accuracy@g={code}"] == pytest.approx(
            float(correct[group == code].mean()), abs=1e-12)
    named = _run(model, data, {"n_bootstrap": 0, "positive_class": 3})
    chosen = (x.argmax(1) == 3).double()
    assert named.metrics["selection_rate@g=0"] == pytest.approx(
        float(chosen[group == 0].mean()), abs=1e-12)


def test_threshold_mitigations_close_the_gap_on_the_held_out_half():
    model, data = _biased(n=4000)
    check = _run(model, data, {"attributes": ["sex"], "n_bootstrap": 0, "mitigations": [
        "thresholds_demographic_parity", "thresholds_equalized_odds"]})
    rows = {r["method"]: r for r in check.details["mitigations"]}
    assert set(rows) == {"model", "thresholds_demographic_parity", "thresholds_equalized_odds"}
    assert rows["model"]["demographic_parity_ratio"] < 0.7
    assert rows["thresholds_demographic_parity"]["demographic_parity_ratio"] > 0.9
    assert (rows["thresholds_equalized_odds"]["equalized_odds_difference"]
            < rows["model"]["equalized_odds_difference"])
    assert any(p.title.startswith("Accuracy against disparity by sex") for p in check.plots)


def test_trained_mitigations_need_training_data_and_narrow_the_gap():
    model, data = _biased(n=3000)
    _, train = _biased(n=3000, seed=1)
    params = {"attributes": ["sex"], "n_bootstrap": 0,
              "mitigations": ["reweighing", "regularised"]}
    with pytest.raises(AssayValueError, match="--train-data"):
        _run(model, data, params)
    plan = plan_from_dict({"checks": [{"name": "fairness", "params": params}],
                           "training": {"arch": "mlp", "epochs": 3, "batch_size": 128,
                                        "lr": 3e-3}}, source="test")
    check = run_audit(model, data, plan, train_data=train, cache_dir=None,
                      progress=False).checks[0]
    rows = {r["method"]: r for r in check.details["mitigations"]}
    assert set(rows) == {"model", "reweighing", "regularised"}
    for method in ("reweighing", "regularised"):  # the data's labels depend on sex itself
        assert (rows[method]["demographic_parity_difference"]
                < rows["model"]["demographic_parity_difference"] - 0.05), rows


def test_calibration_reports_ece_per_group_through_the_disaggregation_primitive():
    from assay.metrics.calibration import ece

    model, data = _biased(n=2000)
    plan = plan_from_dict({"checks": [{"name": "calibration", "params": {
        "attributes": ["sex"]}, "gates": ["ece_difference@sex <= 1"]}]}, source="test")
    check = run_audit(model, data, plan, cache_dir=None, progress=False).checks[0]
    _, rest = data.split_off(0.5, seed=0)
    logits = model.predict_logits(rest.x)
    for code, name in enumerate(("Female", "Male")):
        chosen = rest.attributes["sex"] == code
        assert check.metrics[f"ece@sex={name}"] == pytest.approx(
            ece(logits[chosen], rest.y[chosen], n_bins=15, inputs="logits"), abs=1e-12)
    assert check.metrics["ece_difference@sex"] == pytest.approx(
        abs(check.metrics["ece@sex=Female"] - check.metrics["ece@sex=Male"]), abs=1e-12)
    with pytest.raises(AssayValueError, match="'age', which synth:test does not have"):
        plan_bad = plan_from_dict({"checks": [{"name": "calibration", "params": {
            "attributes": ["age"]}}]}, source="test")
        run_audit(model, data, plan_bad, cache_dir=None, progress=False)
