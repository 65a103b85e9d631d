import pytest
import torch
from torch import nn

from assay.attacks.evasion import PGD
from assay.attacks._projection import distance
from assay.core.model import ModelWrapper
from assay.errors import AssayValueError


def robust_accuracy(model, x_adv, y):
    return float((model.predict(x_adv) == y).float().mean())


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("linf", 0.3), ("l2", 0.5), ("l2", 1.5)])
def test_stays_in_ball_and_bounds(digits, digits_model, norm, eps):
    _, test = digits
    x, y = test.x[:200], test.y[:200]
    x_adv = PGD(eps=eps, norm=norm, steps=10, restarts=2, seed=0)(digits_model, x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert float(distance(x_adv, x, norm).max()) <= eps * (1 + 1e-5)
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_eps_zero_returns_the_input(digits, digits_model, norm):
    _, test = digits
    x_adv = PGD(eps=0.0, norm=norm, seed=0)(digits_model, test.x, test.y)
    assert torch.equal(x_adv, test.x)


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("linf", 0.1), ("l2", 0.5)])
def test_matches_torchattacks(digits, digits_model, norm, eps):
    torchattacks = pytest.importorskip("torchattacks")
    _, test = digits
    x, y = test.x, test.y
    steps = 20
    alpha = 2.5 * eps / steps
    ours = PGD(eps=eps, norm=norm, steps=steps, step_size=alpha, seed=0)(digits_model, x, y)
    peer_cls = torchattacks.PGD if norm == "linf" else torchattacks.PGDL2
    torch.manual_seed(0)
    peer = peer_cls(digits_model, eps=eps, alpha=alpha, steps=steps, random_start=True)(x, y)
    ours_acc, peer_acc = robust_accuracy(digits_model, ours, y), robust_accuracy(digits_model, peer, y)
    assert ours_acc < robust_accuracy(digits_model, x, y) - 0.05  # the attack does something
    assert abs(ours_acc - peer_acc) <= 0.02, (ours_acc, peer_acc)


def test_linear_model_exact_minimal_l2_perturbation():
    # Logit difference w.x: the exact minimal L2 perturbation is |w.x| / ||w||.
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(16, generator=gen)
    net = nn.Linear(16, 2)
    with torch.no_grad():
        net.weight.copy_(torch.stack([w, -w]) / 2)
        net.bias.zero_()
    model = ModelWrapper(net, num_classes=2, input_shape=(16,), bounds=(-10.0, 10.0))
    x = torch.randn(32, 16, generator=gen)
    y = model.predict(x)
    exact = (x @ w).abs() / w.norm()
    for factor, expect in ((0.98, False), (1.02, True)):
        for i in range(len(x)):
            attack = PGD(eps=float(exact[i]) * factor, norm="l2", steps=50, random_start=False)
            assert bool(attack.run(model, x[i:i + 1], y[i:i + 1]).success[0]) is expect


def test_early_stop_saves_queries_without_losing_strength(digits, digits_model):
    _, test = digits
    x, y = test.x, test.y
    fast = PGD(eps=0.2, steps=20, seed=0).run(digits_model, x, y)
    full = PGD(eps=0.2, steps=20, seed=0, early_stop=False).run(digits_model, x, y)
    assert fast.queries < 0.5 * full.queries
    assert fast.success.float().mean() >= full.success.float().mean() - 0.01


def test_targeted_reaches_targets(digits, digits_model):
    _, test = digits
    x, y = test.x[:100], test.y[:100]
    target = (y + 1) % 10
    result = PGD(eps=0.3, steps=30, targeted=True, seed=0).run(digits_model, x, target)
    assert torch.equal(result.success, digits_model.predict(result.x_adv) == target)
    assert result.success.float().mean() > 0.8


def test_restarts_never_weaken(digits, digits_model):
    _, test = digits
    one = PGD(eps=0.1, steps=10, restarts=1, seed=0).run(digits_model, test.x, test.y)
    three = PGD(eps=0.1, steps=10, restarts=3, seed=0).run(digits_model, test.x, test.y)
    assert bool((one.success <= three.success).all())  # restart 1 is shared, later add hits


def test_inputs_outside_bounds_are_refused(digits_model):
    with pytest.raises(AssayValueError, match="bounds"):
        PGD(eps=0.1)(digits_model, torch.full((2, 1, 8, 8), 2.0), torch.zeros(2, dtype=torch.long))
