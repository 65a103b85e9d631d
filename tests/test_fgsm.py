import pytest
import torch

from assay.attacks.evasion import FGSM
from assay.attacks._projection import distance


def robust_accuracy(model, x_adv, y):
    return float((model.predict(x_adv) == y).float().mean())


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
def test_stays_in_ball_and_bounds(digits, digits_model, norm, eps):
    _, test = digits
    x, y = test.x, test.y
    result = FGSM(eps=eps, norm=norm).run(digits_model, x, y)
    assert float(distance(result.x_adv, x, norm).max()) <= eps * (1 + 1e-5)
    assert float(result.x_adv.min()) >= 0.0 and float(result.x_adv.max()) <= 1.0
    assert torch.equal(result.success, digits_model.predict(result.x_adv) != y)
    assert robust_accuracy(digits_model, result.x_adv, y) < robust_accuracy(digits_model, x, y) - 0.05
    assert result.queries == 2 * len(x)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_eps_zero_returns_the_input(digits, digits_model, norm):
    _, test = digits
    assert torch.equal(FGSM(eps=0.0, norm=norm)(digits_model, test.x, test.y), test.x)


@pytest.mark.parametrize("eps", [0.05, 0.1, 0.2])
def test_equals_torchattacks_exactly(digits, digits_model, eps):
    torchattacks = pytest.importorskip("torchattacks")
    _, test = digits
    x, y = test.x, test.y
    ours = FGSM(eps=eps)(digits_model, x, y)
    peer = torchattacks.FGSM(digits_model, eps=eps)(x, y)
    assert torch.equal(ours, peer)


def test_l2_step_has_length_eps_inside_the_box(digits, digits_model):
    _, test = digits
    x, y = test.x, test.y
    x_adv = FGSM(eps=0.5, norm="l2")(digits_model, x, y)
    # clipping only shortens the step
    assert float(distance(x_adv, x, "l2").max()) <= 0.5 * (1 + 1e-5)
    assert float(distance(x_adv, x, "l2").max()) > 0.4


def test_targeted_moves_towards_targets(digits, digits_model):
    _, test = digits
    x, y = test.x, test.y
    target = (y + 1) % 10
    result = FGSM(eps=0.2, targeted=True).run(digits_model, x, target)
    assert torch.equal(result.success, digits_model.predict(result.x_adv) == target)
    assert float(result.success.float().mean()) > float((digits_model.predict(x) == target).float().mean()) + 0.1
