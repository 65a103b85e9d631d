"""One trojan probability from Neural Cleanse and the maximum-margin scan: the logistic,
its fit to a population, and which class the verdict names."""

import math

import pytest
import torch

from assay.defenses.backdoor import (POPULATION_LOGISTIC, MarginScan, TriggerScan,
                                     TrojanLogistic, evidence, trojan_verdict)
from assay.errors import AssayValueError


def _trigger(anomaly: list[float]) -> TriggerScan:
    k = len(anomaly)
    values = torch.tensor(anomaly, dtype=torch.float64)
    return TriggerScan(torch.zeros(k, 2, 2), torch.zeros(k, 1, 2, 2), torch.ones(k),
                       torch.ones(k), values, float(values.max()), (), -1, 0.1)


def _margin(margins: list[float], p_value: float) -> MarginScan:
    values = torch.tensor(margins, dtype=torch.float64)
    return MarginScan(values, p_value, -1, 0.1, 0.05)


def test_the_logistic_is_its_closed_form_and_stable_far_out():
    logistic = TrojanLogistic(bias=-3.0, weights=(0.5, 1.0))
    assert logistic.probability((2.0, 1.0)) == pytest.approx(1 / (1 + math.exp(1.0)))
    assert logistic.probability((0.0, 3.0)) == 0.5
    assert logistic.probability((1e4, 0.0)) == 1.0
    assert TrojanLogistic(bias=-1e4, weights=(0.0, 0.0)).probability((0.0, 0.0)) == 0.0


def test_the_evidence_is_capped():
    assert evidence(_trigger([0.0, 25.0, 1.0]), _margin([1.0, 2.0, 3.0], 0.0)) == (10.0, 10.0)
    assert evidence(_trigger([0.0, 1.5, 1.0]), _margin([1.0, 2.0, 3.0], 0.01)) == (
        1.5, pytest.approx(2.0))


def test_a_fitted_logistic_separates_its_population_and_needs_both_kinds():
    gen = torch.Generator().manual_seed(0)
    clean = (torch.rand(20, 2, generator=gen) * 2).tolist()
    trojaned = (torch.rand(20, 2, generator=gen) * 2 + 3).tolist()
    fitted = TrojanLogistic.fit(clean + trojaned, [False] * 20 + [True] * 20)
    assert all(w > 0 for w in fitted.weights)
    assert max(fitted.probability(f) for f in clean) < 0.5 < min(
        fitted.probability(f) for f in trojaned)
    with pytest.raises(AssayValueError, match="both clean and trojaned"):
        TrojanLogistic.fit(clean, [False] * 20)


def test_the_verdict_names_the_class_of_the_stronger_evidence_or_none():
    logistic = TrojanLogistic(bias=-4.0, weights=(1.0, 1.0))
    patch = trojan_verdict(_trigger([0.0, 0.0, 8.0, 0.0]), _margin([1, 1, 1, 5], 0.1),
                           logistic)
    assert patch.suspected_target == 2 and patch.probability > 0.5
    blend = trojan_verdict(_trigger([0.0, 2.0, 0.0, 0.0]), _margin([1, 1, 1, 9], 1e-8),
                           logistic)
    assert blend.suspected_target == 3
    quiet = trojan_verdict(_trigger([0.0, 1.0, 0.0, 0.0]), _margin([1, 1, 1, 2], 0.3),
                           logistic)
    assert quiet.suspected_target == -1 and quiet.probability < 0.5


def test_the_shipped_logistic_rises_with_each_piece_of_evidence():
    assert all(w > 0 for w in POPULATION_LOGISTIC.weights)
    assert POPULATION_LOGISTIC.probability((0.0, 0.0)) < 0.5
