import pytest
import torch

from assay.attacks.evasion import APGD, PGD
from assay.attacks.evasion.apgd import apgd_checkpoints
from assay.attacks._projection import distance


def robust_accuracy(model, x_adv, y):
    return float((model.predict(x_adv) == y).float().mean())


def test_checkpoints_follow_the_paper():
    # p = 0, .22, .41, .57, .70, .80, .87, .93, .99
    assert apgd_checkpoints(100) == [22, 41, 58, 70, 80, 87, 93, 99]


@pytest.mark.parametrize("norm,eps,loss", [("linf", 0.1, "ce"), ("linf", 0.3, "dlr"),
                                           ("l2", 0.5, "ce"), ("l2", 1.5, "dlr")])
def test_stays_in_ball_and_bounds(digits, digits_model, norm, eps, loss):
    _, test = digits
    x, y = test.x[:150], test.y[:150]
    result = APGD(eps=eps, norm=norm, loss=loss, n_iter=20, n_restarts=2, seed=0).run(
        digits_model, x, y)
    assert result.x_adv.shape == x.shape and result.x_adv.dtype == x.dtype
    assert float(distance(result.x_adv, x, norm).max()) <= eps * (1 + 1e-5)
    assert float(result.x_adv.min()) >= 0.0 and float(result.x_adv.max()) <= 1.0
    assert torch.equal(result.success, digits_model.predict(result.x_adv) != y)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_eps_zero_returns_the_input(digits, digits_model, norm):
    _, test = digits
    assert torch.equal(APGD(eps=0.0, norm=norm, seed=0)(digits_model, test.x, test.y), test.x)


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("linf", 0.15), ("l2", 0.5)])
def test_at_least_as_strong_as_pgd_100(digits, digits_model, norm, eps):
    _, test = digits
    x, y = test.x, test.y
    ours = robust_accuracy(digits_model, APGD(eps=eps, norm=norm, seed=0)(digits_model, x, y), y)
    pgd = robust_accuracy(digits_model, PGD(eps=eps, norm=norm, steps=100, seed=0)(digits_model, x, y), y)
    assert ours < robust_accuracy(digits_model, x, y) - 0.1
    assert ours <= pgd + 0.005, (ours, pgd)


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.5)])
def test_matches_torchattacks_apgd(digits, digits_model, norm, eps):
    torchattacks = pytest.importorskip("torchattacks")
    _, test = digits
    x, y = test.x, test.y
    ours = robust_accuracy(digits_model, APGD(eps=eps, norm=norm, seed=0)(digits_model, x, y), y)
    peer = torchattacks.APGD(digits_model, norm="Linf" if norm == "linf" else "L2", eps=eps,
                             steps=100, n_restarts=1, loss="ce", seed=0)(x, y)
    peer_acc = robust_accuracy(digits_model, peer, y)
    assert abs(ours - peer_acc) <= 0.02, (ours, peer_acc)


def test_early_stop_saves_queries_without_losing_strength(digits, digits_model):
    _, test = digits
    x, y = test.x, test.y
    fast = APGD(eps=0.15, n_iter=30, seed=0).run(digits_model, x, y)
    full = APGD(eps=0.15, n_iter=30, seed=0, early_stop=False).run(digits_model, x, y)
    assert fast.queries < 0.5 * full.queries
    assert torch.equal(fast.success, full.success)  # per-sample runs do not interact


def test_targeted_reaches_targets(digits, digits_model):
    _, test = digits
    x, y = test.x[:100], test.y[:100]
    target = (y + 1) % 10
    for loss in ("ce", "dlr-targeted"):
        result = APGD(eps=0.3, n_iter=30, loss=loss, targeted=True, seed=0).run(
            digits_model, x, target)
        assert torch.equal(result.success, digits_model.predict(result.x_adv) == target)
        assert result.success.float().mean() > 0.8, loss


def test_target_class_rank_is_untargeted_success(digits, digits_model):
    _, test = digits
    x, y = test.x, test.y
    result = APGD(eps=0.15, loss="dlr-targeted", target_class_rank=2, seed=0).run(
        digits_model, x, y)
    assert torch.equal(result.success, digits_model.predict(result.x_adv) != y)
    assert robust_accuracy(digits_model, result.x_adv, y) < robust_accuracy(digits_model, x, y) - 0.3


def test_apgdt_wide_breaks_what_the_targets_break_one_by_one(digits, digits_model):
    """APGD-T runs its targets as rows of one pass; each target's row follows APGD with that
    target_class_rank, so its breaks match the sequential sweep up to the random starts."""
    from assay.attacks.evasion import APGDT
    _, test = digits
    x, y = test.x[:200], test.y[:200]
    eps, steps = 0.1, 20
    wide = APGDT(eps=eps, n_iter=steps, n_target_classes=3, seed=0, wide=True).run(
        digits_model, x, y)
    assert float(distance(wide.x_adv, x, "linf").max()) <= eps * (1 + 1e-5)
    assert torch.equal(wide.success, digits_model.predict(wide.x_adv) != y)
    broken = torch.zeros(len(x), dtype=torch.bool)
    for rank in (2, 3, 4):
        one = APGD(eps=eps, n_iter=steps, loss="dlr-targeted", target_class_rank=rank,
                   seed=0).run(digits_model, x, y)
        broken |= one.success
    assert abs(int(wide.success.sum()) - int(broken.sum())) <= 0.03 * len(x)
    # every robust sample costs its three rows at every step, and a broken one no more
    assert wide.queries <= len(x) + 3 * len(x) * (steps + 1)
    assert wide.queries > len(x) + 3 * int((~wide.success).sum()) * (steps + 1) - 1


def test_apgdt_with_one_target_is_apgd_at_rank_two(digits, digits_model):
    from assay.attacks.evasion import APGDT
    _, test = digits
    x, y = test.x[:100], test.y[:100]
    one = APGD(eps=0.1, n_iter=10, loss="dlr-targeted", target_class_rank=2, seed=3).run(
        digits_model, x, y)
    for wide in (True, False):
        run = APGDT(eps=0.1, n_iter=10, n_target_classes=1, seed=3, wide=wide).run(
            digits_model, x, y)
        assert torch.equal(run.success, one.success)
        assert torch.allclose(run.x_adv, one.x_adv) and run.queries == one.queries


def test_apgdt_one_target_after_another_is_the_sequential_sweep(digits, digits_model):
    """wide=False (the CPU default) runs the ranks in turn on the samples still robust,
    as AutoAttack does: exactly APGD at each rank on what the earlier ranks left."""
    from assay.attacks.evasion import APGDT
    _, test = digits
    x, y = test.x[:150], test.y[:150]
    sweep = APGDT(eps=0.1, n_iter=10, n_target_classes=3, seed=0, wide=False).run(
        digits_model, x, y)
    broken = torch.zeros(len(x), dtype=torch.bool)
    queries = len(x)  # the clean pass that ranks the classes
    for rank in (2, 3, 4):
        index = (~broken).nonzero().squeeze(1)
        one = APGD(eps=0.1, n_iter=10, loss="dlr-targeted", target_class_rank=rank,
                   seed=0).run(digits_model, x[index], y[index])
        broken[index[one.success]] = True
        queries += one.queries - len(index)  # each APGD run ranks the classes again
    assert torch.equal(sweep.success, broken) and sweep.queries == queries


def test_apgdt_refuses_a_model_of_three_classes():
    from assay.attacks.evasion import APGDT
    from assay.errors import AssayValueError
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    with pytest.raises(AssayValueError, match="at least 4 classes"):
        APGDT(eps=0.1, n_iter=2).run(model, torch.rand(2, 1, 2, 2), torch.tensor([0, 1]))
