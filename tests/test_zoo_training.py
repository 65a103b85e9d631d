import pytest
import torch

from assay.core import zoo
from assay.core.loaders import load_digits
from assay.core.training import TrainConfig, fit
from assay.errors import AssayValueError


@pytest.mark.parametrize("name", sorted(zoo.ARCHITECTURES))
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_every_architecture_builds_for_each_shape(name, shape):
    if name == "dp_cnn" and shape[1] < 16:
        with pytest.raises(AssayValueError, match="at least 16 x 16"):
            zoo.build(name, input_shape=shape, num_classes=7)
        return
    net = zoo.build(name, input_shape=shape, num_classes=7, seed=1).eval()
    assert net(torch.rand(2, *shape)).shape == (2, 7)


def test_dp_cnn_is_the_papers_mnist_network():
    net = zoo.build("dp_cnn", input_shape=(1, 28, 28), num_classes=10)
    assert sum(p.numel() for p in net.parameters()) == 26010
    assert net[7].in_features == 32 * 4 * 4
    assert sum(isinstance(m, torch.nn.Tanh) for m in net) == 3


def test_mlp_takes_tabular_rows_and_cnns_refuse_them():
    assert zoo.build("mlp", input_shape=(12,), num_classes=2)(torch.rand(3, 12)).shape == (3, 2)
    with pytest.raises(AssayValueError, match="image input"):
        zoo.build("lenet", input_shape=(12,), num_classes=2)


def test_build_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a = zoo.build("small_cnn", input_shape=(1, 8, 8), num_classes=10, seed=3)
    b = zoo.build("small_cnn", input_shape=(1, 8, 8), num_classes=10, seed=3)
    c = zoo.build("small_cnn", input_shape=(1, 8, 8), num_classes=10, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))


def test_training_is_deterministic_and_learns():
    train = load_digits("train").subset(400)
    config = TrainConfig(epochs=3, lr=3e-3, seed=0)
    nets = [zoo.build("small_cnn", input_shape=(1, 8, 8), num_classes=10, seed=0) for _ in range(2)]
    histories = [fit(net, train, config, show_progress=False) for net in nets]
    assert histories[0].loss == histories[1].loss
    assert all(torch.equal(p, q) for p, q in zip(nets[0].parameters(), nets[1].parameters()))
    assert histories[0].loss[-1] < histories[0].loss[0]
    assert not nets[0].training


def test_loss_fn_and_early_stop_hooks():
    train = load_digits("train").subset(200)
    seen = []

    def loss_fn(model, x, y):
        seen.append(len(x))
        return torch.nn.functional.cross_entropy(model(x), y)

    net = zoo.build("mlp", input_shape=(1, 8, 8), num_classes=10)
    history = fit(net, train, TrainConfig(epochs=5, batch_size=50), loss_fn=loss_fn,
                  on_epoch_end=lambda epoch, model: epoch == 1, show_progress=False)
    assert history.stopped_early and len(history.loss) == 2 and seen == [50] * 8


@pytest.mark.parametrize("bad", [dict(epochs=-1), dict(lr=0.0), dict(optimizer="rmsprop"),
                                 dict(batch_size=0)])
def test_bad_training_settings(bad):
    with pytest.raises(AssayValueError, match="TrainConfig"):
        TrainConfig(**bad)


def test_an_indexed_loss_sees_each_sample_once_per_epoch():
    from assay.core.training import IndexedLoss, cross_entropy_loss

    data = load_digits("train").subset(100)
    seen: list[torch.Tensor] = []

    def loss(model, x, y, index):
        assert torch.equal(data.x[index], x.cpu())  # the index names the batch's samples
        seen.append(index)
        return cross_entropy_loss(model, x, y)

    net = zoo.build("mlp", input_shape=data.input_shape, num_classes=10, seed=0)
    fit(net, data, TrainConfig(epochs=2, batch_size=32), loss_fn=IndexedLoss(loss),
        show_progress=False)
    epochs = torch.cat(seen).view(2, 100)
    assert all(sorted(epoch.tolist()) == list(range(100)) for epoch in epochs)
