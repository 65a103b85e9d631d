"""The standard and quick evaluations, and the diagnostics that flag a masked model."""

import pytest
import torch
from torch import nn

from assay.attacks.evasion import (APGD, FABT, ExpectationOverTransformation, Square,
                                   evaluate_robustness)
from assay.attacks.evasion import diagnostics as diag
from assay.attacks.evasion.evaluation import (Stage, concatenate_evaluations, quick_stages,
                                             standard_stages)
from assay.audit.plan import plan_from_dict
from assay.audit.runner import run_audit
from assay.core.model import ModelWrapper
from assay.errors import AssayValueError
from assay.report.writers import render_html


class Quantised(nn.Module):
    """Input quantisation in front of a network: its gradient is zero almost everywhere."""

    def __init__(self, net: nn.Module, levels: int = 4) -> None:
        super().__init__()
        self.net, self.levels = net, levels

    def forward(self, x):
        return self.net(torch.round(x * self.levels) / self.levels)


class Saturated(nn.Module):
    """Softmax probabilities scaled up to look like logits: the loss saturates."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return 1000 * torch.softmax(10 * self.net(x), dim=1)


@pytest.fixture
def points(digits, digits_model):
    _, test = digits
    x, y = test.x[:120], test.y[:120]
    return x, y


def test_eps_zero_gives_clean_accuracy_exactly(digits_model, points):
    x, y = points
    result = evaluate_robustness(digits_model, x, y, eps=0.0, mode="standard")
    assert result.stages == [] and torch.equal(result.robust, result.clean_correct)
    assert result.robust_accuracy == result.clean_accuracy


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.5)])
def test_standard_is_at_least_as_strong_as_each_part(digits_model, points, norm, eps):
    x, y = points
    result = evaluate_robustness(digits_model, x, y, eps=eps, norm=norm, mode="standard")
    assert [s.name for s in result.stages] == ["APGD-CE", "APGD-T", "FAB-T", "Square"]
    assert result.stages[1].budget == "100 steps x 9 target classes"
    # Every part alone, on all points, with the settings the ensemble uses.
    for stage in standard_stages(eps=eps, norm=norm, num_classes=10):
        alone = evaluate_robustness(digits_model, x, y, eps=eps, norm=norm, stages=[stage])
        assert result.robust_accuracy <= alone.robust_accuracy, stage.name
    assert result.robust_accuracy < result.clean_accuracy
    # The worst case is verified: inside the ball, inside the bounds, misclassified.
    broken = result.clean_correct & ~result.robust
    assert bool((digits_model(result.x_adv[broken]).argmax(1) != y[broken]).all())
    size = (result.x_adv - x).flatten(1)
    size = size.abs().amax(1) if norm == "linf" else size.norm(dim=1)
    assert float(size.max()) <= eps * (1 + 1e-5)
    assert float(result.x_adv.min()) >= 0 and float(result.x_adv.max()) <= 1
    # Each stage attacks only what the earlier ones left robust.
    left = int(result.clean_correct.sum())
    for stage in result.stages:
        assert stage.attacked == left
        left -= stage.broken
    assert left == int(result.robust.sum())


def test_standard_is_no_weaker_than_torchattacks_autoattack(digits_net, digits_model, points):
    """torchattacks' AutoAttack composition with 100 APGD steps (its own default passes 10)."""
    torchattacks = pytest.importorskip("torchattacks")
    x, y = points
    eps = 0.1
    ours = evaluate_robustness(digits_model, x, y, eps=eps, mode="standard", seed=0)
    peer = torchattacks.MultiAttack([
        torchattacks.APGD(digits_net, eps=eps, norm="Linf", steps=100, loss="ce", n_restarts=1,
                          seed=0),
        torchattacks.APGDT(digits_net, eps=eps, norm="Linf", steps=100, n_classes=10,
                           n_restarts=1, seed=0),
        torchattacks.FAB(digits_net, eps=eps, norm="Linf", steps=100, multi_targeted=True,
                         n_classes=10, n_restarts=1, seed=0),
        torchattacks.Square(digits_net, eps=eps, norm="Linf", n_queries=5000, n_restarts=1,
                            seed=0)])
    x_peer = peer(x, y)
    with torch.no_grad():
        peer_accuracy = float((digits_net(x_peer).argmax(1) == y).float().mean())
    # Measured: 0.533 (ours) vs 0.542 (torchattacks) on these 120 digits.
    assert ours.robust_accuracy <= peer_accuracy


def test_quick_mode_states_a_smaller_budget(digits_model, points):
    x, y = points
    quick = evaluate_robustness(digits_model, x, y, eps=0.1, mode="quick")
    assert [(s.name, s.budget) for s in quick.stages] == [
        ("APGD-CE", "20 steps"), ("APGD-T", "20 steps x 3 target classes"),
        ("Square", "500 queries, p_init 0.8")]
    assert quick.stages[-1].black_box and not quick.stages[0].black_box
    assert quick.robust_accuracy < quick.clean_accuracy
    assert quick.queries == sum(s.queries for s in quick.stages) > 0


def test_stages_follow_the_class_count():
    two = standard_stages(eps=0.1, norm="linf", num_classes=2)
    assert [s.name for s in two] == ["APGD-CE", "FAB-T", "Square"]  # DLR-T needs 4 logits
    assert two[1].budget == "100 steps x 1 target classes"
    five = quick_stages(eps=0.1, norm="l2", num_classes=5)
    assert five[1].budget == "20 steps x 3 target classes"
    assert isinstance(five[0].attack, APGD) and isinstance(five[-1].attack, Square)
    assert isinstance(standard_stages(eps=0.1, norm="linf", num_classes=10)[2].attack, FABT)


def test_bad_arguments_are_refused(digits_model, points):
    x, y = points
    for bad in (dict(eps=-0.1), dict(eps=0.1, mode="full"), dict(eps=0.1, norm="l1"),
                dict(eps=0.1, batch_size=0)):
        with pytest.raises(AssayValueError, match="parameter of evaluate_robustness"):
            evaluate_robustness(digits_model, x, y, **bad)
    with pytest.raises(AssayValueError, match="one label per input"):
        evaluate_robustness(digits_model, x, y[:5], eps=0.1)


def test_a_faulty_attack_is_caught(digits_model, points):
    """The final verdict re-checks the ball: an attack that oversteps is an error."""

    class Cheat(APGD):
        def _run(self, model, x, y, lo, hi):
            result = super()._run(model, x, y, lo, hi)
            return type(result)(torch.zeros_like(x), torch.ones_like(result.success),
                                result.queries)

    x, y = points
    cheat = Stage("cheat", "1 step", Cheat(eps=0.1, n_iter=1))
    with pytest.raises(AssayValueError, match="leave the linf ball"):
        evaluate_robustness(digits_model, x, y, eps=0.1, stages=[cheat])


def test_empty_input(digits_model):
    result = evaluate_robustness(digits_model, torch.zeros(0, 1, 8, 8),
                                 torch.zeros(0, dtype=torch.long), eps=0.1, mode="quick")
    assert len(result.robust) == 0


# ------------------------------------------------------------------------ diagnostics
def test_curve_shape_flags_a_rising_curve():
    flagged = diag.curve_shape("linf", [0.0, 0.1, 0.2], [0.9, 0.5, 0.7], 0.9, 100)
    assert [(d.code, d.passed) for d in flagged] == [("eps0", True), ("monotone", False)]
    fine = diag.curve_shape("linf", [0.0, 0.1, 0.2], [0.9, 0.5, 0.505], 0.9, 100)
    assert all(d.passed for d in fine)  # a rise of half a sample is not counted
    assert not diag.curve_shape("l2", [0.0], [0.8], 0.9, 10)[0].passed


def test_gradient_health_finds_zero_and_nan_gradients(digits_net, points):
    x, y = points
    healthy = ModelWrapper(digits_net, num_classes=10, input_shape=(1, 8, 8))
    assert diag.gradient_health(healthy, x, y).passed
    masked = diag.gradient_health(Quantised(digits_net), x, y)
    assert not masked.passed and masked.values["zero"] == len(x)

    class NaNGrad(nn.Module):
        def forward(self, x):
            return digits_net(torch.sqrt(x - 0.5))  # NaN below 0.5

    broken = diag.gradient_health(NaNGrad(), x + 0.0, y)
    assert not broken.passed and "NaN" in broken.message


def _robustness_findings(model, test, mode):
    plan = plan_from_dict({"checks": [{"name": "robustness", "params": {
        "norms": ["linf"], "eps": [0.0, 0.1, 0.2], "mode": mode, "n": 150}}]})
    result = run_audit(model, test, plan, progress=False)
    check = result.checks[0]
    return check, {f.code for f in check.findings if f.level == "warn"}


@pytest.mark.parametrize("mode", ["pgd", "quick"])
def test_normally_trained_model_passes_every_diagnostic(digits, digits_model, mode):
    _, test = digits
    check, warned = _robustness_findings(digits_model, test, mode)
    assert warned == set() and check.status == "pass"
    passed = next(f for f in check.findings if f.code == "diagnostics_passed").message
    for code in ("gradients", "unbounded_eps", "single_step", "random_noise", "black_box",
                 "convergence", "eps0", "monotone"):
        assert code in passed


@pytest.mark.parametrize("wrapper,expected", [
    (Quantised, {"gradients", "unbounded_eps", "black_box", "random_noise"}),
    (Saturated, {"gradients", "unbounded_eps"}),
])
@pytest.mark.parametrize("mode", ["pgd", "quick"])
def test_gradient_masked_models_are_flagged(digits, digits_net, wrapper, expected, mode):
    _, test = digits
    model = ModelWrapper(wrapper(digits_net), num_classes=10, input_shape=(1, 8, 8))
    check, warned = _robustness_findings(model, test, mode)
    assert expected <= warned, warned
    assert check.status == "warn"
    assert any("Gradient masking suspected" in f.message for f in check.findings)


def test_check_reports_mode_budget_and_probe_curves(digits, digits_model):
    _, test = digits
    plan = plan_from_dict({"checks": [{"name": "robustness", "params": {
        "norms": ["linf"], "eps": [0.0, 0.1], "mode": "quick", "n": 60},
        "gates": ["robust_accuracy@linf=0.1 >= 0.0"]}]})
    result = run_audit(digits_model, test, plan, progress=False)
    check = result.checks[0]
    evaluation = next(f for f in check.findings if f.code == "evaluation")
    assert "quick ensemble on 60 points" in evaluation.message
    assert "Square 500 queries" in evaluation.message
    stages = check.details["curves"]["linf"]["stages"]["0.1"]
    assert [s["name"] for s in stages] == ["APGD-CE", "APGD-T", "Square"]
    page = render_html(result)
    assert "quick ensemble" in page and "diagnostics_passed" in page


# ------------------------------------------------------------------------ EOT
class NoisyInput(nn.Module):
    """A randomised defence: Gaussian noise on the input in every forward pass."""

    def __init__(self, net: nn.Module, sigma: float = 0.1) -> None:
        super().__init__()
        self.net, self.sigma = net, sigma

    def forward(self, x):
        return self.net(x + self.sigma * torch.randn_like(x))


def test_eot_averages_passes_and_keeps_the_model_description(digits_net, points):
    x, _ = points
    plain = ModelWrapper(digits_net, num_classes=10, input_shape=(1, 8, 8))
    assert torch.allclose(ExpectationOverTransformation(plain, 5)(x), plain(x), atol=1e-5)
    noisy = ModelWrapper(NoisyInput(digits_net), num_classes=10, input_shape=(1, 8, 8))
    eot = ExpectationOverTransformation(noisy, 50)
    assert eot.bounds == noisy.bounds and eot.num_classes == 10
    torch.manual_seed(0)
    one_pass_spread = (noisy(x) - noisy(x)).abs().mean()
    eot_spread = (eot(x) - eot(x)).abs().mean()
    assert eot_spread < one_pass_spread / 4  # about 1/sqrt(50) of it
    with pytest.raises(AssayValueError, match="'samples'"):
        ExpectationOverTransformation(noisy, 0)


def test_stochastic_model_is_evaluated_with_eot(digits, digits_net):
    _, test = digits
    model = ModelWrapper(NoisyInput(digits_net), num_classes=10, input_shape=(1, 8, 8))
    plan = plan_from_dict({"checks": [{"name": "robustness", "params": {
        "eps": [0.1], "mode": "pgd", "steps": 5, "n": 40, "diagnostics": False}}]})
    check = run_audit(model, test, plan, progress=False).checks[0]
    assert check.details["eot_samples"] == 20
    assert "averages 20 forward passes (EOT)" in check.findings[0].message
    assert check.status == "warn"  # results of a stochastic model vary between runs


def test_channels_last_changes_speed_not_results(digits_model, points):
    x, y = points
    fast = evaluate_robustness(digits_model, x, y, eps=0.1, mode="quick", channels_last=True)
    plain = evaluate_robustness(digits_model, x, y, eps=0.1, mode="quick", channels_last=False)
    assert abs(fast.robust_accuracy - plain.robust_accuracy) <= 1 / len(x)
    assert fast.x_adv.is_contiguous()
    first = next(digits_model.parameters())
    assert first.is_contiguous()  # the caller's model keeps its layout


def test_attacks_run_a_channels_last_copy_unless_the_layout_is_kept(digits_model, points,
                                                                   monkeypatch):
    from assay.attacks.evasion import PGD
    from assay.core import inference
    from assay.attacks.evasion import base
    x, y = points
    copies = []
    real_copy = inference.channels_last_copy

    def counted(model):
        copies.append(model)
        return real_copy(model)

    monkeypatch.setattr(base, "channels_last_copy", counted)
    fast = PGD(eps=0.1, steps=5, seed=0).run(digits_model, x, y)
    assert len(copies) == 1 and next(digits_model.parameters()).is_contiguous()
    with inference.layout_kept():
        plain = PGD(eps=0.1, steps=5, seed=0).run(digits_model, x, y)
    assert len(copies) == 1  # none inside layout_kept()
    assert (fast.success != plain.success).sum() <= 1  # float rounding only
    # a copy made upstream (as evaluate_robustness makes one) is not copied again
    PGD(eps=0.1, steps=2, seed=0).run(real_copy(digits_model), x, y)
    assert len(copies) == 1


# --------------------------------------------------------------------- shards
def test_shards_concatenate_into_one_evaluation(digits_model, points):
    x, y = (t[:60] for t in points)
    whole = evaluate_robustness(digits_model, x, y, eps=0.1, mode="quick", seed=0)
    parts = [evaluate_robustness(digits_model, x[a:b], y[a:b], eps=0.1, mode="quick", seed=0)
             for a, b in ((0, 25), (25, 60))]
    joined = concatenate_evaluations(parts)
    assert torch.equal(joined.clean_correct, whole.clean_correct)
    assert joined.x_adv.shape == x.shape and len(joined.robust) == len(x)
    for stage, (a, b) in zip(joined.stages, zip(parts[0].stages, parts[1].stages)):
        assert stage.name == a.name
        assert (stage.attacked, stage.broken) == (a.attacked + b.attacked, a.broken + b.broken)
    assert joined.robust_accuracy == float(torch.cat([p.robust for p in parts]).float().mean())
    # every broken point's adversarial example stays in the ball
    broken = joined.clean_correct & ~joined.robust
    assert float((joined.x_adv[broken] - x[broken]).abs().amax()) <= 0.1 + 1e-6
    with pytest.raises(AssayValueError, match="no evaluations"):
        concatenate_evaluations([])


def test_the_check_in_shards_keeps_clean_accuracy_and_reports_every_point(digits, digits_model):
    _, test = digits
    runs = {}
    for shards in (1, 3):
        plan = plan_from_dict({"checks": [{"name": "robustness", "params": {
            "eps": [0.0, 0.1], "mode": "quick", "n": 61, "shards": shards,
            "diagnostics": False}}]})
        runs[shards] = run_audit(digits_model, test, plan, progress=False).checks[0]
    one, three = runs[1], runs[3]
    assert three.metrics["clean_accuracy"] == one.metrics["clean_accuracy"]
    assert three.metrics["robust_accuracy@linf=0"] == one.metrics["clean_accuracy"]
    stages = three.details["curves"]["linf"]["stages"]["0.1"]
    assert stages[0]["attacked"] == round(61 * one.metrics["clean_accuracy"])
    # the shards' own seeds change the draws, not the strength beyond the seed spread
    assert abs(three.metrics["robust_accuracy@linf=0.1"]
               - one.metrics["robust_accuracy@linf=0.1"]) <= 0.1
