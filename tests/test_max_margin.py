"""The maximum-margin scan (MM-BD): margins a linear program bounds, the p-value of the
largest, and a planted trojan flagged."""

import pytest
import torch
from scipy.optimize import linprog
from torch import nn

from assay.defenses.backdoor import MarginScan, MaxMargin, margin_p_value
from assay.errors import AssayValueError


def _linear_optimum(layer: nn.Linear, k: int) -> float:
    """max over x in [0, 1]^d of min over j != k of (w_k - w_j) x + b_k - b_j, by linprog:
    maximise t subject to t <= that for every j."""
    w, b = layer.weight.detach().double().numpy(), layer.bias.detach().double().numpy()
    d = w.shape[1]
    rows, rhs = [], []
    for j in range(len(w)):
        if j != k:
            rows.append([*(-(w[k] - w[j])), 1.0])  # t - (w_k - w_j) x <= b_k - b_j
            rhs.append(b[k] - b[j])
    result = linprog(c=[0.0] * d + [-1.0], A_ub=rows, b_ub=rhs,
                     bounds=[(0, 1)] * d + [(None, None)])
    return -result.fun


def test_on_a_linear_model_the_margins_reach_the_linear_programs_optimum_and_never_exceed_it():
    torch.manual_seed(0)
    layer = nn.Linear(12, 5)
    model = nn.Sequential(nn.Flatten(), layer)
    scan = MaxMargin(steps=2000, lr=0.05, starts=8).scan(model, (1, 3, 4))
    optimum = torch.tensor([_linear_optimum(layer, k) for k in range(5)], dtype=torch.float64)
    assert bool((scan.margins <= optimum + 1e-5).all())  # clamped inputs: the bound holds
    assert torch.allclose(scan.margins, optimum, atol=2e-3)


def test_the_p_value_of_an_outlier_is_small_and_of_a_typical_maximum_is_not():
    gen = torch.Generator().manual_seed(0)
    null = torch.distributions.Gamma(5.0, 0.5).sample((9,))
    typical = torch.cat([null, null.max(0, keepdim=True).values - 0.1])
    assert margin_p_value(typical) > 0.2
    outlier = torch.cat([null, torch.tensor([null.max() * 4])])
    assert margin_p_value(outlier) < 1e-3
    assert margin_p_value(outlier[torch.randperm(10, generator=gen)]) == pytest.approx(
        margin_p_value(outlier))
    # others that do not vary: the largest is an outlier exactly when it exceeds them
    assert margin_p_value(torch.tensor([3.0] * 9 + [4.0])) == 0.0
    assert margin_p_value(torch.tensor([3.0] * 10)) == 1.0


def test_a_class_the_model_favours_everywhere_is_flagged_and_a_symmetric_model_is_not():
    class Backdoored(nn.Module):
        """Ten linear classes; class 6 also fires hard on a corner patch."""

        def __init__(self, planted: bool):
            super().__init__()
            torch.manual_seed(1)
            self.linear = nn.Linear(64, 10)
            self.planted = planted

        def forward(self, x):
            logits = self.linear(x.flatten(1))
            if self.planted:
                patch = x[:, 0, -3:, -3:].flatten(1).mean(1)
                logits = logits + torch.nn.functional.one_hot(
                    torch.full((len(x),), 6), 10) * 30 * torch.relu(patch - 0.5)[:, None]
            return logits

    planted = MaxMargin(steps=200).scan(Backdoored(True), (1, 8, 8))
    assert planted.suspected_target == 6 and planted.top_class == 6
    assert planted.p_value < 1e-3
    clean = MaxMargin(steps=200).scan(Backdoored(False), (1, 8, 8))
    assert clean.suspected_target == -1 and clean.p_value >= 0.05
    assert isinstance(clean, MarginScan) and clean.seconds_per_class > 0


def test_bad_settings_and_models_are_refused():
    with pytest.raises(AssayValueError, match="'alpha'"):
        MaxMargin(alpha=1.5)
    with pytest.raises(AssayValueError, match="'starts'"):
        MaxMargin(starts=0)
    with pytest.raises(AssayValueError, match="2 classes"):
        MaxMargin(steps=2).scan(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), (1, 2, 2))
    with pytest.raises(AssayValueError, match="high > low"):
        MaxMargin(steps=2).scan(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), (1, 2, 2),
                                bounds=(1.0, 1.0))

    class Exploding(nn.Module):
        def forward(self, x):
            return torch.full((len(x), 4), float("nan")) + x.flatten(1)[:, :1]

    with pytest.raises(AssayValueError, match="NaN"):
        MaxMargin(steps=2).scan(Exploding(), (1, 2, 2))
