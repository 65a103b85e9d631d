"""Calibration metrics and temperature scaling."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from assay.defenses.calibration import TemperatureScaled, fit_temperature
from assay.errors import AssayValueError
from assay.metrics.calibration import (ReliabilityDiagram, brier, classwise_ece, ece, mce, nll,
                                       reliability_diagram_data)

# Six samples, three classes (float64 so that no value sits on a bin edge by rounding).
PROBS = torch.tensor([
    [0.90, 0.05, 0.05],  # y=0: conf 0.90, correct
    [0.85, 0.10, 0.05],  # y=1: conf 0.85, wrong
    [0.70, 0.19, 0.11],  # y=0: conf 0.70, correct
    [0.30, 0.65, 0.05],  # y=1: conf 0.65, correct
    [0.50, 0.29, 0.21],  # y=2: conf 0.50, wrong
    [0.35, 0.33, 0.32],  # y=0: conf 0.35, correct
], dtype=torch.float64)
LABELS = torch.tensor([0, 1, 0, 1, 2, 0])


def test_ece_and_mce_by_hand_equal_width():
    # 5 equal-width bins (0, .2], (.2, .4], (.4, .6], (.6, .8], (.8, 1]:
    #   (.8, 1]: conf {.90, .85} mean .875, acc 1/2   -> |.5 - .875| = .375, weight 2/6
    #   (.6,.8]: conf {.70, .65} mean .675, acc 2/2   -> |1 - .675|  = .325, weight 2/6
    #   (.4,.6]: conf {.50}           .5,   acc 0     -> .5,              weight 1/6
    #   (.2,.4]: conf {.35}           .35,  acc 1     -> .65,             weight 1/6
    # ECE = (2 * .375 + 2 * .325 + .5 + .65) / 6 = 2.55 / 6 = 0.425; MCE = .65
    assert ece(PROBS, LABELS, n_bins=5) == pytest.approx(0.425, abs=1e-12)
    assert mce(PROBS, LABELS, n_bins=5) == pytest.approx(0.65, abs=1e-12)
    # one bin: |mean acc - mean conf| = |4/6 - 3.95/6| = 0.05/6
    assert ece(PROBS, LABELS, n_bins=1) == pytest.approx(0.05 / 6, abs=1e-12)


def test_ece_by_hand_equal_mass():
    # 3 bins of two samples, by sorted confidence:
    #   {.35, .50}: conf .425, acc 1/2 -> .075;  {.65, .70}: .675, acc 1 -> .325;
    #   {.85, .90}: .875, acc 1/2 -> .375;  ECE = (.075 + .325 + .375) * 2 / 6 = 0.258333...
    assert ece(PROBS, LABELS, n_bins=3, binning="equal_mass") == pytest.approx(
        0.775 / 3, abs=1e-12)
    assert mce(PROBS, LABELS, n_bins=3, binning="equal_mass") == pytest.approx(0.375, abs=1e-12)


def test_classwise_ece_brier_nll_by_hand():
    # classwise ECE, 5 bins; per class, sum over bins of |#hits - sum of p_c|:
    #   class 0: p {.90, .85} hits 1 -> .75; {.70} hits 1 -> .30; {.30, .35} hits 1 -> .35;
    #            {.50} hits 0 -> .50                                   total 1.90
    #   class 1: p {.05, .10, .19} hits 1 -> .66; {.29, .33} hits 0 -> .62; {.65} hits 1 -> .35
    #                                                                  total 1.63
    #   class 2: p {.05, .05, .11, .05} hits 0 -> .26; {.21, .32} hits 1 -> .47   total .73
    #   classwise ECE = (1.90 + 1.63 + .73) / (N * K) = 4.26 / 18
    assert classwise_ece(PROBS, LABELS, n_bins=5) == pytest.approx(4.26 / 18, abs=1e-12)
    # Brier, per sample sum_k (p_k - 1[y = k])^2:
    #   .01 + .0025 + .0025 = .015;  .7225 + .81 + .0025 = 1.535;  .09 + .0361 + .0121 = .1382
    #   .09 + .1225 + .0025 = .215;  .25 + .0841 + .6241 = .9582;  .4225 + .1089 + .1024 = .6338
    assert brier(PROBS, LABELS) == pytest.approx(3.4952 / 6, abs=1e-12)
    # NLL: minus the mean log-probability of the labels .90, .10, .70, .65, .21, .35
    expected = -sum(math.log(p) for p in (0.90, 0.10, 0.70, 0.65, 0.21, 0.35)) / 6
    assert nll(PROBS, LABELS) == pytest.approx(expected, abs=1e-12)
    assert nll(PROBS.log(), LABELS, inputs="logits") == pytest.approx(expected, abs=1e-12)


def _reference_ece(conf: np.ndarray, correct: np.ndarray, n_bins: int) -> float:
    """Guo et al.'s loop: bins (lower, upper], weight = fraction of samples in the bin."""
    edges = np.linspace(0, 1, n_bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            total += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return total


@pytest.mark.parametrize("seed", range(5))
def test_ece_matches_a_reference_loop_and_logits_equal_probs(seed):
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(500, 7, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 7, (500,), generator=g)
    probs = logits.softmax(1)
    conf, pred = probs.max(1)
    expected = _reference_ece(conf.numpy(), (pred == labels).double().numpy(), 15)
    assert ece(probs, labels) == pytest.approx(expected, abs=1e-12)
    assert ece(logits, labels, inputs="logits") == pytest.approx(expected, abs=1e-12)
    for fn in (mce, classwise_ece):
        assert fn(logits, labels, inputs="logits") == pytest.approx(fn(probs, labels), abs=1e-12)
    assert brier(logits, labels, inputs="logits") == pytest.approx(brier(probs, labels))
    assert nll(logits, labels, inputs="logits") == pytest.approx(nll(probs, labels), rel=1e-9)


def test_calibrated_probabilities_have_small_ece():
    g = torch.Generator().manual_seed(0)
    probs = (2 * torch.randn(20000, 5, generator=g)).softmax(1)
    labels = torch.multinomial(probs, 1, generator=g).squeeze(1)  # labels drawn from probs
    assert ece(probs, labels) < 0.02
    assert ece(probs, labels, binning="equal_mass") < 0.02
    assert classwise_ece(probs, labels) < 0.01


def test_reliability_diagram_data_is_plain_and_consistent():
    data = reliability_diagram_data(PROBS, LABELS, n_bins=5)
    assert isinstance(data, ReliabilityDiagram)
    assert data.count == (0, 1, 1, 2, 2)
    assert data.confidence[0] is None and data.accuracy[0] is None
    assert data.confidence[4] == pytest.approx(0.875) and data.accuracy[4] == 0.5
    assert data.bin_lower[1] == pytest.approx(0.2) and data.bin_upper[4] == 1.0
    assert data.ece == pytest.approx(ece(PROBS, LABELS, n_bins=5))
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.ece = 0.0  # type: ignore[misc]
    round_trip = ReliabilityDiagram(**json.loads(json.dumps(dataclasses.asdict(data))) | {
        k: tuple(v) for k, v in dataclasses.asdict(data).items() if isinstance(v, tuple)})
    assert round_trip == data
    mass = reliability_diagram_data(PROBS, LABELS, n_bins=3, binning="equal_mass")
    assert mass.count == (2, 2, 2)
    assert mass.bin_lower[0] == pytest.approx(0.35) and mass.bin_upper[2] == pytest.approx(0.9)
    assert mass.ece == pytest.approx(ece(PROBS, LABELS, n_bins=3, binning="equal_mass"))


@pytest.mark.parametrize("call", [
    lambda: ece(PROBS, LABELS, n_bins=0),
    lambda: ece(PROBS, LABELS, n_bins=2.5),
    lambda: ece(PROBS, LABELS, binning="quantile"),
    lambda: ece(PROBS, LABELS, inputs="prob"),
    lambda: ece(PROBS.log(), LABELS),  # logits passed as probabilities
    lambda: mce(PROBS, LABELS[:3]),
    lambda: classwise_ece(PROBS, LABELS + 1),
    lambda: brier(PROBS, LABELS.double()),
    lambda: nll(PROBS[0], LABELS),
    lambda: nll(torch.full((2, 3), float("nan")), LABELS[:2], inputs="logits"),
    lambda: reliability_diagram_data(PROBS, LABELS, binning="uniform"),
])
def test_calibration_metrics_reject_bad_input(call):
    with pytest.raises(AssayValueError):
        call()


def test_probs_error_tells_how_to_fix():
    with pytest.raises(AssayValueError, match="inputs='logits'"):
        ece(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))


# --------------------------------------------------------------------------- temperature


def test_fit_temperature_recovers_a_known_temperature():
    g = torch.Generator().manual_seed(0)
    true_logits = 2 * torch.randn(6000, 8, generator=g)
    labels = torch.multinomial(true_logits.softmax(1), 1, generator=g).squeeze(1)
    for scale in (3.0, 0.5):  # over- and under-confident
        t = fit_temperature(scale * true_logits, labels)
        assert t == pytest.approx(scale, rel=0.05)


def test_fit_temperature_keeps_to_its_range_when_everything_is_right():
    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0]])
    labels = torch.tensor([0, 1])
    t = fit_temperature(logits, labels)
    # the NLL keeps falling as T -> 0; the search stops once it is flat (or at T = 0.01)
    assert 1e-2 <= t < 0.5 and math.isfinite(t)
    assert nll(logits / t, labels, inputs="logits") < 1e-6


@pytest.fixture(scope="module")
def overconfident_digits():
    """An MLP fitted hard to 300 digits: confident, and wrong more often than it thinks."""
    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[:300]), y[:300]).backward()
        opt.step()
    model.eval()
    return model, (x[300:900], y[300:900]), (x[900:], y[900:])


def test_temperature_scaling_lowers_heldout_nll_and_keeps_accuracy(overconfident_digits):
    model, (x_cal, y_cal), (x_test, y_test) = overconfident_digits
    scaled = TemperatureScaled.fit(model, x_cal, y_cal, batch_size=128)
    with torch.no_grad():
        before, after = model(x_test), scaled(x_test)
    assert float(scaled.temperature) > 1.0  # overconfident -> softened
    assert nll(after, y_test, inputs="logits") < nll(before, y_test, inputs="logits") - 0.05
    assert torch.equal(after.argmax(1), before.argmax(1))  # accuracy unchanged
    assert ece(after, y_test, inputs="logits") < ece(before, y_test, inputs="logits")
    torch.testing.assert_close(after, before / scaled.temperature)


def test_temperature_scaled_module():
    base = nn.Linear(4, 3)
    weights = {k: v.clone() for k, v in base.state_dict().items()}
    scaled = TemperatureScaled(base, temperature=2.5)
    assert "temperature" in scaled.state_dict() and float(scaled.temperature) == 2.5
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in weights.items())
    x = torch.rand(5, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(scaled(x), base(x) / 2.5)
    assert "2.5" in repr(scaled)


@pytest.mark.parametrize("call", [
    lambda: TemperatureScaled(nn.Linear(2, 2), temperature=0.0),
    lambda: TemperatureScaled(nn.Linear(2, 2), temperature=-1.0),
    lambda: TemperatureScaled(nn.Linear(2, 2), temperature=float("nan")),
    lambda: TemperatureScaled("model", temperature=1.0),
    lambda: fit_temperature(torch.randn(4, 3), torch.tensor([0, 1, 2, 3])),
    lambda: fit_temperature(torch.randn(4, 3), torch.tensor([0, 1])),
    lambda: fit_temperature(torch.randn(4), torch.tensor([0, 1, 2, 0])),
    lambda: fit_temperature(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), max_iter=0),
])
def test_temperature_rejects_bad_input(call):
    with pytest.raises(AssayValueError):
        call()


def test_temperature_settings_are_keyword_only():
    with pytest.raises(TypeError):
        TemperatureScaled(nn.Linear(2, 2), 2.0)  # type: ignore[misc]
