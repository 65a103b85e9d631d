"""Model extraction (issue 14): fidelity is exact for a perfect copy, rises with the query
budget on digits, the curve is in the report, copies are cached pieces, and the check
refuses budgets and architectures it cannot honour."""

import math

import pytest
import torch

from assay.attacks.privacy import AdaptiveSampling, KnockoffNets, agreement, noise_queries
from assay.attacks.privacy import extraction
from assay.audit.plan import plan_from_dict
from assay.audit.runner import run_audit
from assay.core import zoo
from assay.core.data import Dataset
from assay.core.model import ModelWrapper
from assay.core.rng import seeded_generator
from assay.core.threads import using_threads
from assay.core.training import TrainConfig, TrainingRecipe, fit
from assay.errors import AssayValueError

RECIPE = {"arch": "small_cnn", "epochs": 15, "batch_size": 32, "lr": 3e-3}


def _plan(params=None, gates=(), training=RECIPE):
    raw = {"checks": [{"name": "model_extraction", "params": params or {},
                       "gates": list(gates)}]}
    if training is not None:
        raw["training"] = training
    return plan_from_dict(raw, source="test")


def _run(model, data, params=None, gates=(), training=RECIPE, **kwargs):
    (check,) = run_audit(model, data, _plan(params, gates, training), progress=False,
                         threads=1, **kwargs).checks
    assert check.status != "error", check
    return check


@pytest.fixture(scope="module")
def victim(digits):
    """The victim: a small CNN trained on the first 1,000 training digits."""
    net = zoo.build("small_cnn", input_shape=(1, 8, 8), num_classes=10, seed=0)
    with using_threads(1):  # small operators: more threads only spin on a shared CPU
        fit(net, digits[0].subset(1000), TrainConfig(epochs=15, lr=3e-3, seed=0),
            show_progress=False)
    return ModelWrapper(net, num_classes=10, input_shape=(1, 8, 8), name="digits victim")


@pytest.fixture(scope="module")
def attacker_data(digits):
    """Digits the model did not train on, for queries and the held-out evaluation."""
    train, test = digits
    return Dataset(torch.cat([train.x[1000:], test.x]), torch.cat([train.y[1000:], test.y]),
                   "digits", "attacker", train.classes)


def test_agreement_is_one_for_the_same_labels_and_counts_matches():
    labels = torch.tensor([0, 1, 2, 2])
    assert agreement(labels, labels) == 1.0
    assert agreement(labels, torch.tensor([0, 1, 1, 0])) == 0.5
    with pytest.raises(AssayValueError, match="one length"):
        agreement(labels, labels[:2])


def test_a_copy_that_is_the_victim_has_fidelity_one(victim, attacker_data,
                                                     monkeypatch):
    monkeypatch.setattr(KnockoffNets, "copy", lambda self, victim, *a, **k: victim)
    m = _run(victim, attacker_data, {"budgets": [10, 20]}).metrics
    assert m["fidelity@queries=10"] == m["fidelity@queries=20"] == 1.0
    assert m["copy_accuracy@queries=10"] == m["model_accuracy"] > 0.9


def test_the_victim_answers_probabilities_or_labels(victim, attacker_data):
    x = attacker_data.x
    answers = KnockoffNets().answers(victim, x)
    assert torch.allclose(answers.sum(1), torch.ones(len(x)))
    labels = KnockoffNets(output="labels").answers(victim, x)
    assert torch.equal(labels.argmax(1), victim.predict(x)) and labels.sum() == len(x)


def test_fidelity_rises_with_the_budget_and_the_curve_is_in_the_report(victim,
                                                                       attacker_data):
    check = _run(victim, attacker_data, {"budgets": [20, 100, 400], "holdout": 0.4})
    m = check.metrics
    fidelity = [m[f"fidelity@queries={b}"] for b in (20, 100, 400)]
    assert fidelity[0] < fidelity[1] < fidelity[2]
    assert fidelity[2] > 0.85 and fidelity[0] < 0.8
    assert m["copy_accuracy@queries=400"] <= m["model_accuracy"] + 0.05
    (plot,) = check.plots
    assert plot.x == pytest.approx([math.log10(b) for b in (20, 100, 400)])
    assert plot.series["fidelity"] == fidelity
    assert check.metric_info["fidelity@queries=20"].direction == "lower"
    assert "copy_not_learning" not in {f.code for f in check.findings}


def test_label_only_and_noise_queries_run_and_a_copy_that_learned_nothing_warns(
        victim, attacker_data):
    labels = _run(victim, attacker_data, {"budgets": [200], "output": "labels"})
    assert labels.metrics["fidelity@queries=200"] > 0.6
    assert labels.details["output"] == "labels"
    noise = _run(victim, attacker_data, {"budgets": [50], "query_data": "uniform"},
                 training={**RECIPE, "epochs": 1})
    assert noise.metrics["evaluated"] == len(attacker_data)  # all held out: no data queried
    assert 0.0 <= noise.metrics["fidelity@queries=50"] <= 1.0

    class Constant(torch.nn.Module):
        def forward(self, x):
            return torch.zeros(len(x), 10) + torch.arange(10.0)  # always class 9

    constant = ModelWrapper(Constant(), num_classes=10, input_shape=(1, 8, 8))
    check = _run(constant, attacker_data, {"budgets": [30], "output": "labels"})
    assert check.metrics["fidelity@queries=30"] > 0.9  # copying a constant is easy ...
    assert "copy_not_learning" in {f.code for f in check.findings}  # ... and says nothing


def test_noise_queries_lie_in_the_bounds_and_repeat_from_a_seed():
    for kind in ("uniform", "gaussian"):
        a = noise_queries(kind, 100, (1, 8, 8), (-1.0, 2.0), seeded_generator(3))
        b = noise_queries(kind, 100, (1, 8, 8), (-1.0, 2.0), seeded_generator(3))
        assert torch.equal(a, b) and a.min() >= -1.0 and a.max() <= 2.0
    with pytest.raises(AssayValueError, match="'kind' parameter"):
        noise_queries("pink", 1, (2,), (0.0, 1.0), seeded_generator(0))


def test_each_budget_is_a_cached_piece_through_the_executor(victim, attacker_data,
                                                            tmp_path, monkeypatch):
    params = {"budgets": [30, 60]}
    training = {**RECIPE, "epochs": 3}
    calls, original = [], extraction.train_reference

    def counted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed while training the second copy
        return original(*args, **kwargs)

    monkeypatch.setattr(extraction, "train_reference", counted)
    with pytest.raises(KeyboardInterrupt):
        run_audit(victim, attacker_data, _plan(params, training=training),
                  progress=False, threads=1, cache_dir=tmp_path)
    calls.clear()
    monkeypatch.setattr(extraction, "train_reference",
                        lambda *a, **k: (calls.append(1), original(*a, **k))[1])
    resumed = _run(victim, attacker_data, params, training=training, cache_dir=tmp_path)
    assert len(calls) == 1  # the first copy was read back
    fresh = _run(victim, attacker_data, params, training=training)
    assert fresh.metrics == resumed.metrics  # seeded: the same numbers


def test_the_copy_defaults_to_the_zoo_without_a_recipe(victim, attacker_data):
    check = _run(victim, attacker_data, {"budgets": [40]}, training=None)
    assert check.details["recipe"]["arch"] == "small_cnn"
    assert check.details["recipe"]["epochs"] == 30


def test_what_the_check_cannot_honour_is_refused(victim, attacker_data, digits):
    with pytest.raises(AssayValueError, match=r"query data has \d+ samples"):
        _run(victim, attacker_data, {"budgets": [10000]})
    with pytest.raises(AssayValueError, match="'arch' parameter must be one of"):
        _plan({"arch": "vgg"})
    with pytest.raises(AssayValueError, match="'output' parameter"):
        _plan({"output": "logits"})
    with pytest.raises(AssayValueError, match="'budgets' parameter"):
        _plan({"budgets": [0]})
    with pytest.raises(AssayValueError, match="'query_data' parameter"):
        _plan({"query_data": "nosuchset:train"})
    with pytest.raises(AssayValueError, match="'strategy' parameter 'adaptive'.*has none"):
        _plan({"query_data": "uniform", "strategy": "adaptive"})
    flat = Dataset(attacker_data.x.flatten(1), attacker_data.y, "flat", "test",
                   attacker_data.classes)
    rows = ModelWrapper(torch.nn.Linear(64, 10), num_classes=10, input_shape=(64,))
    with pytest.raises(AssayValueError, match="cannot take inputs of shape"):
        _run(rows, flat, {"budgets": [10]}, training={"arch": "small_cnn"})
    attack = KnockoffNets()
    x = attacker_data.x[:8]
    with pytest.raises(AssayValueError, match="'budget' parameter"):
        attack.copy(victim, x, attack.answers(victim, x),
                    TrainingRecipe("mlp", TrainConfig(epochs=1)), budget=9, seed=0)


def test_the_adaptive_bandit_queries_each_sample_once_and_learns_to_skip_junk(
        victim, attacker_data):
    """A pool of digits (10 labels) and as many blank images under an 11th label: the
    bandit starts uniform over the 11 labels (9% each) and learns that blanks teach
    nothing (constant answers: low diversity, a loss the copy soon drives down)."""
    blank = torch.zeros_like(attacker_data.x)
    pool = Dataset(torch.cat([attacker_data.x, blank]),
                   torch.cat([attacker_data.y, torch.full((len(blank),), 10)]), "mixed",
                   "pool", (*attacker_data.classes, "blank"))
    attack, recipe = KnockoffNets(), TrainingRecipe("small_cnn", TrainConfig(lr=3e-3))
    chosen = AdaptiveSampling().select(attack, victim, pool, 400, recipe, seed=0)
    assert len(chosen.order) == 400 and len(set(chosen.order.tolist())) == 400
    assert torch.allclose(chosen.answers, attack.answers(victim, pool.x[chosen.order]))
    assert float(chosen.shares.sum()) == pytest.approx(1.0)
    blanks = float((pool.y[chosen.order] == 10).double().mean())
    assert blanks == pytest.approx(float(chosen.shares[10])) and blanks < 0.05
    again = AdaptiveSampling().select(attack, victim, pool, 400, recipe, seed=0)
    assert torch.equal(again.order, chosen.order)  # seeded
    with pytest.raises(AssayValueError, match="budget must be in"):
        AdaptiveSampling().select(attack, victim, pool, len(pool) + 1, recipe, seed=0)
    with pytest.raises(AssayValueError, match="'bandit_lr' parameter"):
        AdaptiveSampling(bandit_lr=0.0)


def test_the_check_draws_adaptive_queries_and_reports_each_labels_share(victim,
                                                                         attacker_data):
    check = _run(victim, attacker_data, {"budgets": [50, 200], "strategy": "adaptive"})
    shares = check.details["queries_per_label"]
    assert check.details["strategy"] == "adaptive" and len(shares) == 10
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-3)
    assert check.metrics["fidelity@queries=200"] > check.metrics["fidelity@queries=50"]
