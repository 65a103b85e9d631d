"""Membership inference (issue 14): exact metrics on ties, threshold attacks, LiRA and
RMIA against reference models, the ``membership_inference`` check, its cached reference
pieces and its refusals."""

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from assay.attacks.privacy import (RMIA, LabelOnlyBoundaryDistance, LiRA, ShadowModelAttack,
                                   image_queries, logit_confidence, membership_matrix,
                                   threshold_scores)
from assay.attacks.privacy import reference
from assay.audit.plan import plan_from_dict
from assay.audit.runner import run_audit
from assay.core import zoo
from assay.core.data import Dataset
from assay.core.model import ModelWrapper
from assay.core.rng import seeded_generator
from assay.core.training import TrainConfig, fit
from assay.errors import AssayValueError
from assay.metrics.privacy import (advantage, auc_with_interval, clopper_pearson,
                                   membership_metrics, roc_points, tpr_at_fpr)

RECIPE = {"arch": "mlp", "epochs": 20, "lr": 3e-3, "batch_size": 32}


# ----------------------------------------------------------------------------- metrics
def test_the_roc_and_tpr_at_fpr_are_exact_on_ties():
    members = torch.tensor([3.0, 2.0, 2.0, 1.0])
    nonmembers = torch.tensor([2.0, 2.0, 0.0, 0.0])
    fpr, tpr = roc_points(members, nonmembers)
    assert fpr.tolist() == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert tpr.tolist() == [0.0, 0.25, 0.75, 1.0, 1.0]
    # the tied non-member 2s are crossed together: no threshold has FPR 0.25
    assert tpr_at_fpr(members, nonmembers, 0.25) == (0.25, 1)
    assert tpr_at_fpr(members, nonmembers, 0.49) == (0.25, 1)
    assert tpr_at_fpr(members, nonmembers, 0.5) == (1.0, 4)
    auc, low, high = auc_with_interval(members, nonmembers)
    assert auc == 12 / 16  # pairs won, ties one half: 4 + 3 + 3 + 2 of 16
    assert low < auc < high
    assert advantage(members, nonmembers) == 0.5


def test_the_auc_matches_mann_whitney_and_clopper_pearson_the_beta_quantiles():
    gen = seeded_generator(0)
    members = torch.randn(300, generator=gen).round() + 0.3
    nonmembers = torch.randn(200, generator=gen).round()
    u = stats.mannwhitneyu(members.numpy(), nonmembers.numpy()).statistic
    assert auc_with_interval(members, nonmembers)[0] == pytest.approx(u / (300 * 200))
    assert clopper_pearson(0, 10) == (0.0, pytest.approx(1 - 0.025 ** 0.1))
    assert clopper_pearson(10, 10) == (pytest.approx(0.025 ** 0.1), 1.0)
    low, high = clopper_pearson(3, 50)
    assert low == pytest.approx(stats.beta.ppf(0.025, 3, 48))
    assert high == pytest.approx(stats.beta.ppf(0.975, 4, 47))


def test_scores_that_say_nothing_give_chance():
    same = torch.zeros(50)
    result = membership_metrics(same, torch.zeros(70))
    assert result.auc == (0.5, 0.5, 0.5)
    assert result.tpr[0.001][0] == 0.0 and result.tpr[0.01][0] == 0.0
    assert result.advantage == 0.0


def test_empty_or_non_finite_scores_are_refused():
    with pytest.raises(AssayValueError, match="'members' scores must be a non-empty"):
        roc_points(torch.zeros(0), torch.zeros(3))
    with pytest.raises(AssayValueError, match="NaN or infinite"):
        auc_with_interval(torch.tensor([1.0, math.nan]), torch.zeros(3))


# ----------------------------------------------------------------------------- attacks
def test_scores_rank_a_better_fitted_sample_higher():
    logits = torch.tensor([[4.0, 0.0, 0.0], [1.0, 0.5, 0.0]])
    y = torch.tensor([0, 0])
    for attack in ("loss", "confidence", "entropy"):
        first, second = threshold_scores(logits, y, attack)
        assert first > second, attack
    p = torch.softmax(logits, 1)[:, 0]
    assert torch.allclose(logit_confidence(logits, y), torch.log(p / (1 - p)))
    assert torch.isfinite(logit_confidence(torch.tensor([[200.0, 0.0]]), torch.tensor([0])))


def test_queries_augment_images_only():
    assert len(image_queries((1, 8, 8), True)) == 10
    assert len(image_queries((1, 8, 8), False)) == 1
    assert len(image_queries((64,), True)) == 1
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    shifted = [q(x) for q in image_queries((1, 4, 4), True)]
    assert all(s.shape == x.shape for s in shifted) and torch.equal(shifted[0], x)


@pytest.mark.parametrize("models", [1, 2, 5, 8])
def test_the_membership_matrix_puts_each_sample_in_half_the_models(models):
    keep = membership_matrix(models, 4000, seed=3)
    inside = keep.sum(0)
    assert bool(((inside == models // 2) | (inside == (models + 1) // 2)).all())
    assert keep.float().mean().item() == pytest.approx(0.5, abs=0.02)
    assert torch.equal(keep, membership_matrix(models, 4000, seed=3))
    assert not torch.equal(keep, membership_matrix(models, 4000, seed=4))


def _synthetic(models: int = 8, samples: int = 4000, seed: int = 0):
    """phi of a target and reference models on samples of very different difficulty:
    each sample's phi is its own offset (spread 3) plus 1 where the model trained on it,
    plus noise 0.3. A global threshold sees mostly the offsets; LiRA calibrates them."""
    gen = seeded_generator(seed)
    offset = 3 * torch.randn(samples, generator=gen)
    member = torch.rand(samples, generator=gen) < 0.5
    keep = membership_matrix(models, samples, seed)

    def phi(inside):
        return (offset + inside.float() + 0.3 * torch.randn(inside.shape, generator=gen))[None]

    target = phi(member)
    references = torch.stack([phi(k) for k in keep])
    return target, references, keep, member


def test_lira_beats_the_global_threshold_at_low_fpr():
    target, references, keep, member = _synthetic()
    loss = membership_metrics(target[0][member], target[0][~member])
    for attack in (LiRA(), LiRA(variance="per_example"), LiRA(online=False)):
        scores = attack(target, references, keep)
        lira = membership_metrics(scores[member], scores[~member])
        assert lira.tpr[0.01][0] > 5 * max(loss.tpr[0.01][0], 0.01), attack
        assert lira.auc[1] > loss.auc[2], attack


def test_rmia_beats_the_global_threshold_with_two_reference_models():
    target, references, keep, member = _synthetic(models=2)
    z = 2000  # the second half of the samples is the population
    scores = RMIA(a=1.0)(target[:, :z], references[:, :, :z], keep[:, :z],
                         target[:, z:], references[:, :, z:], keep[:, z:])
    rmia = membership_metrics(scores[member[:z]], scores[~member[:z]])
    loss = membership_metrics(target[0, :z][member[:z]], target[0, :z][~member[:z]])
    assert rmia.auc[0] > loss.auc[0] + 0.1
    assert rmia.tpr[0.01][0] > loss.tpr[0.01][0]


def test_the_shadow_attack_learns_what_members_look_like():
    gen = seeded_generator(1)
    models, pool, classes = 2, 400, 3
    keep = membership_matrix(models, pool, seed=1)
    pool_y = torch.randint(classes, (pool,), generator=gen)

    def outputs(inside, labels):  # a member's true class gets 3 more logit, plus noise
        logits = torch.randn(len(labels), classes, generator=gen)
        logits[torch.arange(len(labels)), labels] += 3 * inside.float()
        return torch.log_softmax(logits, 1)

    shadow = torch.stack([outputs(k, pool_y) for k in keep])
    member = torch.arange(200) < 100
    y = torch.randint(classes, (200,), generator=gen)
    attack, target = ShadowModelAttack(steps=100), outputs(member, y)
    scores = attack(target, y, shadow, pool_y, keep)
    assert membership_metrics(scores[member], scores[~member]).auc[0] > 0.8
    assert torch.equal(scores, attack(target, y, shadow, pool_y, keep))  # seeded


def test_attacks_refuse_bad_settings_and_shapes():
    with pytest.raises(AssayValueError, match="'variance' parameter of LiRA"):
        LiRA(variance="median")
    with pytest.raises(AssayValueError, match="'steps' parameter of ShadowModelAttack"):
        ShadowModelAttack(steps=0)
    with pytest.raises(AssayValueError, match="'a' parameter of RMIA"):
        RMIA(a=1.5)
    with pytest.raises(AssayValueError, match="LiRA needs target"):
        LiRA()(torch.zeros(1, 5), torch.zeros(2, 1, 4), torch.zeros(2, 5, dtype=torch.bool))
    with pytest.raises(AssayValueError, match="OUT reference models"):
        LiRA()(torch.zeros(1, 3), torch.zeros(1, 1, 3), torch.ones(1, 3, dtype=torch.bool))


# ----------------------------------------------------------------------------- the check
class Constant(nn.Module):
    """The same uniform prediction for every input: it memorised nothing."""

    def forward(self, x):
        return torch.zeros(len(x), 10)


@pytest.fixture(scope="module")
def overfit(digits):
    """An MLP trained to memorise 80 digits (members); 80 test digits are non-members and
    the next 30 training digits more reference data (RMIA's population): the reference
    models train on 95 digits, about as many as the model."""
    train, test = digits
    members = train.subset(80)
    net = zoo.build("mlp", input_shape=(1, 8, 8), num_classes=10, seed=0)
    recipe = {k: v for k, v in RECIPE.items() if k != "arch"}
    fit(net, members, TrainConfig(**recipe), show_progress=False)
    model = ModelWrapper(net, num_classes=10, input_shape=(1, 8, 8), name="overfit mlp")
    return model, members, test.subset(80), train.take(torch.arange(80, 110))


def membership_plan(training=RECIPE, **params):
    raw = {"checks": [{"name": "membership_inference", "params": params}]}
    if training is not None:
        raw["training"] = training
    return plan_from_dict(raw)


def metrics_of(model, nonmembers, members, plan, **kwargs):
    # one thread: "auto" picks one or two by timing, and training on two may round otherwise
    (check,) = run_audit(model, nonmembers, plan, train_data=members, progress=False,
                         threads=1, **kwargs).checks
    assert check.status != "error", check
    return check


def test_a_model_that_memorised_nothing_leaks_nothing(overfit):
    _, members, nonmembers, _ = overfit
    model = ModelWrapper(Constant(), num_classes=10, input_shape=(1, 8, 8))
    check = metrics_of(model, nonmembers, members, membership_plan(training=None))
    for attack in ("loss", "confidence", "entropy"):
        m = check.metrics
        assert m[f"auc_ci_low@{attack}"] <= 0.5 <= m[f"auc_ci_high@{attack}"]
        assert m[f"tpr_at_fpr_0.001@{attack}"] == 0.0 and m[f"advantage@{attack}"] == 0.0
    assert [f.code for f in check.findings if f.level == "warn"] == []


def test_an_overfit_model_leaks_to_the_loss_attack(overfit):
    model, members, nonmembers, _ = overfit
    check = metrics_of(model, nonmembers, members, membership_plan(training=None))
    assert check.metrics["auc_ci_low@loss"] > 0.55
    assert check.metrics["members"] == 80 and check.metrics["nonmembers"] == 80
    assert "membership_leak" in [f.code for f in check.findings if f.level == "warn"]
    (plot,) = check.plots
    assert set(plot.series) == {"loss", "confidence", "entropy"}
    assert plot.x[0] == pytest.approx(math.log10(1 / 80)) and plot.x[-1] == 0.0


def test_reference_attacks_run_repeat_and_are_cached(overfit, tmp_path, monkeypatch):
    model, members, nonmembers, pool = overfit
    np.savez(tmp_path / "pool.npz", x=pool.x.numpy(), y=pool.y.numpy())
    plan = membership_plan(attacks=["loss", "shadow", "lira", "lira_offline", "rmia"],
                           reference_models=2, reference_data=str(tmp_path / "pool.npz"))
    calls = []
    original = reference.fit

    def counted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed while training the second reference model
        return original(*args, **kwargs)

    monkeypatch.setattr(reference, "fit", counted)
    cache = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        run_audit(model, nonmembers, plan, train_data=members, progress=False, cache_dir=cache,
                  threads=1)
    calls.clear()
    monkeypatch.setattr(reference, "fit", lambda *a, **k: (calls.append(1), original(*a, **k)))
    resumed = metrics_of(model, nonmembers, members, plan, cache_dir=cache)
    assert len(calls) == 1  # the first reference model was read back
    calls.clear()
    again = metrics_of(model, nonmembers, members, plan, cache_dir=cache)
    assert calls == [] and again.metrics == resumed.metrics
    fresh = metrics_of(model, nonmembers, members, plan)
    assert len(calls) == 2 and fresh.metrics == resumed.metrics  # seeded: the same numbers
    assert fresh.details["reference_in_out_gap"] > 0
    assert not {"reference_fit", "reference_size"} & {f.code for f in fresh.findings}
    for attack in ("shadow", "lira", "lira_offline", "rmia"):
        assert 0.0 <= fresh.metrics[f"auc@{attack}"] <= 1.0
        assert fresh.metrics[f"tpr_at_fpr_0.01_ci_low@{attack}"] <= (
            fresh.metrics[f"tpr_at_fpr_0.01@{attack}"])


def test_the_check_refuses_what_it_cannot_measure(overfit, tmp_path):
    model, members, nonmembers, _ = overfit
    with pytest.raises(AssayValueError, match="also among the members"):
        run_audit(model, members, membership_plan(training=None), train_data=members,
                  progress=False)
    with pytest.raises(AssayValueError, match="--train-data"):
        run_audit(model, nonmembers, membership_plan(training=None), progress=False)
    with pytest.raises(AssayValueError, match=r"add a \[training\] table"):
        run_audit(model, nonmembers, membership_plan(training=None, attacks=["lira"]),
                  train_data=members, progress=False)
    np.savez(tmp_path / "members.npz", x=members.x[:10].numpy(), y=members.y[:10].numpy())
    with pytest.raises(AssayValueError, match="10 samples of .* are also among the members"):
        run_audit(model, nonmembers, membership_plan(
            attacks=["lira"], reference_data=str(tmp_path / "members.npz")),
            train_data=members, progress=False)
    with pytest.raises(AssayValueError, match="'rmia' attack compares"):
        membership_plan(attacks=["rmia"])
    with pytest.raises(AssayValueError, match="'reference_models' parameter"):
        membership_plan(attacks=["lira"], reference_models=1)
    # a recipe the reference models cannot be trained with: an image CNN on flat rows
    flat = [Dataset(d.x.flatten(1), d.y, d.name, d.split, d.classes) for d in (members, nonmembers)]
    net = nn.Sequential(nn.Linear(64, 10))
    rows = ModelWrapper(net, num_classes=10, input_shape=(64,))
    with pytest.raises(AssayValueError, match="cannot train a reference model"):
        run_audit(rows, flat[1], membership_plan(training={"arch": "small_cnn"}, attacks=["lira"]),
                  train_data=flat[0], progress=False)


def test_reference_models_unlike_the_model_are_warned(overfit, digits, tmp_path):
    model, members, nonmembers, _ = overfit
    extra = digits[0].take(torch.arange(80, 380))  # the pool: 460, halves of 230 against 80
    np.savez(tmp_path / "big.npz", x=extra.x.numpy(), y=extra.y.numpy())
    plan = membership_plan(attacks=["lira"], reference_models=2,
                           reference_data=str(tmp_path / "big.npz"))
    check = metrics_of(model, nonmembers, members, plan)
    assert "reference_size" in [f.code for f in check.findings if f.level == "warn"]


def test_the_label_only_attack_scores_the_distance_to_the_boundary(overfit):
    model, members, nonmembers, _ = overfit
    x, y = torch.cat([members.x[:20], nonmembers.x[:20]]), torch.cat([members.y[:20],
                                                                      nonmembers.y[:20]])
    attack = LabelOnlyBoundaryDistance(num_iterations=2, max_num_evals=100)
    scores = attack(model, x, y)
    wrong = model.predict(x) != y
    assert bool((scores[wrong] == 0).all()) and bool((scores[~wrong] > 0).all())
    assert torch.equal(scores, attack(model, x, y))  # seeded
    plan = membership_plan(training=None, attacks=["label_only"], n=20, label_only_iterations=1)
    check = metrics_of(model, nonmembers, members, plan)
    assert 0.0 <= check.metrics["auc@label_only"] <= 1.0


def _logit(p):
    p = torch.as_tensor(p, dtype=torch.float64)
    return torch.log(p / (1 - p)).float()


def test_rmia_votes_over_the_queries_as_the_authors_code():
    # one reference model at p = 0.5 everywhere, a = 1: Pr(.) = 0.5, so LR(x, z) = p_x / p_z
    # per query. x wins on one query of three by far (mean p 0.53 > 0.4), loses on two
    target_x, target_z = _logit([[0.99], [0.3], [0.3]]), _logit([[0.4], [0.4], [0.4]])
    reference = _logit(torch.full((1, 3, 1), 0.5))
    out = torch.zeros(1, 1, dtype=torch.bool)
    args = (target_x, reference, out, target_z, reference, out)
    assert RMIA(a=1.0)(*args).tolist() == [0.0]  # no majority of queries: LR <= 1 on 2 of 3
    assert RMIA(a=1.0, aggregate="mean")(*args).tolist() == [1.0]
    # a tie of the queries (2 of 4) is no majority, like torch.mode in the authors' code
    four_x, four_z = _logit([[0.9], [0.9], [0.1], [0.1]]), _logit([[0.5]] * 4)
    ref4 = _logit(torch.full((1, 4, 1), 0.5))
    assert RMIA(a=1.0)(four_x, ref4, out, four_z, ref4, out).tolist() == [0.0]


def test_rmia_vote_blocks_and_a_single_query_agree(monkeypatch):
    from assay.attacks.privacy import rmia as rmia_module

    gen = seeded_generator(5)
    target = torch.randn(10, 300, generator=gen)
    reference = torch.randn(2, 10, 300, generator=gen)
    keep = membership_matrix(2, 300, seed=1)
    args = (target[:, :120], reference[:, :, :120], keep[:, :120],
            target[:, 120:], reference[:, :, 120:], keep[:, 120:])
    whole = RMIA(gamma=1.5)(*args)
    monkeypatch.setattr(rmia_module, "_CHUNK", 7)  # a block of one row at a time
    assert torch.equal(RMIA(gamma=1.5)(*args), whole)
    # a single query: the bisection count is the pairwise share
    single = (args[0][:1], args[1][:, :1], args[2], args[3][:1], args[4][:, :1], args[5])
    rx, rz = RMIA()._ratio(*single[:3]), RMIA()._ratio(*single[3:])
    assert torch.equal(RMIA()(*single), (rx[0][:, None] > rz[0][None]).double().mean(1))


def test_rmia_tunes_a_on_a_reference_model_playing_the_target():
    from assay.attacks.privacy.rmia import A_GRID, tune_offline_a

    target, references, keep, member = _synthetic(models=4, samples=3000)
    # reference model 0 plays the target; 1 to 3 attack it; z: samples model 0 left out
    paired, others, others_keep = references[0], references[1:], keep[1:]
    z = torch.nonzero(~keep[0]).flatten()[:800]
    x = torch.tensor([i for i in range(3000) if i not in set(z.tolist())])
    best, aucs = tune_offline_a(RMIA(), paired[:, x], others[:, :, x], others_keep[:, x],
                                keep[0, x], paired[:, z], others[:, :, z], others_keep[:, z])
    assert list(aucs) == list(A_GRID) and aucs[best] == max(aucs.values())
    scores = RMIA(a=best)(paired[:, x], others[:, :, x], others_keep[:, x], paired[:, z],
                          others[:, :, z], others_keep[:, z])
    assert aucs[best] == pytest.approx(membership_metrics(scores[keep[0, x]],
                                                          scores[~keep[0, x]]).auc[0])
    assert aucs[best] > 0.6  # the paired model's members are found
    with pytest.raises(AssayValueError, match="online"):
        tune_offline_a(RMIA(online=True), paired[:, x], others[:, :, x], others_keep[:, x],
                       keep[0, x], paired[:, z], others[:, :, z], others_keep[:, z])
    with pytest.raises(AssayValueError, match="members and non-members"):
        tune_offline_a(RMIA(), paired[:, x], others[:, :, x], others_keep[:, x],
                       torch.ones(len(x), dtype=torch.bool), paired[:, z], others[:, :, z],
                       others_keep[:, z])


def test_threshold_scores_keep_the_order_of_confident_samples():
    """In float32, log p_y of every sample with p_y above 1 - 6e-8 is exactly 0: the most
    confident members tied, and the TPR at a low FPR fell to 0."""
    logits = torch.tensor([[20.0, 0.0], [25.0, 0.0], [30.0, 0.0], [5.0, 0.0]])
    y = torch.zeros(4, dtype=torch.long)
    for attack in ("loss", "confidence", "entropy"):
        scores = threshold_scores(logits, y, attack)
        assert scores.dtype == torch.float64
        assert scores[2] > scores[1] > scores[0] > scores[3], attack
    assert torch.allclose(threshold_scores(logits, y, "loss"),
                          -torch.nn.functional.cross_entropy(logits.double(), y,
                                                             reduction="none"))
