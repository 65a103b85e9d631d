"""The demo audit: a small CNN trained reproducibly on scikit-learn's bundled 8x8 digits
in a few seconds, and a plan with gates that a well-trained model passes.

With a cache directory the trained weights are kept there as safetensors, keyed by
everything that decides them (architecture, training settings, training data, assay and
torch versions), so a second demo run loads them instead of training: the same weights
give the same fingerprint, and so every check's cached output is reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from ._version import __version__
from .audit.plan import Plan, plan_from_dict
from .core import zoo
from .core.data import Dataset
from .core.loaders import load_digits
from .core.model import ModelWrapper
from .core.model_io import save_network
from .core.threads import using_threads
from .core.training import TrainConfig, fit

log = logging.getLogger(__name__)

DEMO_ARCH = "small_cnn"
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
        {"name": "explanations",
         "gates": ["randomisation_spearman@integrated_gradients <= 0.5",
                   "deletion_gain@integrated_gradients >= 0.1"]},
        {"name": "fairness", "params": {"attributes": ["ink"]},
         "gates": ["accuracy_difference@ink <= 0.1"]},
    ],
}


# The tabular demo: the zoo MLP (its encoder fitted on adult.data) trained on UCI Adult,
# audited on adult.test for accuracy, calibration and fairness by sex and race. Its gates
# are the four-fifths rule and a 0.1 equalized-odds gap on sex: an unmitigated model fails
# them, and the fairness check's trade-off plot shows what group thresholds would cost.
ADULT_ARCH = "mlp"
ADULT_TRAINING = TrainConfig(epochs=5, batch_size=256, lr=1e-3, seed=0)
ADULT_PLAN = {
    "seed": 0,
    "checks": [
        {"name": "accuracy", "gates": ["accuracy >= 0.8"]},
        {"name": "calibration", "gates": ["ece_ts <= 0.05"]},
        {"name": "fairness",
         "params": {"attributes": ["sex", "race", "sex*race"],
                    "mitigations": ["thresholds_demographic_parity",
                                    "thresholds_equalized_odds"]},
         "gates": ["demographic_parity_ratio@sex >= 0.8",
                   "equalized_odds_difference@sex <= 0.1"]},
    ],
}
DEMOS = ("digits", "adult")


def demo_plan(name: str = "digits") -> Plan:
    """A demo's plan, with the recipe its model was trained by as the [training] table."""
    plan, arch, config = ((DEMO_PLAN, DEMO_ARCH, DEMO_TRAINING) if name == "digits"
                          else (ADULT_PLAN, ADULT_ARCH, ADULT_TRAINING))
    training = {"arch": arch, **asdict(config)}
    return plan_from_dict({**plan, "training": training}, source=f"<{name} demo plan>")


def demo_model(*, show_progress: bool = True, cache_dir: str | Path | None = None
               ) -> tuple[ModelWrapper, Dataset, Dataset]:
    """Train the demo model (or load its weights from ``cache_dir``); return it with the
    digits test and train splits, which carry the sensitive attribute ``ink``
    (:func:`with_ink_attribute`)."""
    train, test = load_digits("train"), load_digits("test")
    train, test = with_ink_attribute(train, train), with_ink_attribute(test, train)
    net = zoo.build(DEMO_ARCH, input_shape=train.input_shape, num_classes=10, seed=0)
    _train_or_load(net, train, DEMO_TRAINING, cache_dir, show_progress=show_progress)
    model = ModelWrapper(net, num_classes=10, input_shape=train.input_shape,
                         name="demo small_cnn on digits")
    return model, test, train


def adult_demo_model(*, data_root: str | Path | None = None, show_progress: bool = True,
                     cache_dir: str | Path | None = None
                     ) -> tuple[ModelWrapper, Dataset, Dataset]:
    """The tabular demo: the zoo MLP trained on UCI Adult (read from ``data_root`` or
    ``$ASSAY_DATA_DIR``), with the test and train splits (sensitive attributes sex and
    race). The bounds are the range of the raw rows of both splits."""
    from .core.data import load_data
    from .core.tabular import value_range

    train = load_data("adult:train", data_root=data_root)
    test = load_data("adult:test", data_root=data_root)
    net = zoo.build(ADULT_ARCH, input_shape=train.input_shape, num_classes=2, seed=0,
                    schema=train.schema)
    _train_or_load(net, train, ADULT_TRAINING, cache_dir, show_progress=show_progress)
    model = ModelWrapper(net, num_classes=2, input_shape=train.input_shape,
                         bounds=value_range(train, test), name="demo mlp on adult")
    return model, test, train


def _train_or_load(net: nn.Module, train: Dataset, config: TrainConfig,
                   cache_dir: str | Path | None, *, show_progress: bool) -> None:
    """Train ``net`` on ``train``, or read the weights an earlier run cached for exactly
    this architecture, recipe and data."""
    weights = (None if cache_dir is None
               else Path(cache_dir) / f"demo-{_weights_key(net, train, config)}.safetensors")
    if weights is None or not _load_weights(net, weights):
        log.info("training the demo model on %s (seconds)", train.name)
        # One thread: the weights then do not depend on the machine's core count (a
        # different split of the batch reductions rounds differently), and a model this
        # small trains about as fast on one.
        with using_threads(1):
            fit(net, train, config, show_progress=show_progress)
        if weights is not None:
            _save_weights(net, weights)
    net.eval()  # loaded weights leave a freshly built net in train mode


def with_ink_attribute(data: Dataset, reference: Dataset) -> Dataset:
    """``data`` with the sensitive attribute ``ink``: "light" for a digit drawn with less
    ink (summed pixel values) than the median of its class in ``reference`` (the training
    split), else "heavy". Digits carry no group of people; this stands in for one, so the
    demo's fairness check asks a real question of the model (does it read light writers
    as well as heavy ones?), with groups of about equal size and the same class mix."""
    ink = data.x.flatten(1).sum(1)
    medians = torch.stack([reference.x[reference.y == k].flatten(1).sum(1).median()
                           for k in range(reference.num_classes)])
    heavy = (ink >= medians[data.y]).long()
    return Dataset(data.x, data.y, data.name, data.split, data.classes, source=data.source,
                   attributes={**data.attributes, "ink": heavy},
                   attribute_values={**data.attribute_values, "ink": ("light", "heavy")})


def _weights_key(net: nn.Module, train: Dataset, config: TrainConfig) -> str:
    shapes = {k: list(v.shape) for k, v in net.state_dict().items()}
    parts = {"net": shapes, "training": asdict(config), "data": train.sha256(),
             "assay": __version__, "torch": torch.__version__}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _load_weights(net: nn.Module, path: Path) -> bool:
    """Load cached demo weights (safetensors: no code runs); False when absent or unusable."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        return False
    try:
        net.load_state_dict(load_file(str(path)), strict=True)
    except (SafetensorError, OSError, RuntimeError, ValueError) as err:
        log.warning("cached demo weights %s are unusable (%s); training again", path, err)
        return False
    log.info("demo model: trained weights read from %s", path)
    return True


def _save_weights(net: nn.Module, path: Path) -> None:
    try:
        save_network(net, path)  # renamed into place: a killed run leaves no half-written file
    except OSError as err:  # the model is trained either way; only the next run pays
        log.warning("could not cache the demo weights in %s (%s)", path.parent, err)
