"""KernelSHAP and LIME on tabular rows: exact Shapley values against a brute-force sum over
every coalition, efficiency, a linear model's known answer, and bad input."""

import math

import pytest
import torch
from torch import nn

from assay.core.threads import using_threads
from assay.errors import AssayValueError
from assay.explain import LIME, KernelSHAP, explain


@pytest.fixture(autouse=True)
def one_thread():
    with using_threads(1):
        yield


def mlp(features, seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(features, 16), nn.Tanh(), nn.Linear(16, 3)).eval()


def brute_force_shapley(net, x, baseline, target):
    """phi_i = sum over S without i of |S|! (M - |S| - 1)! / M! (f(S + i) - f(S))."""
    features = x.shape[1]
    codes = torch.arange(2 ** features)
    masks = (codes[:, None] >> torch.arange(features)) & 1 == 1  # [2^M, M]
    sizes = masks.sum(1)
    out = torch.zeros(len(x), features, dtype=torch.float64)
    with torch.no_grad():
        for n in range(len(x)):
            rows = torch.where(masks, x[n], baseline[n])
            values = net(rows)[:, target[n]].double()
            for i in range(features):
                without = ~masks[:, i]
                with_i = codes[without] | (1 << i)
                k = sizes[without]
                weight = torch.tensor([math.factorial(s) * math.factorial(features - s - 1)
                                       for s in k.tolist()], dtype=torch.float64)
                out[n, i] = (weight * (values[with_i] - values[without])).sum() / math.factorial(
                    features)
    return out


def test_kernel_shap_is_exact_with_every_coalition():
    net, x = mlp(6), torch.rand(5, 6)
    target = torch.tensor([0, 1, 2, 0, 1])
    baseline = torch.full_like(x, 0.25)
    ours = KernelSHAP(baseline=0.25)(net, x, target)
    assert torch.allclose(ours.double(), brute_force_shapley(net, x, baseline, target), atol=1e-5)


def test_sampled_kernel_shap_is_close_and_efficient():
    net, x = mlp(13, seed=1), torch.rand(3, 13)
    target = torch.zeros(3, dtype=torch.long)
    exact = brute_force_shapley(net, x, torch.zeros_like(x), target)
    ours = KernelSHAP(seed=2)(net, x, target).double()  # 2048 + 26 sampled coalitions
    assert float((ours - exact).abs().max()) < 0.1 * float(exact.abs().max())
    with torch.no_grad():
        gap = (net(x) - net(torch.zeros_like(x)))[:, 0].double()
    assert torch.allclose(ours.sum(1), gap, atol=1e-5)
    again = KernelSHAP(seed=2)(net, x, target)
    assert torch.equal(again.double(), ours)


def test_lime_recovers_a_linear_model_and_ranks_a_nonlinear_one():
    net = nn.Linear(7, 2)
    x = torch.rand(4, 7)
    coefficients = LIME(ridge=0.0)(net, x, 1)
    assert torch.allclose(coefficients, net.weight[1].detach() * x, atol=1e-4)
    mixed = mlp(8)
    rows = torch.rand(6, 8)
    lime = explain(mixed, rows, 0, "lime", settings={"samples": 4000})
    shap = explain(mixed, rows, 0, "kernel_shap")
    agree = torch.stack([torch.corrcoef(torch.stack([lime[i], shap[i]]))[0, 1]
                         for i in range(len(rows))])
    assert float(agree.mean()) > 0.8


def test_tabular_methods_refuse_images_and_bad_settings():
    cnn = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    with pytest.raises(AssayValueError, match="tabular rows"):
        explain(cnn, torch.rand(2, 1, 8, 8), 0, "kernel_shap")
    with pytest.raises(AssayValueError, match="'samples'"):
        KernelSHAP(samples=1)
    with pytest.raises(AssayValueError, match="'width'"):
        LIME(width=0.0)
    with pytest.raises(AssayValueError, match="'ridge'"):
        LIME(ridge=-1.0)
    with pytest.raises(AssayValueError, match="'target'"):
        explain(mlp(4), torch.rand(2, 4), 3, "lime")
