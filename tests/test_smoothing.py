"""Randomized smoothing (Cohen et al., ICML 2019): CERTIFY, PREDICT, noise training, the
``certified_robustness`` check."""

import math
import warnings

import numpy as np
import pytest
import torch
from scipy.stats import beta, binomtest, norm
from torch import nn

from assay.audit.plan import plan_from_dict
from assay.audit.runner import run_audit
from assay.checks.base import REGISTRY
from assay.checks.certified import CertifiedRobustnessCheck  # importing registers the check
from assay.core import zoo
from assay.core.data import load_data
from assay.core.model import ModelWrapper
from assay.core.training import TrainConfig, fit
from assay.defenses.smoothing import (ABSTAIN, SmoothedClassifier, binomial_p_value,
                                      clopper_pearson_lower, gaussian_augmentation_loss,
                                      max_certified_radius)
from assay.errors import AssayValueError

from conftest import require_data


def linear_model(direction=(0.6, 0.8), offset=0.0) -> nn.Module:
    """Two classes split by the hyperplane u.x + b = 0 (u a unit vector): logits
    (u.x + b, -(u.x + b)); class 0 on the side u.x + b > 0."""
    net = nn.Linear(2, 2)
    u = torch.tensor(direction)
    with torch.no_grad():
        net.weight.copy_(torch.stack([u, -u]))
        net.bias.copy_(torch.tensor([offset, -offset]))
    return net


class Constant(nn.Module):
    """Always class ``label`` of ``k``, whatever the input."""

    def __init__(self, label=2, k=3):
        super().__init__()
        self.register_buffer("logits", torch.nn.functional.one_hot(torch.tensor(label), k).float())

    def forward(self, x):
        return self.logits.expand(len(x), -1)


def test_linear_model_radius_approaches_the_distance():
    """For x at distance d from the boundary of the linear model (on class 0's side),
    f(x + e) = 0 iff u.e > -d, and u.e ~ N(0, sigma^2) for a unit u, so the smoothed
    classifier's pA = Phi(d / sigma) and the exact radius sigma * Phi^-1(pA) = d: the
    smoothed linear classifier is certified up to its true distance, no further.

    CERTIFY uses pA_lower <= pA instead (w.p. 1 - alpha), so R <= d up to that failure
    probability. At n = 100000, sigma = 0.5 the Clopper-Pearson bound lies about
    3.1 * sqrt(pA (1 - pA) / n) below pA: R falls short of d by about 0.007 (d = 0.5) to
    0.014 (d = 1.0) with a standard deviation of 0.002-0.005; we allow 0.05.
    """
    u = torch.tensor([0.6, 0.8])
    offset = 0.1
    distances = torch.tensor([0.25, 0.5, 1.0])
    # points x = t u with u.x + b = d, moved along the boundary by an orthogonal shift
    along = torch.tensor([-0.8, 0.6]) * 3.0
    x = ((distances - offset)[:, None] * u) + along
    sigma = 0.5
    result = SmoothedClassifier(linear_model(offset=offset), sigma=sigma, seed=1).certify(
        x, n=100_000)
    assert result.prediction.tolist() == [0, 0, 0]
    radius = result.radius.double()
    assert torch.all((radius - distances.double()).abs() < 0.05), radius
    assert torch.all(radius <= distances.double() + 1e-3), radius
    # the other side: class 1 with the same radius
    mirrored = SmoothedClassifier(linear_model(offset=offset), sigma=sigma, seed=1).certify(
        ((-distances - offset)[:, None] * u) + along, n=100_000)
    assert mirrored.prediction.tolist() == [1, 1, 1]
    assert torch.all((mirrored.radius.double() - distances.double()).abs() < 0.05)


@pytest.mark.parametrize("sigma,n,alpha", [(0.25, 1000, 0.001), (0.5, 12_345, 0.01),
                                           (1.0, 100, 0.05)])
def test_constant_model_reaches_exactly_the_largest_radius(sigma, n, alpha):
    """All n copies agree, so nA = n and pA_lower = alpha^(1/n) (the Clopper-Pearson bound
    Beta.ppf(alpha, n, 1)): every radius is sigma * Phi^-1(alpha^(1/n)), the maximum."""
    x = torch.rand(7, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    result = SmoothedClassifier(Constant(), sigma=sigma, batch_size=64).certify(
        x, n0=10, n=n, alpha=alpha)
    bound = max_certified_radius(sigma, n, alpha)
    assert bound == pytest.approx(sigma * norm.ppf(beta.ppf(alpha, n, 1)), abs=1e-9)
    assert result.prediction.tolist() == [2] * 7
    assert torch.all((result.radius - bound).abs() < 1e-9)
    assert torch.all(result.counts[:, 2] == n)


def test_radius_never_exceeds_the_bound():
    x = torch.randn(40, 2, generator=torch.Generator().manual_seed(3)) * 3
    sigma, n, alpha = 0.5, 2000, 0.001
    result = SmoothedClassifier(linear_model(), sigma=sigma).certify(x, n=n, alpha=alpha)
    assert float(result.radius.max()) <= max_certified_radius(sigma, n, alpha) + 1e-12
    assert (result.prediction == ABSTAIN).sum() < 40


def test_clopper_pearson_lower_bound():
    k = np.array([0, 1, 50, 99, 100])
    bound = clopper_pearson_lower(k, 100, 0.001)
    assert bound[0] == 0.0
    assert bound[-1] == 0.001 ** (1 / 100)
    np.testing.assert_allclose(bound[1:4], beta.ppf(0.001, k[1:4], 100 - k[1:4] + 1))
    assert np.all(np.diff(bound) > 0)


def test_binomial_p_value_matches_scipy_binomtest():
    for n_a, n_b in [(10, 0), (7, 3), (50, 50), (51, 49), (600, 400), (3, 2), (1, 0)]:
        assert binomial_p_value(n_a, n_b) == pytest.approx(
            binomtest(n_a, n_a + n_b, 0.5).pvalue, rel=1e-9, abs=1e-15)


def test_abstains_on_the_boundary():
    on_boundary = torch.tensor([[0.8, -0.6], [-1.6, 1.2]])  # u.x = 0
    smoothed = SmoothedClassifier(linear_model(), sigma=0.25, seed=0)
    result = smoothed.certify(on_boundary, n=5000)
    assert result.prediction.tolist() == [ABSTAIN, ABSTAIN]
    assert result.radius.tolist() == [0.0, 0.0]
    assert torch.all(result.p_lower < 0.5)
    assert smoothed.predict(on_boundary, n=5000).tolist() == [ABSTAIN, ABSTAIN]


def test_predict_follows_the_binomial_test():
    """PREDICT returns the top class iff the binomial test of its count against the
    runner-up's rejects p = 1/2 at level alpha; abstains otherwise."""
    u = torch.tensor([0.6, 0.8])
    d = torch.tensor([-0.3, -0.02, -0.005, 0.0, 0.004, 0.01, 0.03, 0.5])
    x = d[:, None] * u
    alpha, n = 0.01, 4000
    smoothed = SmoothedClassifier(linear_model(), sigma=0.25, seed=5, batch_size=333)
    pred = smoothed.predict(x, n=n, alpha=alpha)
    counts = smoothed._sample_counts(x, (n,), "test")[:, 0]  # the same seeded noise
    expected = []
    for row in counts.tolist():
        top = int(np.argmax(row))
        p = binomtest(max(row), sum(sorted(row)[-2:]), 0.5).pvalue
        expected.append(top if p <= alpha else ABSTAIN)
    assert pred.tolist() == expected
    assert expected[0] == 1 and expected[-1] == 0 and ABSTAIN in expected


def test_counts_across_inputs_and_chunks():
    """Chunks that straddle inputs and phases count every copy once, for the right input."""
    x = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0], [0.0, -5.0], [5.0, 0.0]])
    net = nn.Linear(2, 4)
    with torch.no_grad():  # class = the quadrant direction with the largest projection
        net.weight.copy_(torch.tensor([[1.0, 0], [-1, 0], [0, 1], [0, -1]]))
        net.bias.zero_()
    result = SmoothedClassifier(net, sigma=0.1, batch_size=7).certify(x, n0=5, n=13)
    assert result.candidate.tolist() == [0, 1, 2, 3, 0]
    assert result.counts.tolist() == [[13, 0, 0, 0], [0, 13, 0, 0], [0, 0, 13, 0],
                                      [0, 0, 0, 13], [13, 0, 0, 0]]
    both = SmoothedClassifier(net, sigma=0.1, batch_size=7)._sample_counts(x, (5, 13), "t")
    assert both.sum(2).tolist() == [[5, 13]] * 5


def test_seeded_runs_repeat_and_seeds_differ():
    x = torch.tensor([[0.1, 0.05], [0.0, 0.02]])
    a = SmoothedClassifier(linear_model(), sigma=0.5, seed=3).certify(x, n=3000)
    b = SmoothedClassifier(linear_model(), sigma=0.5, seed=3).certify(x, n=3000)
    c = SmoothedClassifier(linear_model(), sigma=0.5, seed=4).certify(x, n=3000)
    assert torch.equal(a.counts, b.counts) and torch.equal(a.radius, b.radius)
    assert not torch.equal(a.counts, c.counts)
    smoothed = SmoothedClassifier(linear_model(), sigma=0.5, seed=3)
    assert torch.equal(smoothed.predict(x, n=500), smoothed.predict(x, n=500))


def test_mode_restored_and_model_wrapper_accepted(digits, digits_model):
    _, test = digits
    digits_model.train()
    result = SmoothedClassifier(digits_model, sigma=0.1).certify(test.x[:3], n0=10, n=50)
    assert digits_model.training
    assert result.counts.shape == (3, 10) and result.radius.dtype == torch.float64
    digits_model.eval()


def test_channels_last_copy_gives_the_same_counts(digits, digits_model):
    _, test = digits
    x = test.x[:4]
    fast = SmoothedClassifier(digits_model, sigma=0.25, channels_last=True).certify(x, n=300)
    plain = SmoothedClassifier(digits_model, sigma=0.25, channels_last=False).certify(x, n=300)
    assert torch.equal(fast.counts, plain.counts)
    assert next(digits_model.parameters()).is_contiguous()  # the caller's model is untouched


@pytest.mark.slow
def test_compiled_forward_gives_the_same_counts(digits, digits_model):
    _, test = digits
    x = test.x[:3]  # 3 * 350 copies in passes of 256: the last pass is padded
    compiled = SmoothedClassifier(digits_model, sigma=0.25, batch_size=256, compile=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback would warn
        fast = compiled.certify(x, n0=50, n=300)
    plain = SmoothedClassifier(digits_model, sigma=0.25, batch_size=256,
                               compile=False).certify(x, n0=50, n=300)
    assert torch.equal(fast.counts, plain.counts)
    assert torch.equal(fast.candidate, plain.candidate)


@pytest.mark.parametrize("kwargs,name", [({"sigma": 0.0}, "sigma"), ({"sigma": -1}, "sigma"),
                                         ({"sigma": float("nan")}, "sigma"),
                                         ({"batch_size": 0}, "batch_size"),
                                         ({"seed": -1}, "seed"), ({"seed": 1.5}, "seed"),
                                         ({"channels_last": 1}, "channels_last"),
                                         ({"compile": "yes"}, "compile")])
def test_bad_constructor_parameters_raise(kwargs, name):
    with pytest.raises(AssayValueError, match=f"'{name}' parameter of SmoothedClassifier"):
        SmoothedClassifier(linear_model(), **kwargs)


@pytest.mark.parametrize("kwargs,name", [({"n": 0}, "n"), ({"n0": 0}, "n0"),
                                         ({"alpha": 0.0}, "alpha"), ({"alpha": 1.0}, "alpha"),
                                         ({"n": 10.0}, "n")])
def test_bad_call_parameters_raise(kwargs, name):
    smoothed = SmoothedClassifier(linear_model())
    with pytest.raises(AssayValueError, match=f"'{name}' parameter of SmoothedClassifier.certify"):
        smoothed.certify(torch.zeros(1, 2), **kwargs)
    with pytest.raises(AssayValueError):
        smoothed.certify(torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(AssayValueError):
        SmoothedClassifier("not a model")
    with pytest.raises(AssayValueError, match="'sigma' parameter of gaussian_augmentation_loss"):
        gaussian_augmentation_loss(-0.1)


def test_gaussian_augmentation_loss_is_seeded_cross_entropy_on_noisy_inputs():
    net = linear_model()
    x, y = torch.zeros(16, 2), torch.zeros(16, dtype=torch.long)
    loss_a = gaussian_augmentation_loss(0.5, seed=1)(net, x, y)
    loss_b = gaussian_augmentation_loss(0.5, seed=1)(net, x, y)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    expected = torch.nn.functional.cross_entropy(net(x + 0.5 * noise), y)
    assert torch.equal(loss_a, loss_b) and torch.allclose(loss_a, expected)
    assert torch.equal(gaussian_augmentation_loss(0.0)(net, x, y),
                       torch.nn.functional.cross_entropy(net(x), y))


@pytest.fixture(scope="module")
def noise_trained_digits(digits):
    train, _ = digits
    net = zoo.build("small_cnn", input_shape=(1, 8, 8), num_classes=10, seed=0)
    fit(net, train, TrainConfig(epochs=15, lr=3e-3, seed=0),
        loss_fn=gaussian_augmentation_loss(0.25, seed=0), show_progress=False)
    return ModelWrapper(net, num_classes=10, input_shape=(1, 8, 8), name="digits cnn (noise)")


def _certified_check(model, data, **params):
    assert REGISTRY["certified_robustness"] is CertifiedRobustnessCheck
    plan = plan_from_dict({"checks": [{"name": "certified_robustness", "params": params}]})
    (result,) = run_audit(model, data, plan, progress=False).checks
    return result


def test_check_on_noise_trained_digits(digits, noise_trained_digits):
    _, test = digits
    radii = [0.0, 0.1, 0.25, 0.5, 0.75]
    result = _certified_check(noise_trained_digits, test, sigma=0.25, radii=radii, n0=50,
                              n=1000, n_samples=60)
    assert result.status != "error", result
    curve = [result.metrics[f"certified_accuracy@l2={r:g}"] for r in radii]
    assert all(b <= a for a, b in zip(curve, curve[1:])), curve
    assert curve[0] > 0.6, curve
    assert result.metrics["certified_accuracy@l2=0"] <= result.metrics["clean_accuracy_smoothed"] + 1e-12
    assert result.metrics["abstain_rate"] < 0.3
    r_max = max_certified_radius(0.25, 1000, 0.001)
    assert r_max == pytest.approx(0.615, abs=1e-3)  # 0.25 * Phi^-1(0.001 ** (1 / 1000))
    assert result.metrics["certified_accuracy@l2=0.75"] == 0.0  # beyond reach of n = 1000
    (plot,) = result.plots
    assert plot.x[0] == 0.0 and set(radii) <= set(plot.x)
    (series,) = plot.series.values()
    assert all(b <= a for a, b in zip(series, series[1:]))
    codes = {f.code for f in result.findings}
    assert {"smoothing_settings", "radius_beyond_reach"} <= codes
    assert "not_noise_trained" not in codes
    assert f"{r_max:.3f}" in next(f.message for f in result.findings
                                  if f.code == "smoothing_settings")


def test_check_warns_for_a_model_not_trained_with_noise(digits, digits_model):
    _, test = digits
    result = _certified_check(digits_model, test, sigma=1.0, n0=20, n=200, n_samples=40)
    assert "not_noise_trained" in {f.code for f in result.findings if f.level == "warn"}
    assert result.status == "warn"


@pytest.mark.data
def test_mnist_certified_accuracy_curve():
    root = require_data("mnist")
    train = load_data("mnist:train:3000", data_root=root)
    test = load_data("mnist:test:20", data_root=root)
    net = zoo.build("small_cnn", input_shape=(1, 28, 28), num_classes=10, seed=0)
    fit(net, train, TrainConfig(epochs=2, lr=2e-3, seed=0),
        loss_fn=gaussian_augmentation_loss(0.25), show_progress=False)
    model = ModelWrapper(net, num_classes=10, input_shape=(1, 28, 28))
    result = SmoothedClassifier(model, sigma=0.25).certify(test.x, n0=50, n=1000)
    correct = (result.prediction == test.y).numpy()
    radius = result.radius.numpy()
    curve = [float(np.mean(correct & (radius >= r))) for r in (0.0, 0.25, 0.5, 0.75)]
    assert curve[0] >= 0.6, curve
    assert all(b <= a for a, b in zip(curve, curve[1:])), curve
    assert math.isclose(radius.max(), max_certified_radius(0.25, 1000, 0.001), rel_tol=1e-9) \
        or radius.max() < max_certified_radius(0.25, 1000, 0.001)
