"""One contract for every evasion attack: bad parameters raise, device/dtype/shape are
kept, the model's train/eval mode is restored, and seeded runs repeat exactly.
Add each new attack to ATTACKS."""

import pytest
import torch
from torch import nn

from assay.attacks.evasion import (APGD, FABT, FGSM, MIFGSM, PGD, CarliniWagnerL2, DeepFool,
                                   HopSkipJump, Square)
from assay.core.model import ModelWrapper
from assay.errors import AssayValueError

ATTACKS = {
    "pgd-linf": (lambda **kw: PGD(eps=0.1, steps=5, seed=0, **kw)),
    "pgd-l2": (lambda **kw: PGD(eps=0.5, norm="l2", steps=5, seed=0, **kw)),
    "pgd-l1": (lambda **kw: PGD(eps=2.0, norm="l1", steps=5, seed=0, **kw)),
    "fgsm-linf": (lambda **kw: FGSM(eps=0.1, **kw)),
    "fgsm-l2": (lambda **kw: FGSM(eps=0.5, norm="l2", **kw)),
    "apgd-linf-ce": (lambda **kw: APGD(eps=0.1, n_iter=5, seed=0, **kw)),
    "apgd-l2-dlr": (lambda **kw: APGD(eps=0.5, norm="l2", loss="dlr", n_iter=5, seed=0, **kw)),
    "apgd-linf-dlr-t": (lambda **kw: APGD(eps=0.1, loss="dlr-targeted", target_class_rank=2,
                                          n_iter=5, seed=0, **kw)),
    "mifgsm-linf": (lambda **kw: MIFGSM(eps=0.1, steps=5, **kw)),
    "mifgsm-l2-early": (lambda **kw: MIFGSM(eps=0.5, norm="l2", steps=5, early_stop=True, **kw)),
    "deepfool-l2": (lambda **kw: DeepFool(max_iter=10, **kw)),
    "deepfool-linf": (lambda **kw: DeepFool(norm="linf", max_iter=10, **kw)),
    "cw-l2": (lambda **kw: CarliniWagnerL2(max_iter=10, binary_search_steps=2, **kw)),
    "fabt-linf": (lambda **kw: FABT(eps=0.1, n_iter=5, n_target_classes=2, seed=0, **kw)),
    "fabt-l2": (lambda **kw: FABT(eps=0.5, norm="l2", n_iter=5, n_restarts=2, seed=0, **kw)),
    "hsj-l2": (lambda **kw: HopSkipJump(num_iterations=2, init_num_evals=20, seed=0, **kw)),
    "hsj-linf-eps-t": (lambda **kw: HopSkipJump(norm="linf", eps=0.3, targeted=True,
                                                num_iterations=2, init_num_evals=20,
                                                init_trials=10, seed=0, **kw)),
    "square-linf": (lambda **kw: Square(eps=0.1, n_queries=20, seed=0, **kw)),
    "square-l2": (lambda **kw: Square(eps=0.5, norm="l2", n_queries=20, n_restarts=2, seed=0,
                                      **kw)),
}
BAD_PARAMETERS = {
    "pgd": [dict(eps=-0.1), dict(eps=0.1, norm="l3"), dict(eps=0.1, steps=-1),
            dict(eps=0.1, restarts=0), dict(eps=0.1, step_size=0.0), dict(eps=0.1, seed=-2),
            dict(eps=float("nan")), dict(eps=0.1, targeted="yes"),
            dict(eps=0.1, norm="l1", l1_percentile=100.0)],
    "fgsm": [dict(eps=-0.1), dict(eps=0.1, norm="l1"), dict(eps=float("inf")),
             dict(eps=0.1, targeted=1), dict(eps=0.1, batch_size=0)],
    "apgd": [dict(eps=-0.1), dict(eps=0.1, norm="l1"), dict(eps=0.1, n_iter=-1),
             dict(eps=0.1, n_restarts=0), dict(eps=0.1, loss="hinge"), dict(eps=0.1, rho=1.0),
             dict(eps=0.1, alpha=0.0), dict(eps=0.1, seed=-1), dict(eps=0.1, loss="dlr-targeted"),
             dict(eps=0.1, loss="dlr", targeted=True), dict(eps=0.1, target_class_rank=1),
             dict(eps=0.1, targeted=True, target_class_rank=2)],
    "mifgsm": [dict(eps=-0.1), dict(eps=0.1, norm="l1"), dict(eps=0.1, steps=-1),
               dict(eps=0.1, step_size=0.0), dict(eps=0.1, decay=-1.0),
               dict(eps=0.1, early_stop=None)],
    "deepfool": [dict(norm="l1"), dict(overshoot=-0.1), dict(overshoot=float("nan")),
                 dict(max_iter=0), dict(num_candidates=1), dict(batch_size=0)],
    "cw": [dict(confidence=-1.0), dict(initial_const=0.0), dict(binary_search_steps=0),
           dict(max_iter=0), dict(lr=0.0), dict(lr=float("inf")), dict(abort_early=1),
           dict(targeted="yes"), dict(batch_size=0)],
    "fabt": [dict(eps=0.0), dict(eps=0.1, norm="l1"), dict(eps=0.1, n_iter=0),
             dict(eps=0.1, n_restarts=0), dict(eps=0.1, alpha_max=1.5), dict(eps=0.1, eta=0.9),
             dict(eps=0.1, beta=0.0), dict(eps=0.1, seed=-1), dict(eps=float("nan"))],
    "hsj": [dict(norm="l1"), dict(eps=-0.1), dict(eps=float("nan")), dict(num_iterations=-1),
            dict(max_num_evals=0), dict(init_num_evals=200, max_num_evals=100), dict(gamma=0.0),
            dict(init_trials=0), dict(query_batch_size=0), dict(seed=-1), dict(targeted="yes"),
            dict(early_stop=1), dict(batch_size=0)],
    "square": [dict(eps=0.0), dict(eps=0.1, norm="l1"), dict(eps=0.1, n_queries=0),
               dict(eps=0.1, p_init=0.0), dict(eps=0.1, p_init=1.5), dict(eps=0.1, n_restarts=0),
               dict(eps=0.1, loss="dlr"), dict(eps=0.1, targeted=1), dict(eps=0.1, seed=-1),
               dict(eps=float("nan")), dict(eps=0.1, batch_size=0)],
}
CONSTRUCTORS = {"pgd": PGD, "fgsm": FGSM, "apgd": APGD, "mifgsm": MIFGSM, "deepfool": DeepFool,
                "cw": CarliniWagnerL2, "fabt": FABT, "square": Square, "hsj": HopSkipJump}


@pytest.fixture
def small_model():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Dropout(0.1), nn.Flatten(),
                        nn.Linear(4 * 8 * 8, 10))
    return ModelWrapper(net, num_classes=10, input_shape=(1, 8, 8))


@pytest.mark.parametrize("family", sorted(BAD_PARAMETERS))
def test_bad_parameters_raise_naming_the_parameter(family):
    for bad in BAD_PARAMETERS[family]:
        with pytest.raises(AssayValueError, match="parameter of"):
            CONSTRUCTORS[family](**bad)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_contract(name, small_model):
    x = torch.rand(6, 1, 8, 8, dtype=torch.float32)
    y = torch.arange(6) % 10
    small_model.train()  # the attack must run in eval mode and restore train mode
    first = ATTACKS[name]().run(small_model, x, y)
    assert small_model.training
    second = ATTACKS[name]().run(small_model, x, y)
    assert torch.equal(first.x_adv, second.x_adv) and torch.equal(first.success, second.success)
    assert first.x_adv.shape == x.shape and first.x_adv.dtype == x.dtype
    assert first.x_adv.device == x.device and first.success.dtype == torch.bool
    assert first.queries > 0
    x_copy = x.clone()
    ATTACKS[name]()(small_model, x, y)
    assert torch.equal(x, x_copy)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_empty_batch(name, small_model):
    x, y = torch.rand(0, 1, 8, 8), torch.zeros(0, dtype=torch.long)
    result = ATTACKS[name]().run(small_model, x, y)
    assert result.x_adv.shape == (0, 1, 8, 8) and result.queries == 0


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_float64_inputs_keep_their_dtype(name, small_model):
    small_model.double()
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    assert ATTACKS[name]()(small_model, x, torch.zeros(3, dtype=torch.long)).dtype == torch.float64
