"""Fairness mitigation: reweighing, the gap-regularised loss, group thresholds (against
fairlearn's ThresholdOptimizer). Synthetic tensors only, tiny models, fixed seeds."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from assay.core import zoo
from assay.core.dataset import Dataset
from assay.core.inference import batched_predict
from assay.core.training import TrainConfig, fit
from assay.defenses.fairness import (FairnessRegularisedLoss, GroupThresholds, fit_regularised,
                                     fit_reweighed, fit_thresholds, positive_class_scores,
                                     reweighed_loss, reweighing_weights)
from assay.errors import AssayValueError

CONFIG = TrainConfig(epochs=5, lr=3e-3, batch_size=64, seed=0)


# -- a local yardstick, independent of assay.metrics.fairness ---------------------------
def selection_rates(pred: torch.Tensor, groups: torch.Tensor) -> list[float]:
    return [float(pred[groups == g].double().mean()) for g in torch.unique(groups)]


def dp_difference(pred: torch.Tensor, groups: torch.Tensor) -> float:
    rates = selection_rates(pred, groups)
    return max(rates) - min(rates)


def dp_ratio(pred: torch.Tensor, groups: torch.Tensor) -> float:
    rates = selection_rates(pred, groups)
    return min(rates) / max(rates)


def eo_difference(pred: torch.Tensor, y: torch.Tensor, groups: torch.Tensor) -> float:
    return max(dp_difference(pred[y == label], groups[y == label]) for label in (0, 1))


def biased_data(n: int, seed: int) -> Dataset:
    """Labels favour group 1 (the positive rate is about 0.2 vs 0.6), and a feature is a
    noisy copy of the group, so a plain model selects group 1 far more often."""
    g = torch.Generator().manual_seed(seed)
    sex = (torch.rand(n, generator=g) < 0.5).long()
    z = torch.randn(n, 2, generator=g)
    proxy = sex + 0.3 * torch.randn(n, generator=g)
    y = (z[:, 0] + 1.2 * sex + 0.5 * torch.randn(n, generator=g) > 0.6).long()
    return Dataset(torch.cat([z, proxy[:, None]], 1), y, "biased", "train", ("no", "yes"),
                   attributes={"sex": sex})


def tiny_mlp() -> torch.nn.Module:
    return zoo.build("mlp", input_shape=(3,), num_classes=2, seed=0)


@pytest.fixture(scope="module")
def biased():
    return biased_data(1200, 0), biased_data(1000, 1)


@pytest.fixture(scope="module")
def plain_model(biased):
    train, _ = biased
    model = tiny_mlp()
    fit(model, train, CONFIG, show_progress=False)
    return model


# -- reweighing ---------------------------------------------------------------------------
def test_reweighing_weights_by_hand():
    # group 0: three positives, one negative; group 1: one positive, three negatives;
    # P(g) = P(y) = 1/2, so w = (1/4) / P(g, y): 2/3 for the common cells, 2 for the rare
    y = torch.tensor([1, 1, 1, 0, 1, 0, 0, 0])
    g = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    expected = torch.tensor([2 / 3, 2 / 3, 2 / 3, 2, 2, 2 / 3, 2 / 3, 2 / 3])
    torch.testing.assert_close(reweighing_weights(y, g), expected)


def test_reweighing_makes_label_and_group_independent():
    gen = torch.Generator().manual_seed(3)
    groups = torch.randint(0, 3, (900,), generator=gen) * 2 + 1  # codes 1, 3, 5
    label_given_group = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.2, 0.7]])
    y = torch.multinomial(label_given_group[groups // 2], 1, generator=gen).squeeze(1)
    weights = reweighing_weights(y, groups).double()
    assert float(weights.sum()) == pytest.approx(900, rel=1e-6)
    n = len(y)
    for code in (1, 3, 5):
        for label in torch.unique(y).tolist():
            cell = (groups == code) & (y == label)
            weighted = float(weights[cell].sum()) / n
            product = float((groups == code).double().mean() * (y == label).double().mean())
            assert weighted == pytest.approx(product, rel=1e-6)


@pytest.mark.parametrize("y, groups, words", [
    (torch.tensor([0, 1, 0, 1, 1, 1]), torch.tensor([0, 0, 0, 1, 1, 1]), "group 1 has no"),
    (torch.tensor([0, 1, 0, 1, 1]), torch.tensor([0, 0, 0, 0, 1]), "group 1 has 1"),
    (torch.tensor([0, 1, 0, 1]), torch.tensor([2, 2, 2, 2]), "at least 2 groups"),
    (torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0, 1]), "one code per sample"),
    (torch.tensor([1, 1, 1, 1]), torch.tensor([0, 0, 1, 1]), "at least 2 different labels"),
    (torch.tensor([0.0, 1.0]), torch.tensor([0, 1]), "'y' parameter"),
])
def test_reweighing_refuses_bad_input(y, groups, words):
    with pytest.raises(AssayValueError, match=words):
        reweighing_weights(y, groups)


def test_reweighed_loss_with_unit_weights_is_cross_entropy(biased):
    train, _ = biased
    model = tiny_mlp()
    index = torch.arange(10)
    x, y = train.x[index], train.y[index]
    loss = reweighed_loss(torch.ones(len(train))).bind(index)(model, x, y)
    torch.testing.assert_close(loss, F.cross_entropy(model(x), y))
    with pytest.raises(AssayValueError, match="'weights'"):
        reweighed_loss(torch.tensor([1.0, -1.0]))


def test_reweighing_reduces_demographic_parity_difference(biased, plain_model):
    train, test = biased
    model = tiny_mlp()
    fit_reweighed(model, train, "sex", CONFIG)
    sex = test.attributes["sex"]
    plain = dp_difference(batched_predict(plain_model, test.x), sex)
    reweighed = dp_difference(batched_predict(model, test.x), sex)
    assert plain > 0.3  # the data is biased enough to show a change
    assert reweighed < plain - 0.1
    accuracy = float((batched_predict(model, test.x) == test.y).double().mean())
    assert accuracy > 0.8


# -- in-processing ------------------------------------------------------------------------
def test_gap_by_hand():
    probs = torch.tensor([0.9, 0.7, 0.2, 0.4, 0.6, 0.1])
    y = torch.tensor([1, 0, 1, 0, 1, 0])
    groups = torch.tensor([0, 0, 1, 1, 2, 2])
    dp = FairnessRegularisedLoss(constraint="demographic_parity")
    # means 0.8, 0.3, 0.35 -> 0.8 - 0.3
    assert float(dp.gap(probs, y, groups, 3)) == pytest.approx(0.5)
    eo = FairnessRegularisedLoss(constraint="equalized_odds")
    # positives 0.9, 0.2, 0.6 -> 0.7; negatives 0.7, 0.4, 0.1 -> 0.6; the larger: 0.7
    assert float(eo.gap(probs, y, groups, 3)) == pytest.approx(0.7)
    # a batch with one group has no gap; a group absent from a batch does not count
    assert float(dp.gap(probs[:2], y[:2], groups[:2], 3)) == 0.0
    assert float(dp.gap(probs[:4], y[:4], groups[:4], 3)) == pytest.approx(0.5)


def test_lambda_zero_is_plain_cross_entropy_exactly(biased, plain_model):
    train, _ = biased
    model = tiny_mlp()
    index = torch.arange(32)
    loss = FairnessRegularisedLoss(lam=0.0).loss(train.attributes["sex"])
    x, y = train.x[index], train.y[index]
    assert torch.equal(loss.bind(index)(model, x, y), F.cross_entropy(model(x), y))
    fit_regularised(model, train, "sex", FairnessRegularisedLoss(lam=0.0), CONFIG)
    for name, weight in plain_model.state_dict().items():
        assert torch.equal(model.state_dict()[name], weight), name


def test_large_lambda_reduces_the_gap(biased, plain_model):
    train, test = biased
    sex = test.attributes["sex"]
    plain = batched_predict(plain_model, test.x)
    dp_model = tiny_mlp()
    fit_regularised(dp_model, train, "sex", FairnessRegularisedLoss(lam=5.0), CONFIG)
    assert dp_difference(batched_predict(dp_model, test.x), sex) < 0.1 < dp_difference(plain,
                                                                                       sex)
    eo_model = tiny_mlp()
    fit_regularised(eo_model, train, "sex",
                    FairnessRegularisedLoss(lam=5.0, constraint="equalized_odds"), CONFIG)
    assert eo_difference(batched_predict(eo_model, test.x), test.y, sex) < \
        eo_difference(plain, test.y, sex) - 0.05


@pytest.mark.parametrize("name", sorted(FairnessRegularisedLoss.constraints))
def test_regulariser_refuses_every_invalid_parameter(name):
    for bad in FairnessRegularisedLoss.constraints[name].invalid_examples():
        with pytest.raises(AssayValueError, match=f"'{name}' parameter of "
                                                  "FairnessRegularisedLoss"):
            FairnessRegularisedLoss(**{name: bad})


def test_regulariser_refuses_bad_groups(biased):
    train, _ = biased
    with pytest.raises(AssayValueError, match="at least 2 groups"):
        FairnessRegularisedLoss().loss(torch.zeros(10, dtype=torch.int64))
    with pytest.raises(AssayValueError, match="no sensitive attribute 'race'"):
        fit_regularised(tiny_mlp(), train, "race", FairnessRegularisedLoss(), CONFIG)
    model = zoo.build("mlp", input_shape=(3,), num_classes=2, seed=0)
    loss = FairnessRegularisedLoss(positive_class=4).loss(train.attributes["sex"])
    with pytest.raises(AssayValueError, match="'positive_class'"):
        loss.bind(torch.arange(4))(model, train.x[:4], train.y[:4])


# -- post-processing ----------------------------------------------------------------------
def synthetic_scores(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three groups with base rates 0.2, 0.4, 0.6 and scores that also rise with the group."""
    gen = torch.Generator().manual_seed(seed)
    groups = torch.randint(0, 3, (n,), generator=gen)
    y = (torch.rand(n, generator=gen) < torch.tensor([0.2, 0.4, 0.6])[groups]).long()
    logit = 1.5 * (2 * y - 1) + 0.8 * groups + torch.randn(n, generator=gen)
    return torch.sigmoid(logit), y, groups


def fairlearn_optimizer(constraint, scores, y, groups):
    """fairlearn's ThresholdOptimizer, prefit on a classifier whose positive-class
    probability is the first column of X (the scores)."""
    postprocessing = pytest.importorskip("fairlearn.postprocessing")
    from sklearn.base import BaseEstimator, ClassifierMixin

    class Scores(ClassifierMixin, BaseEstimator):
        def fit(self, x, y):
            self.classes_ = np.array([0, 1])
            return self

        def predict_proba(self, x):
            s = np.asarray(x, dtype=np.float64)[:, 0]
            return np.stack([1 - s, s], axis=1)

    optimizer = postprocessing.ThresholdOptimizer(
        estimator=Scores().fit(None, None), constraints=constraint,
        predict_method="predict_proba", prefit=True, objective="accuracy_score")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimizer.fit(scores.double().numpy()[:, None], y.numpy(),
                      sensitive_features=groups.numpy())
    return optimizer


def accuracy(pred: torch.Tensor, y: torch.Tensor) -> float:
    return float((pred == y).double().mean())


def test_demographic_parity_thresholds_reach_the_ratio_on_held_out_data():
    # 20,000 rows a split: at 6,000 the groups' rates on new data differ by sampling noise
    # alone (base rates and scores per group) enough to give ratios near 0.93
    scores, y, groups = synthetic_scores(20000, 0)
    test_scores, test_y, test_groups = synthetic_scores(20000, 1)
    assert dp_ratio((test_scores > 0.5).long(), test_groups) < 0.5  # biased before
    rule = fit_thresholds(scores, y, groups, constraint="demographic_parity")
    expected = rule.positive_probability(scores, groups)
    rates = selection_rates(expected, groups)
    assert max(rates) - min(rates) < 1e-9  # exact, in expectation, on the fitting data
    assert rates[0] == pytest.approx(rule.target["selection_rate"], abs=1e-12)
    assert rule.accuracy == pytest.approx(float((expected * y + (1 - expected) * (1 - y)).mean()))
    pred = rule.predict(test_scores, test_groups, seed=0)
    assert dp_ratio(pred, test_groups) >= 0.95
    assert torch.equal(pred, rule.predict(test_scores, test_groups, seed=0))
    assert not torch.equal(pred, rule.predict(test_scores, test_groups, seed=1))


def test_demographic_parity_thresholds_match_fairlearn():
    scores, y, groups = synthetic_scores(6000, 0)
    test_scores, test_y, test_groups = synthetic_scores(6000, 1)
    rule = fit_thresholds(scores, y, groups, constraint="demographic_parity")
    optimizer = fairlearn_optimizer("demographic_parity", scores, y, groups)
    ours = rule.predict(test_scores, test_groups, seed=0)
    theirs = torch.from_numpy(optimizer.predict(test_scores.double().numpy()[:, None],
                                                sensitive_features=test_groups.numpy(),
                                                random_state=0)).long()
    # equal selection rates within sampling noise (6000 rows, 3 groups: sd about 0.011)
    assert dp_difference(ours, test_groups) < 0.05
    assert dp_difference(theirs, test_groups) < 0.05
    for mine, fairlearn in zip(selection_rates(ours, test_groups),
                               selection_rates(theirs, test_groups), strict=True):
        assert mine == pytest.approx(fairlearn, abs=0.03)
    # the same accuracy up to fairlearn's grid of 1,001 rates and the random draws
    assert accuracy(ours, test_y) >= accuracy(theirs, test_y) - 0.01
    # on the fitting data, in expectation: our optimum is exact, theirs on a grid
    pmf = optimizer._pmf_predict(scores.double().numpy()[:, None],
                                 sensitive_features=groups.numpy())[:, 1]
    theirs_expected = float(np.mean(pmf * y.numpy() + (1 - pmf) * (1 - y.numpy())))
    assert rule.accuracy >= theirs_expected - 1e-9
    assert rule.accuracy == pytest.approx(theirs_expected, abs=1e-3)


def test_equalized_odds_thresholds_equalise_both_rates_and_match_fairlearn():
    scores, y, groups = synthetic_scores(6000, 0)
    test_scores, test_y, test_groups = synthetic_scores(6000, 1)
    rule = fit_thresholds(scores, y, groups, constraint="equalized_odds")
    expected = rule.positive_probability(scores, groups)
    assert eo_difference(expected, y, groups) < 1e-9
    assert selection_rates(expected[y == 1], groups[y == 1])[0] == pytest.approx(
        rule.target["true_positive_rate"], abs=1e-12)
    assert selection_rates(expected[y == 0], groups[y == 0])[0] == pytest.approx(
        rule.target["false_positive_rate"], abs=1e-12)
    optimizer = fairlearn_optimizer("equalized_odds", scores, y, groups)
    pmf = optimizer._pmf_predict(scores.double().numpy()[:, None],
                                 sensitive_features=groups.numpy())[:, 1]
    theirs_expected = float(np.mean(pmf * y.numpy() + (1 - pmf) * (1 - y.numpy())))
    assert rule.accuracy >= theirs_expected - 1e-9
    assert rule.accuracy == pytest.approx(theirs_expected, abs=1e-3)
    pred = rule.predict(test_scores, test_groups, seed=0)
    plain = (test_scores > 0.5).long()
    assert eo_difference(pred, test_y, test_groups) < 0.05 < eo_difference(plain, test_y,
                                                                           test_groups)


def test_thresholds_round_trip_through_json():
    scores, y, groups = synthetic_scores(500, 2)
    for constraint in ("demographic_parity", "equalized_odds"):
        rule = fit_thresholds(scores, y, groups, constraint=constraint)
        back = GroupThresholds.from_dict(json.loads(json.dumps(rule.to_dict())))
        assert back == rule
        assert all(-1.0 <= t <= 1.0 for pair in rule.thresholds for t in pair)
    with pytest.raises(AssayValueError, match="to_dict"):
        GroupThresholds.from_dict({"constraint": "demographic_parity"})


def test_thresholds_on_a_model(biased, plain_model):
    train, test = biased
    held_out, _ = train.split_off(0.5, seed=0)
    scores = positive_class_scores(plain_model, held_out.x)
    rule = fit_thresholds(scores, held_out.y, held_out.attributes["sex"])
    pred = rule.predict(positive_class_scores(plain_model, test.x), test.attributes["sex"])
    assert dp_ratio(pred, test.attributes["sex"]) > 0.8
    with pytest.raises(AssayValueError, match="'positive_class'"):
        positive_class_scores(plain_model, test.x, positive_class=2)


@pytest.mark.parametrize("scores, y, groups, words", [
    (torch.tensor([0.2, 1.5, 0.3, 0.4]), torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0, 1, 1]),
     "must lie in \\[0, 1\\]"),
    (torch.tensor([0.2, float("nan"), 0.3, 0.4]), torch.tensor([0, 1, 0, 1]),
     torch.tensor([0, 0, 1, 1]), "'scores'"),
    (torch.tensor([0.2, 0.5, 0.3, 0.4]), torch.tensor([0, 1, 0]), torch.tensor([0, 0, 1, 1]),
     "'y' parameter"),
    (torch.tensor([0.2, 0.5, 0.3, 0.4]), torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0, 1]),
     "one code per sample"),
    (torch.tensor([0.2, 0.5, 0.3, 0.4]), torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0, 0, 0]),
     "at least 2 groups"),
    (torch.tensor([0.2, 0.5, 0.3, 0.4, 0.1]), torch.tensor([0, 1, 0, 1, 1]),
     torch.tensor([0, 0, 0, 0, 1]), "group 1 has 1"),
    (torch.tensor([0.2, 0.5, 0.3, 0.4]), torch.tensor([0, 1, 1, 1]), torch.tensor([0, 0, 1, 1]),
     "group 1 has no negative"),
    (torch.tensor([0.2, 0.5, 0.3, 0.4]), torch.tensor([0, 1, 2, 1]), torch.tensor([0, 0, 1, 1]),
     "binary labels"),
    (torch.tensor([[0.2, 0.5]]), torch.tensor([0]), torch.tensor([0]), "'scores'"),
])
def test_thresholds_refuse_bad_input(scores, y, groups, words):
    with pytest.raises(AssayValueError, match=words):
        fit_thresholds(scores, y, groups)


def test_threshold_predict_refuses_bad_input():
    scores, y, groups = synthetic_scores(300, 4)
    rule = fit_thresholds(scores, y, groups)
    with pytest.raises(AssayValueError, match="code 7"):
        rule.predict(scores[:2], torch.tensor([0, 7]))
    with pytest.raises(AssayValueError, match="one code per score"):
        rule.predict(scores[:2], torch.tensor([0]))
    with pytest.raises(AssayValueError, match="must lie in"):
        rule.predict(scores[:2] + 1, groups[:2])
    with pytest.raises(AssayValueError, match="'seed'"):
        rule.predict(scores, groups, seed=-1)
    with pytest.raises(AssayValueError, match="'constraint'"):
        fit_thresholds(scores, y, groups, constraint="parity")  # type: ignore[arg-type]


DEVICE = torch.device(os.environ.get("ASSAY_TEST_DEVICE", "cuda"))


@pytest.mark.skipif(DEVICE.type == "cuda" and not torch.cuda.is_available(),
                    reason="no CUDA device")
def test_mitigations_run_on_the_model_device(biased):
    train, test = biased
    one_epoch = TrainConfig(epochs=1, lr=3e-3, batch_size=64, seed=0)
    for train_with in (lambda m: fit_reweighed(m, train, "sex", one_epoch),
                       lambda m: fit_regularised(m, train, "sex",
                                                 FairnessRegularisedLoss(lam=1.0), one_epoch)):
        model = tiny_mlp().to(DEVICE)
        train_with(model)
        assert all(p.device.type == DEVICE.type for p in model.parameters())
    scores = positive_class_scores(model, test.x)
    assert scores.device.type == DEVICE.type
    sex = test.attributes["sex"]
    rule = fit_thresholds(scores, test.y, sex)
    probability = rule.positive_probability(scores, sex.to(DEVICE))
    assert probability.device.type == DEVICE.type
    torch.testing.assert_close(probability.cpu(), rule.positive_probability(scores.cpu(), sex))
    assert rule.predict(scores, sex, seed=0).device.type == DEVICE.type
