"""Split conformal prediction: the quantile, the coverage guarantee, the scores, the metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.datasets import load_digits
from torch import nn

from assay.defenses.calibration import (SplitConformal, average_set_size, class_coverage,
                                        class_coverage_gap, conformal_quantile,
                                        marginal_coverage, size_stratified_coverage)
from assay.errors import AssayValueError

# --------------------------------------------------------------------------- quantile


@pytest.mark.parametrize(("n", "alpha", "rank"), [
    (9, 0.1, 9),     # ceil(10 * 0.9) = 9 (exactly an integer: no bump to 10)
    (10, 0.1, 10),   # ceil(11 * 0.9) = ceil(9.9) = 10
    (99, 0.1, 90),   # ceil(100 * 0.9) = 90
    (100, 0.2, 81),  # ceil(101 * 0.8) = ceil(80.8) = 81
    (5, 0.1, None),  # ceil(6 * 0.9) = 6 > 5: the full label set
])
def test_conformal_quantile_is_the_finite_sample_rank(n, alpha, rank):
    scores = torch.randperm(n, generator=torch.Generator().manual_seed(n)).float() + 1.0
    expected = math.inf if rank is None else float(rank)  # the rank-th smallest of 1..n
    assert conformal_quantile(scores, alpha) == expected


# --------------------------------------------------------------------------- coverage


N_CAL, N_TEST, K, ALPHA, SEEDS = 50, 1000, 10, 0.1, 200
_W = torch.randn(5, K, generator=torch.Generator().manual_seed(12345))


def exchangeable_split(seed: int) -> tuple[torch.Tensor, ...]:
    """i.i.d. (x, y): y drawn from softmax(x W); the "model" is 1.5x overconfident."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N_CAL + N_TEST, 5, generator=g)
    true_logits = x @ _W
    y = torch.multinomial(true_logits.softmax(1), 1, generator=g).squeeze(1)
    probs = (1.5 * true_logits).softmax(1)
    return probs[:N_CAL], y[:N_CAL], probs[N_CAL:], y[N_CAL:]


@pytest.mark.parametrize(("score", "randomized"), [
    ("lac", True), ("aps", True), ("raps", True), ("aps", False), ("raps", False)])
def test_coverage_over_many_seeds_is_within_the_finite_sample_bounds(score, randomized):
    coverages = []
    for seed in range(SEEDS):
        p_cal, y_cal, p_test, y_test = exchangeable_split(seed)
        cp = SplitConformal(score=score, alpha=ALPHA, randomized=randomized, seed=seed)
        sets = cp.calibrate(p_cal, y_cal).predict_sets(p_test)
        coverages.append(marginal_coverage(sets, y_test))
    coverages = np.array(coverages)
    # Given the calibration set, the coverage is Beta(n + 1 - l, l) with l = floor((n+1) alpha)
    # (continuous scores; Vovk 2012, Angelopoulos & Bates 2021 Sec. 3.2); the test set adds
    # binomial noise of variance E[c (1 - c)] / n_test.
    n = N_CAL
    l = math.floor((n + 1) * ALPHA)  # noqa: E741
    a, b = n + 1 - l, l
    beta = stats.beta(a, b)
    mean_c, var_c = beta.mean(), beta.var()
    var_single = var_c + (mean_c - (var_c + mean_c**2)) / N_TEST
    sd_mean = math.sqrt(var_single / SEEDS)
    mean = coverages.mean()
    binomial_sd = math.sqrt(ALPHA * (1 - ALPHA) / N_TEST)
    low, high = beta.ppf(1e-6) - 5 * binomial_sd, beta.ppf(1 - 1e-6) + 5 * binomial_sd
    # 1 - alpha <= E[coverage], up to the Monte-Carlo error of the mean over seeds
    assert mean >= 1 - ALPHA - 4 * sd_mean
    assert (coverages >= low).all()  # no seed below the Beta distribution's plausible range
    if not randomized and score != "lac":
        # non-randomised APS/RAPS keep the label crossing q: valid but conservative
        assert mean > mean_c + 4 * sd_mean
        return
    # E[coverage] <= 1 - alpha + 1/(n+1) for scores without ties
    assert mean <= 1 - ALPHA + 1 / (n + 1) + 4 * sd_mean
    # and it is the exact expected value (n + 1 - l) / (n + 1) = 46/51 here; a quantile
    # without the finite-sample correction would give 45/51, 5 sd_mean lower
    assert abs(mean - mean_c) <= 4 * sd_mean
    # every seed within the Beta distribution's plausible range, widened by the test noise
    assert (coverages <= high).all()


# --------------------------------------------------------------------------- scores


def _probs(seed: int = 0, n: int = 400, k: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(n, k, generator=g)
    y = torch.multinomial(logits.softmax(1), 1, generator=g).squeeze(1)
    return logits.softmax(1), y


def test_lac_sets_are_labels_above_one_minus_q():
    probs, y = _probs()
    cp = SplitConformal(score="lac", alpha=0.2).calibrate(probs[:200], y[:200])
    sets = cp.predict_sets(probs[200:])
    assert torch.equal(sets, probs[200:] >= 1 - cp.quantile_)
    # the quantile is the ceil(201 * 0.8) = 161st smallest of the calibration scores
    cal_scores = 1 - probs[:200].gather(1, y[:200, None]).squeeze(1)
    assert cp.quantile_ == float(cal_scores.sort().values[160])


def test_aps_sets_are_top_ranked_prefixes_and_nonrandom_never_empty():
    probs, y = _probs()
    for randomized in (True, False):
        cp = SplitConformal(score="aps", alpha=0.1, randomized=randomized, seed=0)
        sets = cp.calibrate(probs[:200], y[:200]).predict_sets(probs[200:])
        order = probs[200:].argsort(1, descending=True)
        in_rank_order = sets.gather(1, order).int()
        # a prefix of the ranking: never a label in the set below one that is out
        assert (in_rank_order[:, 1:] <= in_rank_order[:, :-1]).all()
        if not randomized:
            assert sets.any(1).all()
            # non-randomised APS: a label is in when the cumulative mass down to the label
            # ranked just above it is <= q (so the label crossing q is kept)
            cum = probs[200:].gather(1, order).cumsum(1)
            expected = torch.cat([torch.ones(len(cum), 1, dtype=torch.bool),
                                  cum[:, :-1] <= cp.quantile_], dim=1)
            assert torch.equal(in_rank_order.bool(), expected)


def test_raps_with_no_penalty_is_aps_and_penalty_shrinks_tails():
    probs, y = _probs(k=12)
    aps = SplitConformal(score="aps", seed=3).calibrate(probs[:200], y[:200])
    raps0 = SplitConformal(score="raps", lam=0.0, seed=3).calibrate(probs[:200], y[:200])
    assert aps.quantile_ == raps0.quantile_
    assert torch.equal(aps.predict_sets(probs[200:]), raps0.predict_sets(probs[200:]))
    big = SplitConformal(score="raps", lam=1.0, k_reg=2, randomized=False)
    sets = big.calibrate(probs[:200], y[:200]).predict_sets(probs[200:])
    sizes = sets.sum(1)
    # a penalty of 1 per rank dominates the probability mass: every set is the top-m
    # labels for (almost) the same m, as the RAPS paper notes for large lambda
    assert int(sizes.max() - sizes.min()) <= 1


def test_same_seed_same_sets_and_logits_equal_probs():
    probs, y = _probs()
    logits = probs.log()

    def run(seed, inputs, values):
        cp = SplitConformal(score="raps", seed=seed, inputs=inputs)
        return cp.calibrate(values[:200], y[:200]).predict_sets(values[200:])

    assert torch.equal(run(7, "probs", probs), run(7, "probs", probs))
    assert torch.equal(run(7, "probs", probs), run(7, "logits", logits))
    assert not torch.equal(run(7, "probs", probs), run(8, "probs", probs))
    global_state = torch.random.get_rng_state()
    run(None, "probs", probs)
    assert torch.equal(global_state, torch.random.get_rng_state())  # global RNG untouched


@pytest.fixture(scope="module")
def digits_mlp_outputs():
    """A small MLP on sklearn digits: softmax outputs of 1000 held-out images, and labels."""
    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):  # briefly trained: about 90% accurate, long-tailed softmax outputs
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[:700]), y[:700]).backward()
        opt.step()
    with torch.no_grad():
        return model(x[797:]).softmax(1), y[797:]


def _mean_size_and_coverage(probs, y, score, alpha, n_cal, splits):
    sizes, covers = [], []
    for split in range(splits):
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(split))
        cal, test = perm[:n_cal], perm[n_cal:]
        cp = SplitConformal(score=score, alpha=alpha, seed=split)
        sets = cp.calibrate(probs[cal], y[cal]).predict_sets(probs[test])
        sizes.append(average_set_size(sets))
        covers.append(marginal_coverage(sets, y[test]))
    return float(np.mean(sizes)), float(np.mean(covers))


def test_raps_sets_no_larger_than_aps_on_digits(digits_mlp_outputs):
    probs, y = digits_mlp_outputs
    aps_size, aps_cover = _mean_size_and_coverage(probs, y, "aps", 0.05, 500, 20)
    raps_size, raps_cover = _mean_size_and_coverage(probs, y, "raps", 0.05, 500, 20)
    # with 10 classes the true label is rarely ranked beyond k_reg = 5, so the penalty
    # seldom binds and RAPS sets are at most the APS sets in size
    assert raps_size <= aps_size
    assert raps_cover >= 0.95 - 0.01 and aps_cover >= 0.95 - 0.01  # the sets still cover


def noisy_tail(seed: int, n: int = 3000, k: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """The regime RAPS was made for: the label is near the top of the ranking, but a long
    tail of small, noisy probabilities holds a sizeable share of the mass (about 80% top-1
    accuracy, mean confidence about 0.44 over 100 classes)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, k, (n,), generator=g)
    logits = 0.5 * torch.randn(n, k, generator=g)
    hard = torch.rand(n, generator=g) < 0.2
    decoy = torch.randint(0, k, (n,), generator=g)
    rows = torch.arange(n)
    logits[rows, y] += torch.where(hard, 3.5, 4.5)
    logits[rows[hard], decoy[hard]] += 4.5
    return logits.softmax(1), y


def test_raps_shortens_the_long_tail_of_aps_sets():
    aps, raps = [], []
    for seed in range(5):
        probs, y = noisy_tail(seed)
        aps.append(_mean_size_and_coverage(probs, y, "aps", 0.1, 1000, 1))
        raps.append(_mean_size_and_coverage(probs, y, "raps", 0.1, 1000, 1))
    (aps_size, aps_cover), (raps_size, raps_cover) = np.mean(aps, 0), np.mean(raps, 0)
    assert raps_size < 0.85 * aps_size  # about 4.4 against 5.8 labels
    # both keep 90% coverage (sd of the mean of 5 x 2000 test points: about 0.003)
    assert raps_cover >= 0.9 - 0.015 and aps_cover >= 0.9 - 0.015


# --------------------------------------------------------------------------- metrics


SETS = torch.tensor([
    [True, False, False],   # y=0 covered, size 1
    [True, True, False],    # y=1 covered, size 2
    [False, False, True],   # y=0 missed,  size 1
    [True, True, True],     # y=2 covered, size 3
    [False, True, False],   # y=1 covered, size 1
])
SET_LABELS = torch.tensor([0, 1, 0, 2, 1])


def test_set_metrics_by_hand():
    assert marginal_coverage(SETS, SET_LABELS) == pytest.approx(4 / 5)
    assert average_set_size(SETS) == pytest.approx((1 + 2 + 1 + 3 + 1) / 5)
    torch.testing.assert_close(class_coverage(SETS, SET_LABELS),
                               torch.tensor([0.5, 1.0, 1.0], dtype=torch.float64))
    # per class: |0.5 - 0.9| = 0.4, |1 - 0.9| = 0.1, 0.1 -> max 0.4
    assert class_coverage_gap(SETS, SET_LABELS, alpha=0.1) == pytest.approx(0.4)
    assert size_stratified_coverage(SETS, SET_LABELS) == {
        1: {"count": 3, "coverage": pytest.approx(2 / 3)},
        2: {"count": 1, "coverage": 1.0},
        3: {"count": 1, "coverage": 1.0},
    }
    # a class absent from the labels does not count in the gap
    labels = torch.tensor([0, 0, 0, 0, 0])
    assert torch.isnan(class_coverage(SETS, labels)[1:]).all()
    assert class_coverage_gap(SETS, labels, alpha=0.1) == pytest.approx(abs(3 / 5 - 0.9))


@pytest.mark.parametrize("make", [
    lambda: SplitConformal(score="thr"),
    lambda: SplitConformal(alpha=0.0),
    lambda: SplitConformal(alpha=1.0),
    lambda: SplitConformal(alpha=1.5),
    lambda: SplitConformal(randomized=1),
    lambda: SplitConformal(lam=-0.1),
    lambda: SplitConformal(k_reg=-1),
    lambda: SplitConformal(k_reg=2.5),
    lambda: SplitConformal(inputs="softmax"),
    lambda: SplitConformal(seed=-3),
    lambda: SplitConformal(seed=1.0),
])
def test_split_conformal_rejects_bad_parameters(make):
    with pytest.raises(AssayValueError):
        make()


def test_split_conformal_settings_are_keyword_only():
    with pytest.raises(TypeError):
        SplitConformal("aps")  # type: ignore[misc]


@pytest.mark.parametrize("call", [
    lambda: SplitConformal().predict_sets(_probs()[0]),  # not calibrated
    lambda: SplitConformal().calibrate(_probs()[0].log(), _probs()[1]),  # logits as probs
    lambda: SplitConformal().calibrate(_probs()[0], _probs()[1][:10]),
    lambda: SplitConformal().calibrate(*_probs()).predict_sets(_probs(k=4)[0]),
    lambda: marginal_coverage(SETS.int(), SET_LABELS),
    lambda: average_set_size(SETS[0]),
    lambda: class_coverage_gap(SETS, SET_LABELS, alpha=0.0),
    lambda: size_stratified_coverage(SETS, SET_LABELS[:2]),
    lambda: conformal_quantile(torch.ones(3), 1.0),
])
def test_conformal_rejects_bad_input(call):
    with pytest.raises(AssayValueError):
        call()
