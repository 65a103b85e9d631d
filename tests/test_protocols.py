"""Robustness protocols: named evaluations that take eps once, and the thin check on top."""

import pytest
import torch
from torch import nn

from assay.attacks.evasion import PGD, Square, evaluate_robustness
from assay.attacks.evasion import diagnostics as diag
from assay.attacks.evasion.evaluation import (APGDCrossEntropy, Ensemble, PGDRestarts, Protocol,
                                              SingleStep, SquareOnly, Stage)
from assay.audit.plan import plan_from_dict
from assay.audit.runner import run_audit
from assay.checks.robustness import protocol_for
from assay.core.model import ModelWrapper
from assay.core.threads import using_threads
from assay.errors import AssayValueError


@pytest.fixture
def points(digits):
    _, test = digits
    return test.x[:60], test.y[:60]


def test_a_protocol_equals_its_stages_built_by_hand(digits_model, points):
    x, y = points
    by_protocol = evaluate_robustness(digits_model, x, y, eps=0.1, seed=3, batch_size=32,
                                      mode=PGDRestarts(steps=5, restarts=2))
    attack = PGD(eps=0.1, steps=5, restarts=2, seed=3, batch_size=32)
    by_hand = evaluate_robustness(digits_model, x, y, eps=0.1, batch_size=32,
                                  stages=[Stage("PGD", "5 steps x 2 restarts", attack)])
    assert torch.equal(by_protocol.robust, by_hand.robust)
    assert torch.equal(by_protocol.x_adv, by_hand.x_adv)
    assert [(s.name, s.budget) for s in by_protocol.stages] == [("PGD", "5 steps x 2 restarts")]


def test_the_stages_are_built_for_the_evaluated_radius(digits_model, points):
    """eps is given once: the attacks and the final check of the ball use the same one."""
    x, y = points
    seen = []

    class Recording(PGDRestarts):
        def stages(self, *, eps, norm, num_classes, seed, batch_size):
            seen.append((eps, norm, num_classes, seed, batch_size))
            return super().stages(eps=eps, norm=norm, num_classes=num_classes, seed=seed,
                                  batch_size=batch_size)

    for eps in (0.0, 0.05, 0.2):
        evaluate_robustness(digits_model, x, y, eps=eps, norm="linf", seed=1, batch_size=16,
                            mode=Recording(steps=2))
    assert seen == [(0.05, "linf", 10, 1, 16), (0.2, "linf", 10, 1, 16)]  # none at eps 0


def test_protocol_settings_are_validated():
    with pytest.raises(AssayValueError, match="'steps' parameter of PGDRestarts"):
        PGDRestarts(steps=-1)
    with pytest.raises(AssayValueError, match="'restarts' parameter of PGDRestarts"):
        PGDRestarts(restarts=0)
    with pytest.raises(AssayValueError, match="'queries' parameter of SquareOnly"):
        SquareOnly(queries=0)
    with pytest.raises(AssayValueError, match="'mode' parameter of Ensemble"):
        Ensemble("full")


def test_square_only_runs_where_white_box_protocols_refuse(digits, digits_net):
    _, test = digits

    class NoGrad(nn.Module):
        def forward(self, x):
            return digits_net(x).detach()

    model = ModelWrapper(NoGrad(), num_classes=10, input_shape=(1, 8, 8))
    x, y = test.x[:20], test.y[:20]
    with pytest.raises(AssayValueError, match="carry no gradient.*SquareOnly"):
        evaluate_robustness(model, x, y, eps=0.1, mode=PGDRestarts())
    result = evaluate_robustness(model, x, y, eps=0.1, mode=SquareOnly(queries=50))
    assert [(s.name, s.budget, s.black_box) for s in result.stages] == [
        ("Square", "50 queries, p_init 0.8", True)]
    plain = evaluate_robustness(ModelWrapper(digits_net, num_classes=10, input_shape=(1, 8, 8)),
                                x, y, eps=0.1, stages=[Stage("Square", "", Square(
                                    eps=0.1, n_queries=50, p_init=0.8, seed=0), black_box=True)])
    assert torch.equal(result.robust, plain.robust)


def test_protocols_name_their_probes():
    pgd = PGDRestarts(steps=20, restarts=1)
    assert pgd.label == "PGD-20, 1 restart(s)"
    assert pgd.convergence_probe() == PGDRestarts(steps=40, restarts=2)
    assert PGDRestarts(steps=3).convergence_probe() == PGDRestarts(steps=10, restarts=2)
    assert pgd.black_box_probe() == SquareOnly(queries=1000)
    assert Ensemble("standard").convergence_probe() == APGDCrossEntropy(steps=200)
    assert Ensemble("quick").convergence_probe() == APGDCrossEntropy(steps=40)
    assert Ensemble("quick").label == "quick ensemble"
    assert SquareOnly().label == "Square only (no gradients)"
    assert SingleStep().convergence_probe() is None
    assert isinstance(SingleStep(), Protocol)


def test_the_check_maps_its_parameters_to_a_protocol():
    assert protocol_for({"mode": "pgd", "steps": 7, "restarts": 3}) == PGDRestarts(7, 3)
    assert protocol_for({"mode": "quick", "steps": 7, "restarts": 3}) == Ensemble("quick")
    assert protocol_for({"mode": "standard", "steps": 20, "restarts": 1}) == Ensemble()


def test_check_metrics_are_the_protocols_numbers(digits, digits_model):
    _, test = digits
    plan = plan_from_dict({"checks": [{"name": "robustness", "params": {
        "norms": ["linf"], "eps": [0.0, 0.1], "mode": "pgd", "steps": 5, "n": 60,
        "batch_size": 32}}]})
    check = run_audit(digits_model, test, plan, progress=False, threads=1).checks[0]
    x, y = test.x[:60], test.y[:60]
    direct = evaluate_robustness(digits_model, x, y, eps=0.1, seed=0, batch_size=32,
                                 mode=PGDRestarts(steps=5))
    assert check.metrics["robust_accuracy@linf=0.1"] == direct.robust_accuracy
    assert check.metrics["clean_accuracy"] == direct.clean_accuracy
    codes = {d["code"] for d in check.details["diagnostics"]}
    assert {"convergence", "black_box", "unbounded_eps", "single_step", "random_noise",
            "eps0", "gradients"} <= codes


def test_diagnose_norm_runs_the_protocols_probes(digits_model, points):
    x, y = points[0][:30], points[1][:30]
    protocol = PGDRestarts(steps=5)
    with using_threads(1):  # many small operators: one thread is the fast choice here
        results = {eps: evaluate_robustness(digits_model, x, y, eps=eps, mode=protocol)
                   for eps in (0.0, 0.1)}
        found, curves = diag.diagnose_norm(digits_model, x, y, norm="linf", results=results,
                                           protocol=protocol)
    by_code = {d.code: d for d in found}
    assert by_code["convergence"].values["attack"] == "PGD (10 steps x 2 restarts)"
    assert by_code["black_box"].values["attack"] == "Square (1000 queries, p_init 0.8)"
    assert set(curves) == {"FGSM", "random noise"} and len(curves["FGSM"]) == 2
    assert curves["FGSM"][0] == results[0.0].robust_accuracy  # eps 0: nothing moves
