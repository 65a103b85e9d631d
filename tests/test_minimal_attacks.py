"""Minimal-perturbation attacks (DeepFool, Carlini-Wagner L2) and FAB-T: exact answers on a
linear model, validity and strength on the digits CNN, and torchattacks as an oracle."""

import pytest
import torch
from torch import nn

from assay.attacks._projection import distance
from assay.attacks.evasion import DeepFool
from assay.core.model import ModelWrapper


def linear_binary(seed=0, dim=16, n=32):
    """Logit difference w.x + b; the exact minimal L2 (Linf) perturbation is
    |w.x + b| / ||w||_2 (||w||_1)."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, generator=gen)
    b = 0.3
    net = nn.Linear(dim, 2)
    with torch.no_grad():
        net.weight.copy_(torch.stack([-w, w]) / 2)
        net.bias.copy_(torch.tensor([-b, b]) / 2)
    model = ModelWrapper(net, num_classes=2, input_shape=(dim,), bounds=(-10.0, 10.0))
    x = torch.randn(n, dim, generator=gen)
    margin = (x @ w + b).abs()
    exact = {"l2": margin / w.norm(p=2), "linf": margin / w.norm(p=1)}
    return model, x, model.predict(x), exact


def correct_subset(model, x, y):
    keep = model.predict(x) == y
    return x[keep], y[keep]


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_deepfool_linear_model_exact(norm):
    model, x, y, exact = linear_binary()
    result = DeepFool(norm=norm).run(model, x, y)
    assert bool(result.success.all())
    ratio = distance(result.x_adv, x, norm) / exact[norm]
    assert float(ratio.min()) >= 1.0 - 1e-4 and float(ratio.max()) <= 1.02 + 0.01, ratio
    assert bool((model.predict(result.x_adv) != y).all())


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_deepfool_digits_valid(digits, digits_model, norm):
    _, test = digits
    x, y = test.x, test.y
    result = DeepFool(norm=norm).run(digits_model, x, y)
    assert result.x_adv.shape == x.shape and result.x_adv.dtype == x.dtype
    assert float(result.x_adv.min()) >= 0.0 and float(result.x_adv.max()) <= 1.0
    assert bool((digits_model.predict(result.x_adv)[result.success] != y[result.success]).all())
    assert float(result.success.float().mean()) > 0.95
    unbroken = ~result.success
    assert torch.equal(result.x_adv[unbroken], x[unbroken])


def test_deepfool_matches_torchattacks(digits, digits_model):
    torchattacks = pytest.importorskip("torchattacks")
    _, test = digits
    x, y = correct_subset(digits_model, test.x[:120], test.y[:120])
    ours = DeepFool(max_iter=50, overshoot=0.02).run(digits_model, x, y)
    peer = torchattacks.DeepFool(digits_model, steps=50, overshoot=0.02)(x, y)
    peer_ok = digits_model.predict(peer) != y
    both = ours.success & peer_ok
    assert float(both.float().mean()) > 0.5
    ours_med = float(distance(ours.x_adv, x, "l2")[both].median())
    peer_med = float(distance(peer, x, "l2")[both].median())
    assert abs(ours_med - peer_med) <= 0.1 * peer_med, (ours_med, peer_med)


def test_deepfool_early_stop_saves_queries(digits, digits_model):
    _, test = digits
    result = DeepFool(max_iter=50).run(digits_model, test.x, test.y)
    assert result.queries < 0.2 * 51 * len(test.x)
