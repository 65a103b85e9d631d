"""The ``poisoning_resilience`` check on the embedded digits: the recipe learns BadNets
from more poison, the metrics and the curve are all there, a gate on ``max_asr`` fails a
pipeline that learnt the backdoor, and a plan that cannot run is refused before any work."""

import math

import pytest

from assay.attacks.poisoning import BadNets
from assay.audit.plan import plan_from_dict
from assay.audit.runner import preflight, run_audit
from assay.checks import get_check
from assay.errors import AssayValueError

RECIPE = {"arch": "small_cnn", "epochs": 6, "batch_size": 64, "lr": 3e-3, "seed": 0}


def plan(params=None, gates=(), training=RECIPE):
    table = {"checks": [{"name": "poisoning_resilience", "params": params or {},
                         "gates": list(gates)}]}
    if training is not None:
        table["training"] = training
    return plan_from_dict(table)


@pytest.fixture(scope="module")
def resilience(digits, digits_net):
    from assay.core.model import ModelWrapper

    train, test = digits
    model = ModelWrapper(digits_net, num_classes=10, input_shape=(1, 8, 8))
    params = {"attacks": ["badnets"], "rates": [0.005, 0.2], "target": 3, "n": 300,
              "defenses": ["spectral_signatures"], "retrain": True}
    result = run_audit(model, test, plan(params, ["max_asr <= 0.2"]), train_data=train,
                       progress=False)
    return result.checks[0], params


def test_asr_rises_with_the_poisoning_rate_and_the_gate_fails(resilience):
    check, params = resilience
    assert check.error is None, check.error
    low, high = (check.metrics[f"asr@badnets:rate={r:g}"] for r in params["rates"])
    assert high >= 0.8 and high > low + 0.3  # 8 poisoned digits teach less than 260
    assert check.metrics["max_asr"] == max(low, high)
    assert check.status == "fail"  # a pipeline that learnt the backdoor does not pass
    assert check.metrics["clean_accuracy@badnets:rate=0.2"] >= check.metrics[
        "clean_accuracy"] - 0.1


def test_every_declared_metric_is_reported_with_the_curve_and_the_triggers(resilience):
    check, params = resilience
    assert set(check.metrics) == set(get_check("poisoning_resilience").metric_names(params))
    assert all(0 <= v <= 1 and not math.isnan(v) for v in check.metrics.values())
    (plot,) = check.plots
    assert plot.x == params["rates"]
    assert set(plot.series) == {"badnets", "badnets after spectral_signatures"}
    (shown,) = check.galleries
    assert len(shown.images) == 8 and shown.captions[-1] == "badnets -> 3"


def test_success_rate_counts_only_the_inputs_the_trigger_relabels(digits, digits_model):
    _, test = digits
    attack = BadNets(target=3, rate=0.1)
    rate = attack.success_rate(digits_model, test.x, test.y)
    # a clean model sends almost no triggered input to the target
    assert 0 <= rate < 0.3
    only_target = test.y == 3
    assert math.isnan(attack.success_rate(digits_model, test.x[only_target],
                                          test.y[only_target]))


@pytest.mark.parametrize("params, training, train, expected", [
    ({}, None, True, "[training] table"),
    ({}, RECIPE, False, "--train-data"),
    ({"rates": [0.0001]}, RECIPE, True, "rate 0.0001"),
    ({"target": 12}, RECIPE, True, "target 12"),
])
def test_a_plan_that_cannot_run_is_refused_before_any_work(digits, digits_model, params,
                                                           training, train, expected):
    train_split, test = digits
    with pytest.raises(AssayValueError, match="poisoning_resilience") as err:
        preflight(digits_model, test, plan(params, training=training),
                  train_data=train_split if train else None)
    assert expected in str(err.value)
