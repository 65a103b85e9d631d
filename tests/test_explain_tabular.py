"""KernelSHAP and LIME on tabular rows: exact Shapley values against a brute-force sum over
every coalition and captum's ShapleyValues, captum's KernelShap and Lime on the same
perturbations, efficiency, a linear model's known answer, and bad input."""

import math
import warnings

import pytest
import torch
from torch import nn

from assay.core.rng import seeded_generator
from assay.core.threads import using_threads
from assay.errors import AssayValueError
from assay.explain import LIME, KernelSHAP, explain
from assay.explain.kernel_shap import coalitions
from assay.explain.lime import perturbations

captum_attr = pytest.importorskip("captum.attr")
captum_linear = pytest.importorskip("captum._utils.models.linear_model")
captum_lime = pytest.importorskip("captum.attr._core.lime")


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


def replay(*masks: torch.Tensor):
    """A captum ``perturb_func`` that yields the given masks [S, M] (bool) one row at a
    time, in order: captum then fits on exactly the perturbations assay drew."""
    def generator(_inputs, **_kwargs):
        for block in masks:
            yield from (row[None].long() for row in block)
    return generator


def seeded_rows(n, features):
    return torch.rand(n, features, generator=torch.Generator().manual_seed(features))


def relative_gap(ours, theirs):
    return float((ours - theirs).abs().max() / theirs.abs().max())


@pytest.fixture
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # captum: one model per row is slow; grads not required
        yield


def test_exact_kernel_shap_equals_captum_shapley_values(quiet):
    net, x = mlp(5, seed=2), seeded_rows(3, 5)
    target = torch.tensor([0, 1, 2])
    theirs = captum_attr.ShapleyValues(net).attribute(x, target=target, baselines=0.0)
    gap = relative_gap(KernelSHAP()(net, x, target), theirs)
    assert gap < 1e-5, gap  # measured 4.5e-7


def test_sampled_kernel_shap_equals_captum_on_the_same_coalitions(quiet):
    """captum's KernelShap is its Lime with the kernel-SHAP similarity (weight 1, and 1e6
    for the full and empty coalitions it always adds) and an unpenalised linear regression;
    assay imposes efficiency exactly instead of through those two heavy rows, which moves
    the values by under 1e-6 of the largest."""
    net, x = mlp(10, seed=1), seeded_rows(4, 10)
    target = torch.tensor([0, 1, 2, 0])
    samples, seed = 300, 3
    ours = KernelSHAP(samples=samples, seed=seed)(net, x, target)
    drawn, _ = coalitions(10, samples, seeded_generator(seed))
    ends = torch.stack([torch.ones(10, dtype=torch.bool), torch.zeros(10, dtype=torch.bool)])
    kernel = captum_attr.KernelShap(net).kernel_shap_similarity_kernel
    captum = captum_attr.Lime(net, interpretable_model=captum_linear.SkLearnLinearRegression(),
                              similarity_func=kernel, perturb_func=replay(ends, drawn))
    theirs = captum.attribute(x, target=target, baselines=0.0, n_samples=samples + 2,
                               perturbations_per_eval=128)
    gap = relative_gap(ours, theirs)
    assert gap < 1e-5, gap  # measured 6.7e-7


@pytest.mark.parametrize("ridge", [1.0, 0.0])
def test_lime_equals_captum_on_the_same_perturbations(quiet, ridge):
    """captum's exponential kernel on the Euclidean distance in input space is assay's on
    the binary space when every removed feature moves by 1 (baseline x - 1); assay's ridge
    fit is sklearn's Ridge (intercept unpenalised), and with ridge 0 its LinearRegression."""
    net, x = mlp(10, seed=1), seeded_rows(4, 10)
    target = torch.tensor([0, 1, 2, 0])
    samples, seed = 500, 4
    ours = LIME(samples=samples, seed=seed, ridge=ridge, baseline=x - 1)(net, x, target)
    surrogate = (captum_linear.SkLearnRidge(alpha=ridge) if ridge
                 else captum_linear.SkLearnLinearRegression())
    kernel = captum_lime.get_exp_kernel_similarity_function(
        "euclidean", kernel_width=0.75 * math.sqrt(10))  # LIME's default width
    captum = captum_attr.Lime(net, interpretable_model=surrogate, similarity_func=kernel,
                              perturb_func=replay(perturbations(10, samples,
                                                                seeded_generator(seed))))
    theirs = captum.attribute(x, target=target, baselines=x - 1, n_samples=samples,
                               perturbations_per_eval=128)
    gap = relative_gap(ours, theirs)
    assert gap < 1e-5, gap  # measured 5.9e-7 (ridge 1), 6.2e-7 (ridge 0)


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
