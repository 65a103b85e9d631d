"""The corruptions check through the runner (the transforms have their own tests)."""

import pytest
import torch

from assay.audit.plan import plan_from_dict
from assay.audit.runner import run_audit


def run(model, data, params):
    plan = plan_from_dict({"checks": [{"name": "corruptions", "params": params}]})
    return run_audit(model, data, plan, progress=False).checks[0]


def test_metrics_follow_the_grid_and_repeat(digits, digits_model):
    _, test = digits
    params = {"corruptions": ["gaussian_noise", "motion_blur", "contrast"], "severities": [1, 5],
              "n": 150}
    first, second = run(digits_model, test, params), run(digits_model, test, params)
    assert first.status in ("pass", "warn") and first.metrics == second.metrics
    grid = first.details["grid"]
    assert list(grid) == params["corruptions"] and all(len(r) == 2 for r in grid.values())
    for name, row in grid.items():
        assert first.metrics[f"accuracy@{name}"] == pytest.approx(sum(row) / 2)
    assert first.metrics["accuracy@severity=5"] == pytest.approx(
        sum(r[1] for r in grid.values()) / 3)
    assert grid["motion_blur"][1] < grid["motion_blur"][0] <= first.metrics["clean_accuracy"] + 0.02
    assert [p.kind for p in first.plots] == ["heatmap", "line"]


def test_baseline_gives_mce(digits, digits_model, digits_net, tmp_path):
    _, test = digits
    path = tmp_path / "baseline.pt"
    torch.jit.save(torch.jit.script(digits_net), str(path))
    result = run(digits_model, test, {"corruptions": ["motion_blur", "glass_blur"],
                                      "severities": [3, 5], "n": 100, "baseline": str(path)})
    assert result.metrics["mce"] == pytest.approx(1.0)  # the model against itself
    assert result.metrics["relative_mce"] == pytest.approx(1.0)


def test_bad_parameters_are_refused_in_the_plan():
    from assay.errors import AssayValueError

    for params in ({"corruptions": ["rain"]}, {"severities": [0]}, {"severities": [6]},
                   {"severities": [1.5]}):
        with pytest.raises(AssayValueError):
            plan_from_dict({"checks": [{"name": "corruptions", "params": params}]})
