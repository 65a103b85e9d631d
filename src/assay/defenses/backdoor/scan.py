"""What the data-side backdoor defenses share: the per-sample suspicion they return, its
quality against known poison, and the penultimate features of each class."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..._params import Configured
from ...core.dataset import Dataset
from ...core.features import logits_and_features
from ...errors import AssayValueError
from ...metrics.ood import auroc


@dataclass(frozen=True)
class PoisonScan:
    """A suspicion score per training sample (higher: more likely poisoned) and the
    samples a method flags for removal.

    scores : Tensor [N] float64; flagged : Tensor [N] bool; method : str; settings : dict
    """

    scores: Tensor
    flagged: Tensor
    method: str
    settings: dict[str, Any]

    def against(self, poisoned: Tensor) -> dict[str, float]:
        """TPR and FPR of ``flagged`` and the AUROC of ``scores`` against the positions of
        the truly poisoned samples (``PoisonedData.poisoned``)."""
        truth = torch.zeros(len(self.scores), dtype=torch.bool)
        truth[poisoned.cpu()] = True
        if bool(truth.all()) or not bool(truth.any()):
            raise AssayValueError("PoisonScan.against needs both poisoned and clean samples.")
        flagged = self.flagged.cpu()
        return {"tpr": float(flagged[truth].double().mean()),
                "fpr": float(flagged[~truth].double().mean()),
                "auroc": auroc(self.scores.cpu()[truth], self.scores.cpu()[~truth])}

    def clean_data(self, data: Dataset) -> Dataset:
        """``data`` without the flagged samples (for retraining)."""
        keep = torch.nonzero(~self.flagged.cpu()).squeeze(1)
        return data.take(keep, f"{data.split}/without-{self.method}")


def features_by_label(model: nn.Module, data: Dataset, owner: str, *,
                      batch_size: int = 256) -> Iterator[tuple[Tensor, Tensor]]:
    """For each label present in ``data``: the positions of its samples and their
    penultimate features [n_k, D] (float64, on the CPU). Poison carries the target's
    label, so each defense looks within one label at a time."""
    if len(torch.unique(data.y)) < 2:
        raise AssayValueError(f"{owner}: {data.label} has a single label; a scan compares "
                              "the samples of each label, so it needs the training set.")
    _, features = logits_and_features(model, data.x, batch_size=batch_size)
    features = features.flatten(1).double().cpu()
    labels = data.y.cpu()
    for label in torch.unique(labels).tolist():
        where = torch.nonzero(labels == label).squeeze(1)
        yield where, features[where]


class LabelScan(Configured):
    """Base of the data-side defenses: each label's samples are scored on their
    penultimate features by :meth:`_score`, which returns the scores [n_k] and the
    samples to flag (bool [n_k])."""

    method: ClassVar[str]
    batch_size: int = 256

    def settings(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.constraints}

    def scan(self, model: nn.Module, data: Dataset) -> PoisonScan:
        """Score every training sample of ``data`` with ``model``, the model trained on it."""
        scores = torch.zeros(len(data), dtype=torch.float64)
        flagged = torch.zeros(len(data), dtype=torch.bool)
        for where, feats in features_by_label(model, data, type(self).__name__,
                                              batch_size=self.batch_size):
            score, flag = self._score(feats)
            scores[where] = score
            flagged[where[flag]] = True
        return PoisonScan(scores, flagged, self.method, self.settings())

    def _score(self, feats: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError
