"""The calibration, conformal and ood checks, run through the audit runner."""

import pytest
import torch

from assay.audit.plan import plan_from_dict
from assay.audit.runner import run_audit
from assay.core.data import Dataset
from assay.metrics.calibration import ece


def run(model, data, *checks, train=None):
    plan = plan_from_dict({"checks": list(checks)})
    return run_audit(model, data, plan, train_data=train, progress=False).checks


def test_calibration_check_reports_the_metric_functions(digits, digits_model):
    _, test = digits
    (result,) = run(digits_model, test, {"name": "calibration"})
    _, rest = test.split_off(0.5, seed=0)
    logits = digits_model.predict_logits(rest.x)
    assert result.metrics["ece"] == pytest.approx(ece(logits, rest.y, inputs="logits"), abs=1e-12)
    t = result.metrics["temperature"]
    assert result.metrics["ece_ts"] == pytest.approx(ece(logits / t, rest.y, inputs="logits"),
                                                     abs=1e-12)
    assert result.details["fit_samples"] + result.details["eval_samples"] == len(test)


def test_calibration_flags_an_overconfident_model(digits):
    from assay.core import zoo
    from assay.core.model import ModelWrapper
    from assay.core.training import TrainConfig, fit

    train, test = digits
    weak = zoo.build("mlp", input_shape=(1, 8, 8), num_classes=10, seed=0)
    fit(weak, train.subset(300), TrainConfig(epochs=2), show_progress=False)
    hot = torch.nn.Sequential(weak, _Scale(8.0)).eval()
    model = ModelWrapper(hot, num_classes=10, input_shape=(1, 8, 8))
    (result,) = run(model, test, {"name": "calibration"})
    assert result.metrics["temperature"] > 1.2
    assert result.metrics["nll_ts"] < result.metrics["nll"]
    assert result.status == "warn" and "overconfident" in result.findings[0].message


class _Scale(torch.nn.Module):
    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


def test_conformal_check_covers_at_the_requested_level(digits, digits_model):
    _, test = digits
    (result,) = run(digits_model, test, {"name": "conformal", "params": {"alpha": 0.2},
                                         "gates": ["coverage@raps >= 0.7"]})
    n = result.details["test_samples"]
    slack = 3 * (0.2 * 0.8 / n) ** 0.5
    for score in ("lac", "aps", "raps"):
        assert result.metrics[f"coverage@{score}"] >= 0.8 - slack
    assert result.metrics["set_size@lac"] <= result.metrics["set_size@aps"] + 1e-9
    assert result.status == "pass"


def test_ood_check_on_digits(digits, digits_model):
    train, test = digits
    (result,) = run(digits_model, test, {"name": "ood", "params": {"detectors": ["msp", "energy",
                                                                              "mahalanobis"]}},
                    train=train)
    assert result.details["ood_sets"] == {"far": "noise", "near": "rotated"}
    assert result.metrics["auroc@msp:far"] > 0.5
    assert result.metrics["auroc@mahalanobis:near"] > 0.7
    # near-OOD is the harder task: no detector separates it better than noise
    for detector in ("msp", "energy", "mahalanobis"):
        assert result.metrics[f"auroc@{detector}:near"] < result.metrics[f"auroc@{detector}:far"]
    assert len(result.plots) == 3


def test_ood_falls_back_to_noise_when_fashion_mnist_is_missing(digits, digits_model, monkeypatch):
    monkeypatch.delenv("ASSAY_DATA_DIR", raising=False)
    _, test = digits
    mnist_like = Dataset(test.x, test.y, "mnist", "test", test.classes)
    (result,) = run(digits_model, mnist_like, {"name": "ood", "params": {
        "detectors": ["msp"], "ood_sets": ["far"]}})
    assert result.details["ood_sets"] == {"far": "noise"}
    assert result.status == "warn"
    assert any(f.code == "ood_set_fallback" for f in result.findings)


def test_ood_set_with_the_wrong_shape_is_an_error(digits, digits_model, tmp_path):
    import numpy as np

    path = tmp_path / "wide.npz"
    np.savez(path, x=np.random.rand(4, 1, 28, 28).astype(np.float32), y=np.arange(4))
    _, test = digits
    (result,) = run(digits_model, test, {"name": "ood", "params": {
        "detectors": ["msp"], "ood_sets": [str(path)]}})
    assert result.status == "error" and "input shape" in result.error
