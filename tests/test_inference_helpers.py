"""The one inference helper (eval mode, batched logits), the margin and the seeded generator."""

import pytest
import torch
from torch import nn

from assay.attacks._losses import margin
from assay.core.inference import (batched_logits, batched_predict, eval_mode, map_batches,
                                  model_device)
from assay.core.rng import seeded_generator
from assay.errors import AssayValueError


def mixed_net() -> nn.Module:
    """Train mode on the whole, with a frozen (eval) batch norm and an eval dropout inside."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Dropout(0.5),
                        nn.Sequential(nn.ReLU(), nn.Linear(6, 3)))
    net.train()
    net[2].eval()
    net[4][1].eval()
    return net


def modes(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


# ------------------------------------------------------------------------ eval_mode
def test_eval_mode_restores_every_submodules_own_mode():
    net = mixed_net()
    before = modes(net)
    assert True in before and False in before
    with eval_mode(net) as inside:
        assert inside is net and not any(modes(net))
    assert modes(net) == before  # model.train(was_training) would unfreeze the batch norm


def test_eval_mode_restores_modes_on_exception():
    net = mixed_net()
    before = modes(net)
    with pytest.raises(RuntimeError, match="boom"):
        with eval_mode(net):
            raise RuntimeError("boom")
    assert modes(net) == before


def test_batched_logits_restores_modes_even_when_the_model_fails():
    class FailsOnSecondBatch(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner, self.calls = mixed_net(), 0

        def forward(self, x):
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("second batch")
            return self.inner(x)

    model = FailsOnSecondBatch().train()
    model.inner[2].eval()
    before = modes(model)
    with pytest.raises(RuntimeError, match="second batch"):
        batched_logits(model, torch.rand(10, 1, 2, 2), batch_size=4)
    assert modes(model) == before


# ------------------------------------------------------------------------ batched forward
@pytest.mark.parametrize("batch_size", [1, 7, 64, None])
def test_batched_logits_equal_one_big_forward(batch_size):
    torch.manual_seed(0)
    net = mixed_net()
    x = torch.rand(23, 1, 2, 2)
    with eval_mode(net), torch.no_grad():
        expected = net(x)
    logits = batched_logits(net, x, batch_size=batch_size)
    torch.testing.assert_close(logits, expected, rtol=1e-6, atol=1e-6)
    assert not logits.requires_grad and logits.device == x.device
    assert torch.equal(batched_predict(net, x, batch_size=batch_size), logits.argmax(1))
    assert net.training  # the caller's mode is back


def test_batched_logits_of_empty_input_and_bad_arguments():
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    net.num_classes = 3
    empty = torch.zeros(0, 1, 2, 2)
    assert batched_logits(net, empty).shape == (0, 3)
    assert batched_predict(net, empty).dtype == torch.long
    assert batched_predict(nn.Flatten(), empty).shape == (0,)  # no class count known
    with pytest.raises(AssayValueError, match="'batch_size' parameter of batched_logits"):
        batched_logits(net, torch.rand(2, 1, 2, 2), batch_size=0)
    with pytest.raises(AssayValueError, match="logits of shape"):
        batched_logits(nn.Flatten(0), torch.rand(2, 1, 2, 2))


def test_map_batches_concatenates_tuples_and_model_device():
    x = torch.arange(10.0).view(10, 1)
    doubled, squared = map_batches(lambda xb: (2 * xb, xb ** 2), x, batch_size=3,
                                   device=torch.device("cpu"))
    assert torch.equal(doubled, 2 * x) and torch.equal(squared, x ** 2)
    assert model_device(nn.Linear(2, 2)) == torch.device("cpu")
    assert model_device(nn.ReLU(), "meta") == torch.device("meta")  # no weights: fallback


# ------------------------------------------------------------------------ margin
def test_margin_closed_form_and_gradient():
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, -1.0], [1.0, 1.0, 0.5]],
                          requires_grad=True)
    y = torch.tensor([0, 0, 1])
    value = margin(logits, y)
    # z_y - max_{j != y} z_j: 3 - 2, 0 - 5, 1 - 1
    assert value.tolist() == [1.0, -5.0, 0.0]
    assert torch.equal(value[:2] < 0, logits[:2].argmax(1) != y[:2])  # the tie is neither
    grad, = torch.autograd.grad(value[:2].sum(), logits)
    assert grad.tolist() == [[1.0, 0.0, -1.0], [1.0, -1.0, 0.0], [0.0, 0.0, 0.0]]
    many = torch.randn(50, 10, generator=seeded_generator(3))
    labels = torch.randint(0, 10, (50,), generator=seeded_generator(4))
    others = [torch.cat([row[:k], row[k + 1:]]).max() for row, k in zip(many, labels)]
    expected = many.gather(1, labels[:, None]).squeeze(1) - torch.stack(others)
    assert torch.equal(margin(many, labels), expected)


# ------------------------------------------------------------------------ generator
def test_seeded_generator_repeats_and_never_touches_the_global_rng():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = torch.rand(5, generator=seeded_generator(7))
    again = torch.randn(3, generator=seeded_generator(7, "cpu"))
    assert torch.equal(torch.get_rng_state(), state)  # neither seeded nor drawn from
    g = seeded_generator(7)
    assert torch.equal(torch.rand(5, generator=g), first)
    assert torch.equal(torch.randn(3, generator=seeded_generator(7)), again)
    assert not torch.equal(torch.rand(5, generator=seeded_generator(8)), first)
    assert seeded_generator(None) is None
    expected = torch.rand(4)
    torch.manual_seed(123)
    seeded_generator(1)
    assert torch.equal(torch.rand(4), expected)  # the global stream goes on unchanged
