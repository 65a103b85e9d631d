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
from torch import Tensor

from ..._params import Float, Int
from .scan import LabelScan


class SpectralSignatures(LabelScan):
    """Parameters (keyword-only)
    -------------------------
    expected_rate : float in (0, 1), default 0.1 - an upper bound on the poisoned share
    batch_size : int >= 1, default 256

    ``scan(model, train) -> PoisonScan``; ``model`` is the one trained on ``train``.
    """

    method = "spectral_signatures"
    constraints = {"expected_rate": Float(low=0.0, high=1.0, low_open=True, high_open=True),
                   "batch_size": Int(low=1)}

    def __init__(self, *, expected_rate: float = 0.1, batch_size: int = 256) -> None:
        self.expected_rate = self._validated("expected_rate", expected_rate)
        self.batch_size = self._validated("batch_size", batch_size)

    def _score(self, feats: Tensor) -> tuple[Tensor, Tensor]:
        centred = feats - feats.mean(0)
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)
        score = (centred @ vh[0]) ** 2
        flag = torch.zeros(len(score), dtype=torch.bool)
        removed = min(len(score), int(round(1.5 * self.expected_rate * len(score))))
        if removed:
            flag[score.topk(removed).indices] = True
        return score, flag
