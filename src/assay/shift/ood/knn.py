"""Deep nearest-neighbour OOD score.

Reference: Yiyou Sun, Yifei Ming, Xiaojin Zhu and Yixuan Li, "Out-of-Distribution
Detection with Deep Nearest Neighbors", ICML 2022.

Fit: store the L2-normalised penultimate features of the training set.
Score: ``-||z - z_(k)||``, minus the distance from the normalised feature z of the input to
its k-th nearest stored feature; higher = more in-distribution.
"""

from __future__ import annotations

from typing import Self

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..._params import check_int
from ...core.features import check_inputs
from ...errors import AssayValueError
from ._base import OODDetector


class KNN(OODDetector):
    """k-th nearest-neighbour distance on normalised features (Sun et al., ICML 2022).

    Parameters:
        k: which neighbour, an int >= 1 (default 50, the paper's choice for CIFAR-10 with
            the full 50,000-image training set; the paper uses k = 1000 with 1% of
            ImageNet). ``fit`` needs at least k training samples.
        batch_size: samples per forward pass and per distance block, an int >= 1
            (default 256).

    ``fit(model, x_in_train, y_in_train=None)``: stores the normalised penultimate
    features (labels are not used). ``score(model, x)``: x [N, ...] -> scores [N] in
    [-2, 0]. Distances: ``torch.cdist`` per block of ``batch_size`` queries, then
    ``topk``; memory is O(batch_size * number of training samples).

    Example::

        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Identity(), nn.Linear(3, 2))
        >>> x = torch.randn(60, 3, generator=torch.Generator().manual_seed(0))
        >>> KNN(k=5).fit(model, x).score(model, x[:4]).shape
        torch.Size([4])
    """

    name = "knn"
    requires_fit = True

    def __init__(self, *, k: int = 50, batch_size: int = 256) -> None:
        super().__init__(batch_size=batch_size)
        self.k = check_int("k", k, "KNN", low=1)

    def fit(self, model: nn.Module, x_in_train: Tensor, y_in_train: Tensor | None = None
            ) -> Self:
        check_inputs(x_in_train, "KNN.fit", "x_in_train")
        if x_in_train.shape[0] < self.k:
            raise AssayValueError(
                f"The 'x_in_train' parameter of KNN.fit must hold at least k={self.k} samples. "
                f"Got {x_in_train.shape[0]} instead; lower k or pass more training data."
            )
        _, feats = self._features(model, x_in_train)
        self.bank_ = F.normalize(feats, dim=1)
        self._fitted = True
        return self

    def score(self, model: nn.Module, x: Tensor) -> Tensor:
        self._check_fitted()
        _, feats = self._features(model, x)
        bank = self.bank_.to(feats.device, feats.dtype)
        queries = F.normalize(feats, dim=1)
        parts = [torch.cdist(block, bank).topk(self.k, dim=1, largest=False).values[:, -1]
                 for block in queries.split(self.batch_size)]
        return -torch.cat(parts)
