"""One contract for every registered evasion attack (``ATTACKS``): each constructor keyword
declares its allowed values and refuses every invalid example of them, and device, dtype,
shape and the model's train/eval mode are kept while seeded runs repeat exactly. A new
attack fails here until it declares its constraints and has an entry in VALID."""

import inspect

import pytest
import torch
from torch import nn

from assay.attacks.evasion import (APGD, ATTACKS, CarliniWagnerL2, EvasionAttack,
                                   HopSkipJump)
from assay.core.model import ModelWrapper
from assay.errors import AssayValueError

# Registry name -> small valid configurations, one per variant worth running.
VALID = {
    "pgd": {"linf": dict(eps=0.1, steps=5, seed=0),
            "l2": dict(eps=0.5, norm="l2", steps=5, seed=0),
            "l1": dict(eps=2.0, norm="l1", steps=5, seed=0)},
    "fgsm": {"linf": dict(eps=0.1), "l2": dict(eps=0.5, norm="l2")},
    "apgd": {"linf-ce": dict(eps=0.1, n_iter=5, seed=0),
             "l2-dlr": dict(eps=0.5, norm="l2", loss="dlr", n_iter=5, seed=0),
             "linf-dlr-t": dict(eps=0.1, loss="dlr-targeted", target_class_rank=2, n_iter=5,
                                seed=0)},
    "apgd-t": {"linf": dict(eps=0.1, n_iter=5, n_target_classes=3, seed=0),
               "l2-no-stop": dict(eps=0.5, norm="l2", n_iter=5, early_stop=False, seed=0),
               "linf-wide": dict(eps=0.1, n_iter=5, n_target_classes=3, wide=True, seed=0)},
    "mifgsm": {"linf": dict(eps=0.1, steps=5),
               "l2-early": dict(eps=0.5, norm="l2", steps=5, early_stop=True)},
    "deepfool": {"l2": dict(max_iter=10), "linf": dict(norm="linf", max_iter=10)},
    "cw": {"l2": dict(max_iter=10, binary_search_steps=2)},
    "fab": {"linf": dict(eps=0.1, n_iter=5, n_target_classes=2, seed=0),
            "l2": dict(eps=0.5, norm="l2", n_iter=5, n_restarts=2, seed=0)},
    "hopskipjump": {"l2": dict(num_iterations=2, init_num_evals=20, seed=0),
                    "linf-eps-t": dict(norm="linf", eps=0.3, targeted=True, num_iterations=2,
                                       init_num_evals=20, init_trials=10, seed=0)},
    "square": {"linf": dict(eps=0.1, n_queries=20, seed=0),
               "l2": dict(eps=0.5, norm="l2", n_queries=20, n_restarts=2, seed=0),
               "linf-screened": dict(eps=0.1, n_queries=20, seed=0, fast_forward=True)},
}
# Rules that join two parameters, which the per-parameter constraints cannot see.
CROSS_PARAMETER = {
    APGD: [dict(eps=0.1, loss="dlr-targeted"), dict(eps=0.1, loss="dlr", targeted=True),
           dict(eps=0.1, targeted=True, target_class_rank=2)],
    HopSkipJump: [dict(init_num_evals=200, max_num_evals=100)],
}
CONFIGS = [pytest.param(name, variant, id=f"{name}-{variant}")
           for name in ATTACKS.names() for variant in VALID.get(name, {"missing": None})]


def attack(name: str, variant: str) -> EvasionAttack:
    settings = VALID.get(name, {}).get(variant)
    assert settings is not None, f"add a small valid configuration of {name!r} to VALID"
    return ATTACKS[name](**settings)


def undeclared_keywords(cls: type) -> set[str]:
    """Constructor keywords without a constraint, and constraints without a keyword."""
    keywords = {p.name for p in inspect.signature(cls.__init__).parameters.values()
                if p.name != "self"}
    return keywords ^ set(cls.constraints)


def test_the_registry_holds_every_attack():
    assert ATTACKS.names() == ["apgd", "apgd-t", "cw", "deepfool", "fab", "fgsm", "hopskipjump",
                               "mifgsm", "pgd", "square"]
    assert ATTACKS.lookup("cw") is CarliniWagnerL2


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_constructor_keyword_declares_its_constraint(name):
    cls = ATTACKS[name]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for n, p in
               inspect.signature(cls.__init__).parameters.items() if n != "self")
    assert not undeclared_keywords(cls), f"{name}: declare constraints for {undeclared_keywords(cls)}"


def test_an_attack_without_constraints_is_caught():
    class Bare(EvasionAttack):
        def __init__(self, *, eps: float = 0.1) -> None:
            self.eps = eps

    assert undeclared_keywords(Bare) == {"eps"}


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_invalid_example_is_refused_naming_its_parameter(name):
    cls = ATTACKS[name]
    valid = next(iter(VALID.get(name, {}).values()), None)
    assert valid is not None, f"add a small valid configuration of {name!r} to VALID"
    for param, constraint in cls.constraints.items():
        for bad in constraint.invalid_examples():
            with pytest.raises(AssayValueError, match=f"'{param}' parameter of"):
                cls(**{**valid, param: bad})
                pytest.fail(f"{name} accepted {param}={bad!r}")


@pytest.mark.parametrize("cls", sorted(CROSS_PARAMETER, key=lambda c: c.__name__))
def test_cross_parameter_rules(cls):
    for bad in CROSS_PARAMETER[cls]:
        with pytest.raises(AssayValueError, match="parameter of"):
            cls(**bad)


@pytest.fixture
def small_model():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Dropout(0.1), nn.Flatten(),
                        nn.Linear(4 * 8 * 8, 10))
    return ModelWrapper(net, num_classes=10, input_shape=(1, 8, 8))


@pytest.mark.parametrize("name,variant", CONFIGS)
def test_contract(name, variant, small_model):
    x = torch.rand(6, 1, 8, 8, dtype=torch.float32)
    y = torch.arange(6) % 10
    small_model.train()  # the attack must run in eval mode and restore train mode
    first = attack(name, variant).run(small_model, x, y)
    assert small_model.training
    second = attack(name, variant).run(small_model, x, y)
    assert torch.equal(first.x_adv, second.x_adv) and torch.equal(first.success, second.success)
    assert first.x_adv.shape == x.shape and first.x_adv.dtype == x.dtype
    assert first.x_adv.device == x.device and first.success.dtype == torch.bool
    assert first.queries > 0
    x_copy = x.clone()
    attack(name, variant)(small_model, x, y)
    assert torch.equal(x, x_copy)


@pytest.mark.parametrize("name,variant", CONFIGS)
def test_empty_batch(name, variant, small_model):
    x, y = torch.rand(0, 1, 8, 8), torch.zeros(0, dtype=torch.long)
    result = attack(name, variant).run(small_model, x, y)
    assert result.x_adv.shape == (0, 1, 8, 8) and result.queries == 0


@pytest.mark.parametrize("name,variant", CONFIGS)
def test_float64_inputs_keep_their_dtype(name, variant, small_model):
    small_model.double()
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    assert attack(name, variant)(small_model, x, torch.zeros(3, dtype=torch.long)).dtype == torch.float64
