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
    ],
}


def demo_plan() -> Plan:
    """The demo's plan, with the recipe its model was trained by as the [training] table."""
    training = {"arch": DEMO_ARCH, **asdict(DEMO_TRAINING)}
    return plan_from_dict({**DEMO_PLAN, "training": training}, source="<demo plan>")


def demo_model(*, show_progress: bool = True, cache_dir: str | Path | None = None
               ) -> tuple[ModelWrapper, Dataset, Dataset]:
    """Train the demo model (or load its weights from ``cache_dir``); return it with the
    digits test and train splits."""
    train, test = load_digits("train"), load_digits("test")
    net = zoo.build(DEMO_ARCH, input_shape=train.input_shape, num_classes=10, seed=0)
    weights = (None if cache_dir is None
               else Path(cache_dir) / f"demo-{_weights_key(train)}.safetensors")
    if weights is None or not _load_weights(net, weights):
        log.info("training the demo model on digits (seconds)")
        # One thread: the weights then do not depend on the machine's core count (a
        # different split of the batch reductions rounds differently), and a model this
        # small trains about as fast on one.
        with using_threads(1):
            fit(net, train, DEMO_TRAINING, show_progress=show_progress)
        if weights is not None:
            _save_weights(net, weights)
    net.eval()  # loaded weights leave a freshly built net in train mode
    model = ModelWrapper(net, num_classes=10, input_shape=train.input_shape,
                         name="demo small_cnn on digits")
    return model, test, train


def _weights_key(train: Dataset) -> str:
    parts = {"arch": DEMO_ARCH, "training": asdict(DEMO_TRAINING), "data": train.sha256(),
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
