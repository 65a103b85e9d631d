import pytest
import torch

from assay.attacks.evasion import MIFGSM, PGD, transfer_attack
from assay.attacks._projection import distance
from assay.core import zoo
from assay.core.model import ModelWrapper
from assay.core.training import TrainConfig, fit


def robust_accuracy(model, x_adv, y):
    return float((model.predict(x_adv) == y).float().mean())


@pytest.fixture(scope="module")
def other_digits_model(digits):
    """A second digits CNN, trained from another seed: the transfer target."""
    train, _ = digits
    net = zoo.build("small_cnn", input_shape=(1, 8, 8), num_classes=10, seed=1)
    fit(net, train, TrainConfig(epochs=15, lr=3e-3, seed=1), show_progress=False)
    return ModelWrapper(net, num_classes=10, input_shape=(1, 8, 8), name="other digits cnn")


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
def test_stays_in_ball_and_bounds(digits, digits_model, norm, eps):
    _, test = digits
    x, y = test.x, test.y
    result = MIFGSM(eps=eps, norm=norm).run(digits_model, x, y)
    assert float(distance(result.x_adv, x, norm).max()) <= eps * (1 + 1e-5)
    assert float(result.x_adv.min()) >= 0.0 and float(result.x_adv.max()) <= 1.0
    assert torch.equal(result.success, digits_model.predict(result.x_adv) != y)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_eps_zero_returns_the_input(digits, digits_model, norm):
    _, test = digits
    assert torch.equal(MIFGSM(eps=0.0, norm=norm)(digits_model, test.x, test.y), test.x)


@pytest.mark.parametrize("eps", [0.1, 0.2])
def test_matches_torchattacks(digits, digits_model, eps):
    torchattacks = pytest.importorskip("torchattacks")
    _, test = digits
    x, y = test.x, test.y
    ours = MIFGSM(eps=eps)(digits_model, x, y)
    peer = torchattacks.MIFGSM(digits_model, eps=eps, alpha=eps / 10, steps=10, decay=1.0)(x, y)
    assert float((ours - peer).abs().max()) <= 1e-5


def test_transfer_lowers_the_other_models_accuracy(digits, digits_model, other_digits_model):
    _, test = digits
    x, y = test.x, test.y
    clean = robust_accuracy(other_digits_model, x, y)
    result = transfer_attack(MIFGSM(eps=0.2), digits_model, other_digits_model, x, y)
    transferred = robust_accuracy(other_digits_model, result.x_adv, y)
    assert torch.equal(result.success, other_digits_model.predict(result.x_adv) != y)
    assert result.queries == len(x)
    assert transferred < clean - 0.5, (clean, transferred)  # about 0.96 -> 0.15
    # momentum transfers at least as well as plain iterative FGSM with the same budget
    plain = transfer_attack(MIFGSM(eps=0.2, decay=0.0), digits_model, other_digits_model, x, y)
    assert transferred <= robust_accuracy(other_digits_model, plain.x_adv, y) + 0.02


def test_transfer_targeted_counts_target_hits(digits, digits_model, other_digits_model):
    _, test = digits
    x, y = test.x[:100], test.y[:100]
    target = (y + 1) % 10
    result = transfer_attack(PGD(eps=0.3, steps=20, targeted=True, seed=0), digits_model,
                             other_digits_model, x, target)
    assert torch.equal(result.success, other_digits_model.predict(result.x_adv) == target)


def test_early_stop_saves_queries(digits, digits_model):
    _, test = digits
    fast = MIFGSM(eps=0.2, early_stop=True).run(digits_model, test.x, test.y)
    full = MIFGSM(eps=0.2).run(digits_model, test.x, test.y)
    assert fast.queries < 0.7 * full.queries
    assert fast.success.float().mean() >= full.success.float().mean() - 0.01
