"""Gradient leakage (DLG, iDLG, Inverting Gradients) and model inversion (MI-Face) of issue
14: PSNR's closed form, the matching of a batch, labels read from a gradient, single
digits rebuilt from their gradient, a zero gradient that claims nothing, refusals, and
both checks through run_audit."""

import math

import pytest
import torch
from torch import nn

from assay.attacks.privacy import (DLG, IDLG, InvertingGradients, ModelInversion,
                                   labels_from_gradient, victim_gradient)
from assay.audit.plan import plan_from_dict
from assay.audit.runner import run_audit
from assay.core import zoo
from assay.core.data import Dataset
from assay.core.model import ModelWrapper
from assay.core.threads import using_threads
from assay.errors import AssayValueError
from assay.metrics.reconstruction import label_recovery, match_reconstructions, psnr


@pytest.fixture(autouse=True)
def one_thread():
    with using_threads(1):  # many small operators: more threads only spin on a shared CPU
        yield


def sigmoid_cnn(seed=0):
    """A tiny untrained CNN with sigmoid activations, as in the DLG and iDLG papers."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.Sigmoid(), nn.Flatten(),
                            nn.Linear(6 * 64, 10))
        for p in net.parameters():
            nn.init.uniform_(p, -0.5, 0.5)
    return ModelWrapper(net, num_classes=10, input_shape=(1, 8, 8), name="sigmoid cnn")


class Silent(nn.Module):
    """Logits that never depend on the weights: every training gradient is exactly 0."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(64, 10)

    def forward(self, x):
        return self.linear(x.flatten(1)) * 0.0


def test_psnr_has_its_closed_form():
    x = torch.rand(3, 1, 8, 8) * 0.5
    assert torch.isinf(psnr(x, x)).all()
    for c in (0.01, 0.1, 0.25):  # a constant offset c: MSE c^2, PSNR 20 log10(range / c)
        assert psnr(x + c, x).tolist() == pytest.approx([20 * math.log10(1 / c)] * 3, abs=1e-4)
        assert float(psnr(x + c, x, data_range=2.0)[0]) == pytest.approx(
            20 * math.log10(2 / c), abs=1e-4)
    with pytest.raises(AssayValueError, match="data_range"):
        psnr(x, x, data_range=0.0)
    with pytest.raises(AssayValueError, match="one shape"):
        psnr(x, x[:2])


def test_a_shuffled_batch_is_matched_back_and_labels_count_as_multisets():
    x = torch.rand(5, 1, 8, 8)
    order = torch.tensor([3, 0, 4, 1, 2])
    shuffled = x[order]
    found, values = match_reconstructions(shuffled, x)
    assert torch.equal(shuffled[found], x) and torch.isinf(values).all()
    noisy, _ = match_reconstructions(shuffled + 0.01 * torch.randn_like(x), x)
    assert torch.equal(noisy, found)
    assert label_recovery(torch.tensor([1, 1, 2]), torch.tensor([2, 1, 1])) == 1.0
    assert label_recovery(torch.tensor([1, 1, 1]), torch.tensor([2, 1, 3])) == pytest.approx(1 / 3)
    assert label_recovery(torch.tensor([-1]), torch.tensor([0])) == 0.0


def test_idlg_reads_the_label_of_one_sample_from_its_gradient(digits, digits_model):
    _, test = digits
    mlp = ModelWrapper(zoo.build("mlp", input_shape=(1, 8, 8), num_classes=10, seed=1),
                       num_classes=10, input_shape=(1, 8, 8))
    no_bias = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(),
                            nn.Linear(32, 10, bias=False))
    weights_only = ModelWrapper(no_bias, num_classes=10, input_shape=(1, 8, 8))
    for model in (digits_model, mlp, weights_only):  # the bias, or the weights' row sums
        for i in range(20):
            x, y = test.x[i:i + 1], test.y[i:i + 1]
            labels = labels_from_gradient(model, victim_gradient(model, x, y), 1, 10)
            assert labels.tolist() == y.tolist()


def test_dlg_and_idlg_rebuild_a_digit_from_its_gradient(digits):
    _, test = digits
    model = sigmoid_cnn()
    x, y = test.x[:1], test.y[:1]
    for attack in (DLG(steps=40), IDLG(steps=40)):
        result = attack(model, x, y)
        assert float(result.psnr[0]) > 30, type(attack).__name__
        assert result.labels.tolist() == y.tolist() and result.label_recovery == 1.0
        assert result.informative and result.gradient_match < 1e-4


def test_reconstructions_stay_in_the_bounds_and_repeat_with_the_seed(digits):
    _, test = digits
    x, y = test.x[:2] * 2 - 1, test.y[:2]
    net = sigmoid_cnn().net
    model = ModelWrapper(net, num_classes=10, input_shape=(1, 8, 8), bounds=(-1.0, 1.0))
    for attack in (DLG(steps=3), IDLG(steps=3), InvertingGradients(steps=20, restarts=2)):
        result = attack(model, x, y)
        assert result.reconstruction.shape == x.shape
        assert float(result.reconstruction.min()) >= -1 and float(result.reconstruction.max()) <= 1
        again = type(attack)(**{k: getattr(attack, k) for k in attack.constraints})(model, x, y)
        assert torch.equal(again.reconstruction, result.reconstruction)


def test_a_zero_gradient_claims_nothing(digits):
    _, test = digits
    x, y = test.x[:2], test.y[:2]
    model = ModelWrapper(Silent(), num_classes=10, input_shape=(1, 8, 8))
    for attack in (DLG(steps=5), IDLG(steps=5), InvertingGradients(steps=5)):
        result = attack(model, x, y)
        assert not result.informative
        assert result.labels.tolist() == [-1, -1] and result.label_recovery == 0.0
        assert float(result.psnr.max()) < 15  # the start, noise clipped to the bounds
    zeros = [torch.zeros_like(p) for p in sigmoid_cnn().parameters()]
    _, labels, _ = IDLG(steps=5).reconstruct(sigmoid_cnn(), zeros, 1)
    assert labels.tolist() == [-1]


def test_bad_settings_and_models_are_refused(digits):
    _, test = digits
    model = sigmoid_cnn()
    gradient = victim_gradient(model, test.x[:1], test.y[:1])
    for cls in (DLG, IDLG, InvertingGradients):
        with pytest.raises(AssayValueError, match="'steps' parameter"):
            cls(steps=0)
        with pytest.raises(AssayValueError, match="'batch_size' parameter"):
            cls(steps=1).reconstruct(model, gradient, 0)
    with pytest.raises(AssayValueError, match="'restarts' parameter"):
        InvertingGradients(restarts=0)
    with pytest.raises(AssayValueError, match="one tensor per parameter"):
        DLG(steps=1).reconstruct(model, gradient[:1], 1)
    frozen = sigmoid_cnn()
    frozen.requires_grad_(False)
    with pytest.raises(AssayValueError, match="no parameters that require grad"):
        victim_gradient(frozen, test.x[:1], test.y[:1])
    with pytest.raises(AssayValueError, match="no parameter of the model has 7 rows"):
        labels_from_gradient(model, gradient, 1, 7)
    with pytest.raises(AssayValueError, match="'steps' parameter"):
        ModelInversion(steps=0)
    with pytest.raises(AssayValueError, match="'classes' must name"):
        ModelInversion(steps=1)(model, [10])


@pytest.mark.parametrize("cls", [DLG, IDLG, InvertingGradients, ModelInversion])
def test_every_setting_refuses_every_invalid_example(cls):
    for name, constraint in cls.constraints.items():
        cls(**{name: constraint.example()})
        for bad in constraint.invalid_examples():
            with pytest.raises(AssayValueError, match=f"'{name}' parameter of {cls.__name__}"):
                cls(**{name: bad})


def test_model_inversion_finds_a_confident_image_per_class(digits_model):
    result = ModelInversion(steps=300)(digits_model)
    assert result.images.shape == (10, 1, 8, 8) and result.classes.tolist() == list(range(10))
    assert float(result.images.min()) >= 0 and float(result.images.max()) <= 1
    assert bool((result.confidence >= 0.99).all())  # the paper's gamma stops each class
    assert bool((result.steps < 300).all())
    first = ModelInversion(steps=300)(digits_model, [3])
    assert torch.allclose(first.images[0], result.images[3], atol=1e-5)  # independent classes


def audit(model, data, checks, **kwargs):
    plan = plan_from_dict({"checks": checks})
    return run_audit(model, data, plan, progress=False, threads=1, **kwargs).checks


def test_the_gradient_leakage_check_reports_psnr_and_labels_per_batch_size(digits):
    _, test = digits
    (check,) = audit(sigmoid_cnn(), test.subset(40), [{"name": "gradient_leakage", "params": {
        "batch_sizes": [1, 2], "steps": 40}}])
    assert check.status != "error", check
    m = check.metrics
    assert set(m) == {"psnr@batch=1", "label_recovery@batch=1", "psnr@batch=2",
                      "label_recovery@batch=2"}
    assert 30 < m["psnr@batch=1"] <= 100 and m["label_recovery@batch=1"] == 1.0
    assert "gradient_leak" in [f.code for f in check.findings if f.level == "warn"]
    assert [len(g.images) for g in check.galleries] == [2, 4]
    assert check.metric_info["psnr@batch=1"].direction == "lower"


def test_the_gradient_leakage_check_passes_nothing_off_as_a_leak(digits):
    _, test = digits
    model = ModelWrapper(Silent(), num_classes=10, input_shape=(1, 8, 8))
    (check,) = audit(model, test.subset(10), [{"name": "gradient_leakage", "params": {
        "batch_sizes": [1], "steps": 2}}])
    assert check.metrics["psnr@batch=1"] < 15 and check.metrics["label_recovery@batch=1"] == 0
    assert [f.level for f in check.findings] == ["info", "info"]
    assert {f.code for f in check.findings} == {"zero_gradient", "no_gradient_leak"}


def test_the_model_inversion_check_compares_with_class_means(digits, digits_model):
    train, test = digits
    checks = [{"name": "model_inversion", "params": {"steps": 200}}]
    (alone,) = audit(digits_model, test, checks)
    assert alone.status != "error", alone
    assert alone.metrics["mean_nearest_psnr"] is None
    assert alone.metrics["inversion_accuracy"] > 0.5  # the digits CNN: each class's shape
    assert len([k for k in alone.metrics if k.startswith("class_similarity@")]) == 10
    (with_train,) = audit(digits_model, test, checks, train_data=train)
    assert 0 < with_train.metrics["mean_nearest_psnr"] <= 100
    assert len(with_train.galleries) == 2 and len(with_train.galleries[0].images) == 10


def test_the_checks_refuse_tabular_data_and_frozen_models(digits):
    _, test = digits
    rows = Dataset(test.x.flatten(1), test.y, test.name, test.split, test.classes)
    model = ModelWrapper(nn.Sequential(nn.Linear(64, 10)), num_classes=10, input_shape=(64,))
    for name in ("gradient_leakage", "model_inversion"):
        with pytest.raises(AssayValueError, match="tabular data"):
            audit(model, rows, [{"name": name}])
    frozen = sigmoid_cnn()
    frozen.requires_grad_(False)
    with pytest.raises(AssayValueError, match="no parameters that require grad"):
        audit(frozen, test, [{"name": "gradient_leakage"}])
    with pytest.raises(AssayValueError, match="need 128 samples"):
        audit(sigmoid_cnn(), test.subset(20), [{"name": "gradient_leakage", "params": {
            "batch_sizes": [64], "trials": 2}}])
