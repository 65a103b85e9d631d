"""Adversarial training through the one training loop: each method makes the digits CNN
more robust than plain training with the same budget; the guard stops a collapse."""

import pytest
import torch
from torch import nn

from assay.attacks.evasion import PGD
from assay.core import zoo
from assay.core.model import ModelWrapper
from assay.core.training import TrainConfig, cyclic_factor, fit
from assay.defenses.adversarial import OverfittingGuard, adversarial_training, fast_loss
from assay.errors import AssayValueError, AssayWarning

EPS = 0.1
CONFIG = TrainConfig(epochs=5, lr=3e-3, seed=0)


def pgd_accuracy(net, test, eps=EPS):
    model = ModelWrapper(net, num_classes=10, input_shape=(1, 8, 8))
    x_adv = PGD(eps=eps, steps=20, seed=0)(model, test.x, test.y)
    with torch.no_grad():
        return float((model(x_adv).argmax(1) == test.y).float().mean())


@pytest.fixture(scope="module")
def plain_accuracy(digits):
    train, test = digits
    net = zoo.build("small_cnn", input_shape=(1, 8, 8), num_classes=10, seed=0)
    fit(net, train, CONFIG, show_progress=False)
    return pgd_accuracy(net, test)


@pytest.mark.parametrize("method,options", [("pgd", {"steps": 5}), ("trades", {"steps": 5}),
                                            ("fast", {})])
def test_each_method_raises_robust_accuracy(digits, plain_accuracy, method, options):
    train, test = digits
    net = zoo.build("small_cnn", input_shape=(1, 8, 8), num_classes=10, seed=0)
    result = adversarial_training(net, train, method=method, eps=EPS, config=CONFIG,
                                  show_progress=False, **options)
    hardened = pgd_accuracy(net, test)
    # Measured (PGD-20 at eps 0.1, 5 epochs): plain 0.428; pgd 0.650, trades 0.686, fast 0.646.
    assert hardened > plain_accuracy + 0.1, (method, hardened, plain_accuracy)
    assert len(result.guard_accuracies) == CONFIG.epochs and result.collapsed_at is None
    with torch.no_grad():
        clean = float((net(test.x).argmax(1) == test.y).float().mean())
    assert clean > 0.85


def test_training_repeats_for_a_seed(digits):
    train, _ = digits
    small = train.subset(300)
    nets = []
    for _ in range(2):
        net = zoo.build("mlp", input_shape=(1, 8, 8), num_classes=10, seed=0)
        adversarial_training(net, small, method="fast", eps=EPS, guard_points=0,
                             config=TrainConfig(epochs=1, seed=3), show_progress=False)
        nets.append(net)
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        assert torch.equal(a, b)


def test_guard_restores_the_best_weights_on_collapse(digits):
    """A simulated collapse: the second epoch's weights are wiped, so PGD accuracy falls to
    chance; the guard must restore the first epoch's weights and stop."""
    train, test = digits
    net = zoo.build("small_cnn", input_shape=(1, 8, 8), num_classes=10, seed=0)
    fit(net, train, CONFIG, show_progress=False)
    guard = OverfittingGuard(test.x[:200], test.y[:200], eps=0.05, drop=0.2)
    assert guard(0, net) is False
    kept = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
    with pytest.warns(AssayWarning, match="catastrophic overfitting"):
        assert guard(1, net) is True
    assert guard.collapsed_at == 1 and guard.accuracies[1] < guard.accuracies[0] - 0.2
    for key, value in net.state_dict().items():
        assert torch.equal(value, kept[key])


def test_bad_settings_are_refused(digits):
    train, _ = digits
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(AssayValueError, match="'method'"):
        adversarial_training(net, train, method="free", eps=0.1)
    with pytest.raises(AssayValueError, match="takes no option"):
        adversarial_training(net, train, method="fast", eps=0.1, beta=6.0)
    with pytest.raises(AssayValueError, match="guard_points"):
        adversarial_training(net, train.subset(10), method="fast", eps=0.1, guard_points=10)
    with pytest.raises(AssayValueError, match="'eps'"):
        fast_loss(0.0)
    with pytest.raises(AssayValueError, match="'schedule'"):
        TrainConfig(schedule="step")


def test_cyclic_schedule_rises_then_falls():
    total = 10
    factors = [cyclic_factor(step, total) for step in range(total)]
    assert factors == sorted(factors[:5]) + sorted(factors[5:], reverse=True)
    assert factors[0] == pytest.approx(0.1) and max(factors) == pytest.approx(0.9)
    assert factors == pytest.approx(factors[::-1])  # symmetric around the middle


def test_eps_ramp_grows_the_radius_linearly():
    from assay.defenses.adversarial import _Schedule

    schedule = _Schedule(seed=0, eps=0.3, ramp=4)
    radii = [schedule.next_seed()[1] for _ in range(6)]
    assert radii == pytest.approx([0.075, 0.15, 0.225, 0.3, 0.3, 0.3])
    assert _Schedule(0, 0.3, 0).next(torch.device("cpu"))[1] == 0.3
    with pytest.raises(AssayValueError, match="'ramp'"):
        _Schedule(0, 0.3, -1)


def test_ramp_epochs_count_the_batches_fit_will_run(digits, monkeypatch):
    import assay.defenses.adversarial as adversarial

    seen = {}

    def fake_loss(eps, **options):
        seen.update(options)
        raise AssayValueError("stopped by the test")

    monkeypatch.setitem(adversarial.LOSSES, "fast", fake_loss)
    train, _ = digits
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    config = TrainConfig(batch_size=100)
    with pytest.raises(AssayValueError, match="stopped"):
        adversarial_training(net, train, method="fast", eps=0.1, config=config,
                             ramp_epochs=1.5, guard_points=56)
    per_epoch = -(-(len(train) - 56) // 100)  # the guard's points are held out first
    assert seen["ramp"] == round(1.5 * per_epoch)
    with pytest.raises(AssayValueError, match="'ramp_epochs'"):
        adversarial_training(net, train, method="fast", eps=0.1, ramp_epochs=-1.0)
