"""Spectral Signatures: poison leaves a trace along the top singular direction of a
class's learned representations.

Reference: B. Tran, J. Li, A. Madry. "Spectral Signatures in Backdoor Attacks". NeurIPS
2018. For each label, the penultimate features of its samples are centred; each sample's
score is its squared projection on the top right singular vector; the ``1.5 *
expected_rate`` share of the label's samples with the largest scores is removed (the
paper's factor 1.5 over an upper bound on the poisoned share). Default expected_rate 0.1
(a bound for the usual 10% poisoning; the paper evaluates 5% and 10%).
"""

from __future__ import annotations

import torch
from torch import nn

from ..._params import Float, Int
from ...core.dataset import Dataset
from .scan import PoisonScan, features_by_label


class SpectralSignatures:
    """Parameters (keyword-only)
    -------------------------
    expected_rate : float in (0, 1), default 0.1 - an upper bound on the poisoned share
    batch_size : int >= 1, default 256

    ``scan(model, train) -> PoisonScan``; ``model`` is the one trained on ``train``.
    """

    constraints = {"expected_rate": Float(low=0.0, high=1.0, low_open=True, high_open=True),
                   "batch_size": Int(low=1)}

    def __init__(self, *, expected_rate: float = 0.1, batch_size: int = 256) -> None:
        owner = type(self).__name__
        self.expected_rate = self.constraints["expected_rate"].check(
            "expected_rate", expected_rate, owner)
        self.batch_size = self.constraints["batch_size"].check("batch_size", batch_size, owner)

    def scan(self, model: nn.Module, data: Dataset) -> PoisonScan:
        scores = torch.zeros(len(data), dtype=torch.float64)
        flagged = torch.zeros(len(data), dtype=torch.bool)
        for where, feats in features_by_label(model, data, type(self).__name__,
                                              batch_size=self.batch_size):
            centred = feats - feats.mean(0)
            _, _, vh = torch.linalg.svd(centred, full_matrices=False)
            score = (centred @ vh[0]) ** 2
            scores[where] = score
            removed = min(len(where), int(round(1.5 * self.expected_rate * len(where))))
            if removed:
                flagged[where[score.topk(removed).indices]] = True
        return PoisonScan(scores, flagged, "spectral_signatures",
                          {"expected_rate": self.expected_rate})
