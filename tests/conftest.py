import os
from pathlib import Path

import pytest

from assay.core import zoo
from assay.core.loaders import load_digits
from assay.core.model import ModelWrapper
from assay.core.training import TrainConfig, fit

DATA_DIR = os.environ.get("ASSAY_DATA_DIR")


def require_data(*parts: str) -> Path:
    """The path under $ASSAY_DATA_DIR, or skip the test with the reason."""
    if not DATA_DIR:
        pytest.skip("ASSAY_DATA_DIR is not set; real data sets are not available")
    path = Path(DATA_DIR, *parts)
    if not path.exists():
        pytest.skip(f"{path} is missing under ASSAY_DATA_DIR")
    return Path(DATA_DIR)


@pytest.fixture(scope="session")
def digits():
    return load_digits("train"), load_digits("test")


@pytest.fixture(scope="session")
def digits_net(digits):
    """A small CNN trained on digits in about a second (test accuracy about 0.96)."""
    train, _ = digits
    net = zoo.build("small_cnn", input_shape=(1, 8, 8), num_classes=10, seed=0)
    fit(net, train, TrainConfig(epochs=15, lr=3e-3, seed=0), show_progress=False)
    return net


@pytest.fixture
def digits_model(digits_net):
    return ModelWrapper(digits_net, num_classes=10, input_shape=(1, 8, 8), name="digits cnn")
