"""Auditing a DP claim in one training run (issue 14; Steinke, Nasr & Jagielski 2023): the
bound's closed forms and properties, the canary protocol, the ``dp_audit`` check's two
must-show cases on digits, its cached training run and its refusals."""

import math

import pytest
import torch
from scipy import optimize, special, stats
from torch import nn

from assay.attacks.privacy.one_run import (audit_p_value, epsilon_lower_bound, guess_grid,
                                           insert_canaries, one_run_audit)
from assay.audit.plan import plan_from_dict
from assay.audit.runner import run_audit
from assay.checks import dp_audit
from assay.core import zoo
from assay.core.data import Dataset
from assay.core.model import ModelWrapper
from assay.core.rng import seeded_generator
from assay.errors import AssayValueError

# a small MLP that memorises mislabelled digits in 15 epochs (about 3 s a run)
RECIPE = {"arch": "mlp", "epochs": 15, "lr": 3e-3, "batch_size": 32}
CANARIES = 200


def logit(q):
    return math.log(q / (1 - q))


# ----------------------------------------------------------------------------- the bound
def test_all_correct_guesses_give_the_closed_form_and_grow_with_their_count():
    # delta 0, v = r: P[Bin(r, q) >= r] = q^r = beta, so epsilon = logit(beta^(1/r))
    bounds = []
    for r in (10, 20, 50, 100, 200):
        bound = epsilon_lower_bound(1000, r, r, delta=0.0, confidence=0.95)
        assert bound == pytest.approx(logit(0.05 ** (1 / r)), abs=1e-9)
        bounds.append(bound)
    assert bounds == sorted(bounds) and bounds[0] < bounds[-1]
    # with delta the bound is lower, and still grows
    with_delta = [epsilon_lower_bound(1000, r, r, delta=1e-5, confidence=0.95)
                  for r in (10, 50, 200)]
    assert with_delta == sorted(with_delta)
    assert all(d <= b for d, b in zip(with_delta, bounds[0::2]))


@pytest.mark.parametrize("r, v", [(100, 80), (40, 30), (500, 300), (1000, 999)])
def test_the_bound_at_delta_0_is_where_the_binomial_tail_meets_beta(r, v):
    beta = 0.05

    def tail(eps):
        return stats.binom.sf(v - 1, r, special.expit(eps)) - beta

    direct = optimize.brentq(tail, 0.0, 30.0, xtol=1e-12)
    assert epsilon_lower_bound(10_000, r, v, delta=0.0, confidence=1 - beta) == pytest.approx(
        direct, abs=1e-8)


def test_the_p_value_with_delta_is_the_theorems_expression_term_by_term():
    m, r, v, eps, delta = 500, 60, 45, 1.2, 1e-4
    q = math.exp(eps) / (1 + math.exp(eps))
    pmf = [math.comb(r, j) * q ** j * (1 - q) ** (r - j) for j in range(r + 1)]
    tail = sum(pmf[v:])
    alpha = max(sum(pmf[v - i:v]) / i for i in range(1, v + 1))
    assert audit_p_value(m, r, v, eps, delta) == pytest.approx(tail + 2 * m * delta * alpha,
                                                               rel=1e-9)
    assert audit_p_value(m, r, v, eps, 0.0) == pytest.approx(tail, rel=1e-9)
    assert audit_p_value(m, r, 0, eps, delta) == 1.0  # no right guess rejects nothing


def test_random_guesses_bound_epsilon_near_zero():
    for seed in range(5):
        gen = seeded_generator(seed)
        coins = torch.rand(1000, generator=gen) < 0.5
        scores = torch.randn(1000, generator=gen)  # independent of the coins
        assert one_run_audit(scores, coins, delta=1e-5).epsilon < 0.3
    # a model that says nothing: every score tied, guesses in index order
    assert one_run_audit(torch.zeros(1000), coins, delta=1e-5).epsilon < 0.3


def test_perfect_scores_reach_the_ceiling_and_the_search_is_bonferroni_corrected():
    coins = torch.rand(400, generator=seeded_generator(1)) < 0.5
    result = one_run_audit(coins.float(), coins, delta=0.0, confidence=0.95)
    assert guess_grid(400) == (200, 100, 50, 25, 12, 6)
    assert result.per_test_confidence == pytest.approx(1 - 0.05 / 6)
    # every guess right at the largest count that the coins allow on both sides
    assert result.correct == result.guesses
    assert result.epsilon == pytest.approx(logit((0.05 / 6) ** (1 / result.guesses)), abs=1e-9)
    assert result.epsilon <= result.ceiling
    fixed = one_run_audit(coins.float(), coins, delta=0.0, confidence=0.95, k=50)
    assert (fixed.guesses, fixed.per_test_confidence) == (100, 0.95)
    assert fixed.epsilon == pytest.approx(logit(0.05 ** (1 / 100)), abs=1e-9)


def test_the_bound_refuses_bad_input():
    with pytest.raises(AssayValueError, match="'confidence' parameter"):
        epsilon_lower_bound(100, 10, 10, delta=0.0, confidence=1.0)
    with pytest.raises(AssayValueError, match="'correct' parameter"):
        audit_p_value(100, 10, 11, 1.0, 0.0)
    with pytest.raises(AssayValueError, match="NaN"):
        one_run_audit(torch.tensor([0.0, math.nan]), torch.tensor([True, False]), delta=0.0)
    with pytest.raises(AssayValueError, match="'k' parameter"):
        one_run_audit(torch.zeros(10), torch.zeros(10, dtype=torch.bool), delta=0.0, k=6)


# ----------------------------------------------------------------------------- canaries
def test_canaries_are_mislabelled_included_by_coin_and_seeded(digits):
    train, _ = digits
    run = insert_canaries(train, CANARIES, 10, seed=3)
    assert bool((run.y != train.y[run.positions]).all())  # every canary label is wrong
    assert torch.equal(run.x, train.x[run.positions])
    assert len(run.train) == len(train) - CANARIES + int(run.included.sum())
    assert 0.35 < run.included.float().mean() < 0.65
    # the included canaries are in the training set with their canary labels
    tail = slice(len(run.train) - int(run.included.sum()), None)
    assert torch.equal(run.train.y[tail], run.y[run.included])
    again = insert_canaries(train, CANARIES, 10, seed=3)
    assert torch.equal(again.included, run.included) and torch.equal(again.y, run.y)


# ----------------------------------------------------------------------------- the check
def audit_plan(recipe=RECIPE, **params):
    raw = {"checks": [{"name": "dp_audit", "params": {"canaries": CANARIES, **params},
                       "gates": ["passes_claim >= 1"]}]}
    if recipe is not None:
        raw["training"] = recipe
    return plan_from_dict(raw)


@pytest.fixture(scope="module")
def untrained():
    """The model only lends its classes and input shape: the audit retrains."""
    net = zoo.build("mlp", input_shape=(1, 8, 8), num_classes=10, seed=0)
    return ModelWrapper(net, num_classes=10, input_shape=(1, 8, 8), name="audited mlp")


def audit(model, digits, plan, **kwargs):
    train, test = digits
    (check,) = run_audit(model, test, plan, train_data=train, progress=False, threads=1,
                         **kwargs).checks
    assert check.status != "error", check
    return check


def test_training_without_noise_fails_a_claim_of_epsilon_1_and_resumes_from_its_piece(
        untrained, digits, tmp_path, monkeypatch):
    plan = audit_plan(epsilon=1.0, training="recipe")
    cache = tmp_path / "cache"
    original = dp_audit.one_run_audit

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # killed after the training run, before the bound

    monkeypatch.setattr(dp_audit, "one_run_audit", killed)
    with pytest.raises(KeyboardInterrupt):
        audit(untrained, digits, plan, cache_dir=cache)
    monkeypatch.setattr(dp_audit, "one_run_audit", original)
    calls = []
    real_fit = dp_audit.fit
    monkeypatch.setattr(dp_audit, "fit", lambda *a, **k: (calls.append(1), real_fit(*a, **k)))
    check = audit(untrained, digits, plan, cache_dir=cache)
    assert calls == []  # the trained run's scores were read back
    m = check.metrics
    assert m["epsilon_lower_bound"] > 1.0 and m["passes_claim"] == 0.0
    assert check.status == "fail" and [g.passed for g in check.gates] == [False]
    assert "dp_claim_violated" in {f.code for f in check.findings if f.level == "warn"}
    assert m["canaries"] == CANARIES and m["correct_guesses"] <= m["guesses"]
    assert m["epsilon_lower_bound"] <= m["epsilon_ceiling"]


def test_dp_sgd_at_epsilon_8_stays_below_8(untrained, digits):
    # DP-SGD needs no memorising recipe: 5 epochs keep the test short
    check = audit(untrained, digits, audit_plan({**RECIPE, "epochs": 5}, epsilon=8.0))
    m = check.metrics
    assert m["epsilon_lower_bound"] < 8.0 and m["passes_claim"] == 1.0
    assert [g.passed for g in check.gates] == [True]
    assert m["accounted_epsilon"] <= 8.0 and m["noise_multiplier"] > 0
    codes = {f.code: f.level for f in check.findings}
    assert codes["dp_claim_not_refuted"] == "info" and codes["audited_run"] == "info"
    # 200 canaries can show epsilon 3.7 at most: the pass is flagged as saying little
    assert m["epsilon_ceiling"] < 8.0 and codes["dp_audit_cannot_refute"] == "warn"
    assert check.status == "warn"


def test_a_noiseless_run_that_stays_within_its_claim_still_warns(untrained, digits):
    # one epoch fits no canary: the bound stays low, yet plain training is no DP mechanism
    check = audit(untrained, digits, audit_plan({**RECIPE, "epochs": 1}, epsilon=100.0,
                                                training="recipe", canaries=20))
    assert check.metrics["passes_claim"] == 1.0 and [g.passed for g in check.gates] == [True]
    warned = {f.code for f in check.findings if f.level == "warn"}
    assert {"dp_no_noise", "dp_audit_cannot_refute"} <= warned and check.status == "warn"


def test_the_check_refuses_what_it_cannot_audit(untrained, digits):
    train, test = digits
    with pytest.raises(AssayValueError, match=r"add a \[training\] table"):
        run_audit(untrained, test, audit_plan(None, epsilon=1.0), train_data=train,
                  progress=False)
    with pytest.raises(AssayValueError, match="--train-data"):
        run_audit(untrained, test, audit_plan(epsilon=1.0), progress=False)
    with pytest.raises(AssayValueError, match=r"'canaries' parameter \(2000\) exceeds the "
                                              f"{len(train)} training samples"):
        run_audit(untrained, test, audit_plan(epsilon=1.0, canaries=2000), train_data=train,
                  progress=False)
    for bad in (0.0, 1.0):
        with pytest.raises(AssayValueError, match="'confidence' parameter must lie strictly"):
            audit_plan(epsilon=1.0, confidence=bad)
    with pytest.raises(AssayValueError, match="'confidence' parameter must be"):
        audit_plan(epsilon=1.0, confidence=1.5)
    with pytest.raises(AssayValueError, match="'epsilon' parameter must be the claimed"):
        run_audit(untrained, test, audit_plan(), train_data=train, progress=False)
    with pytest.raises(AssayValueError, match="'guesses_per_side' parameter"):
        audit_plan(epsilon=1.0, guesses_per_side=101)
    with pytest.raises(AssayValueError, match="'delta' parameter must be > 0 for DP-SGD"):
        audit_plan(epsilon=1.0, delta=0.0)
    # DP-SGD cannot train a network with batch norm (the fix is named)
    with pytest.raises(AssayValueError, match="DP-SGD cannot train the .* GroupNorm"):
        run_audit(untrained, test, audit_plan({"arch": "resnet"}, epsilon=1.0),
                  train_data=train, progress=False)
    # a recipe whose network does not fit the data: an image CNN on 64 flat features
    flat = [Dataset(d.x.flatten(1), d.y, d.name, d.split, d.classes) for d in (train, test)]
    rows = ModelWrapper(nn.Sequential(nn.Linear(64, 10)), num_classes=10, input_shape=(64,))
    with pytest.raises(AssayValueError, match="cannot train on inputs of shape"):
        run_audit(rows, flat[1], audit_plan({"arch": "small_cnn"}, epsilon=1.0),
                  train_data=flat[0], progress=False)
