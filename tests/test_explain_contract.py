"""One contract for every registered attribution method (``EXPLAINERS``): each constructor
keyword declares its allowed values as data and refuses every invalid example of them with
an error naming that keyword; a run keeps the shape and dtype, restores the model's
train/eval mode and repeats exactly. A new method fails here until it declares its
constraints."""

import inspect

import pytest
import torch
from torch import nn

from assay.errors import AssayValueError
from assay.explain import EXPLAINERS, Explainer
from assay.explain._base import Baseline, Sides

TABULAR = ("kernel_shap", "lime")  # tabular rows only; the others also take images


def undeclared_keywords(cls: type) -> set[str]:
    """Constructor keywords without a constraint, and constraints without a keyword."""
    keywords = {p.name for p in inspect.signature(cls.__init__).parameters.values()
                if p.name != "self"}
    return keywords ^ set(cls.constraints)


def test_the_registry_holds_every_method():
    assert EXPLAINERS.names() == ["gradcam", "gradient_x_input", "integrated_gradients",
                                  "kernel_shap", "lime", "occlusion", "saliency", "smoothgrad"]


@pytest.mark.parametrize("name", EXPLAINERS.names())
def test_every_setting_declares_its_constraint(name):
    cls = EXPLAINERS[name]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for n, p in
               inspect.signature(cls.__init__).parameters.items() if n != "self")
    assert not undeclared_keywords(cls), f"{name}: declare constraints for {undeclared_keywords(cls)}"


def test_a_method_without_constraints_is_caught():
    class Bare(Explainer):
        def __init__(self, *, steps: int = 4) -> None:
            self.steps = steps

    assert undeclared_keywords(Bare) == {"steps"}


@pytest.mark.parametrize("name", EXPLAINERS.names())
def test_every_invalid_example_is_refused_naming_its_setting(name):
    cls = EXPLAINERS[name]
    cls()  # the defaults are valid
    for setting, constraint in cls.constraints.items():
        cls(**{setting: constraint.example()})
        for bad in constraint.invalid_examples():
            with pytest.raises(AssayValueError, match=f"'{setting}' parameter of {cls.__name__}"):
                cls(**{setting: bad})
                pytest.fail(f"{name} accepted {setting}={bad!r}")


def test_the_explanation_constraints_allow_what_they_should():
    assert Baseline().allows(0.5) and Baseline().allows(torch.zeros(1, 3))
    assert Baseline().check("baseline", 1, "X") == 1.0
    assert Sides().check("window", [1, 4, 4], "X") == (1, 4, 4)
    assert Sides(scalar=True).check("strides", 2, "X") == (2,)
    assert not Sides().allows(4)  # a window names every dimension
    with pytest.raises(AssayValueError, match="'window' parameter of Occlusion must be None or"):
        EXPLAINERS["occlusion"](window=(0, 2, 2))


@pytest.mark.parametrize("name", EXPLAINERS.names())
def test_a_run_keeps_shape_dtype_and_mode_and_repeats(name):
    torch.manual_seed(0)
    if name in TABULAR:
        net = nn.Sequential(nn.Linear(5, 8), nn.Dropout(0.1), nn.ReLU(), nn.Linear(8, 3))
        x = torch.rand(3, 5)
    else:
        net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Dropout(0.1),
                            nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
        x = torch.rand(3, 1, 8, 8)
    settings = {"smoothgrad": dict(samples=4), "integrated_gradients": dict(steps=4),
                "lime": dict(samples=50), "kernel_shap": {}}.get(name, {})
    explainer = EXPLAINERS[name](**settings)
    net.train()  # the method runs in eval mode and restores train mode
    first = explainer(net, x, 1)
    assert net.training
    second = explainer(net, x, 1)
    assert first.shape == x.shape and first.dtype == x.dtype and torch.equal(first, second)
