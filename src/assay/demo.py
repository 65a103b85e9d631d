"""The demo audit: a small CNN trained reproducibly on scikit-learn's bundled 8x8 digits
in a few seconds, and a plan with gates that a well-trained model passes."""

from __future__ import annotations

from .audit.plan import Plan, plan_from_dict
from .core import zoo
from .core.data import Dataset
from .core.loaders import load_digits
from .core.model import ModelWrapper
from .core.training import TrainConfig, fit

DEMO_TRAINING = TrainConfig(epochs=15, batch_size=64, lr=3e-3, seed=0)

DEMO_PLAN = {
    "seed": 0,
    "checks": [
        {"name": "accuracy", "gates": ["accuracy >= 0.9"]},
        {"name": "robustness",
         "params": {"norms": ["linf", "l2"],
                    "eps": {"linf": [0.0, 0.05, 0.1, 0.2], "l2": [0.0, 0.25, 0.5, 1.0]},
                    "mode": "quick", "n": 450},
         "gates": ["robust_accuracy@linf=0.05 >= 0.6", "robust_accuracy@l2=0.25 >= 0.6"]},
        {"name": "corruptions", "params": {"n": 449},
         "gates": ["mean_corruption_accuracy >= 0.7"]},
        {"name": "calibration", "gates": ["ece_ts <= 0.1"]},
        {"name": "conformal", "params": {"alpha": 0.1}, "gates": ["coverage@lac >= 0.85"]},
        {"name": "ood", "gates": ["auroc@msp:far >= 0.8"]},
    ],
}


def demo_plan() -> Plan:
    return plan_from_dict(DEMO_PLAN, source="<demo plan>")


def demo_model(*, show_progress: bool = True) -> tuple[ModelWrapper, Dataset, Dataset]:
    """Train the demo model; return it with the digits test and train splits."""
    train, test = load_digits("train"), load_digits("test")
    net = zoo.build("small_cnn", input_shape=train.input_shape, num_classes=10, seed=0)
    fit(net, train, DEMO_TRAINING, show_progress=show_progress)
    model = ModelWrapper(net, num_classes=10, input_shape=train.input_shape,
                         name="demo small_cnn on digits")
    return model, test, train
