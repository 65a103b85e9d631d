"""One trojan probability from the two model-side scanners.

Neural Cleanse (:class:`NeuralCleanse`) finds small static triggers (patches); the
maximum-margin scan (:class:`MaxMargin`) also finds blended and warping ones, but misses
some small patches that Neural Cleanse catches. Each gives one piece of evidence:
- Neural Cleanse's anomaly index, capped at 10;
- the maximum-margin p-value as ``-log10(p)``, capped at 10 (p 0.05 is 1.3).
A logistic of the two is the trojan probability. Its coefficients are fitted to a
population of models with known truth (``TrojanLogistic.fit``, an L2-regularised
logistic regression, C 1), the way TrojAI calibrates a scanner. The shipped
``POPULATION_LOGISTIC`` was fitted to the 24 MNIST ``small_cnn`` models of
``benchmarks/backdoor_scan.py`` (half BadNets, Blended and WaNet trojans). On 16 held-out
MNIST models it ranked every trojan above every clean model; on 12 Fashion-MNIST models
the evidence itself did not separate them (docs/benchmarks.md). On a population unlike
MNIST, fit your own and pass it to :func:`trojan_verdict` (the check: its
``calibration`` file, :func:`load_logistic`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..._paths import read_small_json
from ...errors import AssayValueError
from .max_margin import MarginScan
from .neural_cleanse import TriggerScan

_CAP = 10.0  # of each piece of evidence: a huge index or a p-value of 0 says no more


def evidence(trigger: TriggerScan, margin: MarginScan) -> tuple[float, float]:
    """The two features of the logistic of these scans; see :func:`evidence_of`."""
    return evidence_of(trigger.anomaly_index, margin.p_value)


def evidence_of(anomaly_index: float, p_value: float) -> tuple[float, float]:
    """The two features of the logistic: (Neural Cleanse's anomaly index, -log10 of the
    maximum-margin p-value), each capped at 10."""
    return min(anomaly_index, _CAP), min(-math.log10(max(p_value, 10.0 ** -_CAP)), _CAP)


@dataclass(frozen=True)
class TrojanLogistic:
    """``P(trojan) = 1 / (1 + exp(-(bias + weights . evidence)))``."""

    bias: float
    weights: tuple[float, float]

    def probability(self, features: Sequence[float]) -> float:
        z = self.bias + sum(w * f for w, f in zip(self.weights, features, strict=True))
        return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))

    @classmethod
    def fit(cls, features: Sequence[Sequence[float]], trojaned: Sequence[bool]
            ) -> TrojanLogistic:
        """The logistic fitted to a population: ``features`` (each model's
        :func:`evidence`) and the truth. Needs clean and trojaned models."""
        from sklearn.linear_model import LogisticRegression

        if len(features) != len(trojaned) or len(set(map(bool, trojaned))) < 2:
            raise AssayValueError("TrojanLogistic.fit needs one feature pair per model, and "
                                  "both clean and trojaned models.")
        model = LogisticRegression(C=1.0).fit([list(f) for f in features],
                                              [int(bool(t)) for t in trojaned])
        weights = model.coef_[0]
        return cls(float(model.intercept_[0]), (float(weights[0]), float(weights[1])))

    def to_dict(self) -> dict[str, Any]:
        """``{"bias": b, "weights": [w1, w2]}``, what :func:`load_logistic` reads."""
        return {"bias": self.bias, "weights": list(self.weights)}


def load_logistic(path: str | Path) -> TrojanLogistic:
    """The logistic in a JSON file ``{"bias": b, "weights": [w1, w2]}`` (what
    ``TrojanLogistic.to_dict`` gives), read as untrusted: anything else is an
    ``AssayValueError`` naming the file."""
    where = f"the calibration file {path}"
    raw = read_small_json(path, where=where, limit=1 << 16, fix=(
        'give a JSON file {"bias": b, "weights": [w1, w2]} of a TrojanLogistic fitted to '
        "your population"))

    def finite(value: object) -> bool:
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value))

    if not (isinstance(raw, dict) and set(raw) == {"bias", "weights"} and finite(raw["bias"])
            and isinstance(raw["weights"], list) and len(raw["weights"]) == 2
            and all(finite(w) for w in raw["weights"])):
        raise AssayValueError(f'{where} must hold {{"bias": b, "weights": [w1, w2]}} with '
                              "finite numbers, the anomaly index's weight first.")
    return TrojanLogistic(float(raw["bias"]), (float(raw["weights"][0]),
                                               float(raw["weights"][1])))


# fitted by benchmarks/backdoor_scan.py --fit to its 24 MNIST models (docs/benchmarks.md)
POPULATION_LOGISTIC = TrojanLogistic(bias=-6.2267, weights=(0.9015, 0.9815))
#: The data set (``Dataset.name``) of the models POPULATION_LOGISTIC was fitted and held
#: out on; off it, its clean verdicts are unvalidated.
POPULATION_DATA = "mnist"


@dataclass(frozen=True)
class TrojanVerdict:
    """probability: P(trojan); suspected_target: the class the stronger piece of evidence
    names when the probability exceeds 0.5, else -1; features: the :func:`evidence`."""

    probability: float
    suspected_target: int
    features: tuple[float, float]


def trojan_verdict(trigger: TriggerScan, margin: MarginScan,
                   logistic: TrojanLogistic = POPULATION_LOGISTIC) -> TrojanVerdict:
    """Both scans of one model as one probability and one suspected target."""
    features = evidence(trigger, margin)
    probability = logistic.probability(features)
    if probability <= 0.5:
        return TrojanVerdict(probability, -1, features)
    nc_class = int(trigger.anomaly.argmax())
    terms = [w * f for w, f in zip(logistic.weights, features, strict=True)]
    target = nc_class if terms[0] >= terms[1] else margin.top_class
    return TrojanVerdict(probability, target, features)
