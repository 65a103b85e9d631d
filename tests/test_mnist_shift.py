"""Distribution-shift checks on the real MNIST with a zoo CNN (skipped without the data)."""

import pytest

from assay.audit.plan import plan_from_dict
from assay.audit.runner import run_audit
from assay.core import zoo
from assay.core.data import load_data
from assay.core.model import ModelWrapper
from assay.core.training import TrainConfig, fit
from assay.defenses.calibration.conformal import SplitConformal, average_set_size
from assay.shift.corruptions import corrupt

from conftest import require_data

pytestmark = pytest.mark.data

NOISE_AND_BLUR = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
                  "motion_blur", "zoom_blur")


@pytest.fixture(scope="module")
def mnist():
    root = require_data("mnist")
    require_data("fashion-mnist")
    train = load_data("mnist:train:6000", data_root=root)
    test = load_data("mnist:test:2000", data_root=root)
    net = zoo.build("small_cnn", input_shape=(1, 28, 28), num_classes=10, seed=0)
    fit(net, train, TrainConfig(epochs=2, lr=2e-3, seed=0), show_progress=False)
    model = ModelWrapper(net, num_classes=10, input_shape=(1, 28, 28), name="mnist small_cnn")
    return root, model, train, test


@pytest.mark.parametrize("name", NOISE_AND_BLUR)
def test_accuracy_falls_with_severity(mnist, name):
    _, model, _, test = mnist
    accuracies = []
    for severity in range(6):
        x = corrupt(test.x, name, severity, seed=severity)
        accuracies.append(float((model.predict(x) == test.y).float().mean()))
    assert accuracies[0] > 0.9
    assert accuracies[5] < accuracies[0], accuracies
    # non-increasing up to sampling noise (0.01 = 20 of 2000 samples)
    assert all(b <= a + 0.01 for a, b in zip(accuracies, accuracies[1:])), accuracies


def test_ood_against_fashion_mnist_reports_every_detector(mnist, monkeypatch):
    root, model, train, test = mnist
    monkeypatch.setenv("ASSAY_DATA_DIR", str(root))
    plan = plan_from_dict({"checks": [{"name": "ood", "params": {"n": 1000}}]})
    (result,) = run_audit(model, test, plan, train_data=train, progress=False).checks
    assert result.details["ood_sets"]["far"].startswith("fashion-mnist")
    assert result.details["ood_sets"]["near"] == "corrupted"
    for detector in ("msp", "maxlogit", "energy", "odin", "mahalanobis", "knn", "vim"):
        assert 0.0 <= result.metrics[f"auroc@{detector}:far"] <= 1.0
        assert 0.0 <= result.metrics[f"auroc@{detector}:near"] <= 1.0
    assert result.metrics["auroc@msp:far"] > 0.5


def test_raps_sets_no_larger_than_aps(mnist):
    _, model, _, test = mnist
    logits = model.predict_logits(test.x)
    cal, held = slice(0, 1000), slice(1000, 2000)
    sizes = {}
    for score in ("aps", "raps"):
        conformal = SplitConformal(score=score, alpha=0.05, inputs="logits", seed=0)
        sets = conformal.calibrate(logits[cal], test.y[cal]).predict_sets(logits[held])
        sizes[score] = average_set_size(sets)
    assert sizes["raps"] <= sizes["aps"] + 1e-9, sizes
