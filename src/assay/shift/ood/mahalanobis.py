"""Mahalanobis-distance OOD score on penultimate features.

Reference: Kimin Lee, Kibok Lee, Honglak Lee and Jinwoo Shin, "A Simple Unified Framework
for Detecting Out-of-Distribution Samples and Adversarial Attacks", NeurIPS 2018.

Fit: class means mu_c and one covariance Sigma shared by all classes (tied covariance,
as in linear discriminant analysis) on the training set's penultimate features.
Score: ``-min_c (f(x) - mu_c)^T Sigma^+ (f(x) - mu_c)``; higher = more in-distribution.
"""

from __future__ import annotations

from typing import Self

import torch
from torch import Tensor, nn

from ..._params import check_float
from ...core.features import check_inputs, forward_with_features
from ...core.inference import eval_mode, map_batches, model_device
from ...errors import AssayValueError
from ._base import OODDetector, check_float_input, gradient_sign_step


def whitening_matrix(covariance: Tensor) -> Tensor:
    """``L`` with ``L @ L.T`` the pseudo-inverse of a PSD matrix, computed in float64.

    Eigenvalues below ``max_eigenvalue * D * machine epsilon`` count as zero (the cut-off
    of ``scipy.linalg.pinvh``), so a singular covariance still gives a usable metric.
    """
    cov = covariance.double()
    cov = 0.5 * (cov + cov.T)
    eigvals, eigvecs = torch.linalg.eigh(cov)
    cutoff = eigvals.abs().max() * cov.shape[0] * torch.finfo(torch.float64).eps
    keep = eigvals > cutoff
    return eigvecs[:, keep] / eigvals[keep].sqrt()


class Mahalanobis(OODDetector):
    """Minimum Mahalanobis distance to the class means (Lee et al., NeurIPS 2018).

    This is the paper's score on the penultimate layer only, **without input
    preprocessing by default** (``epsilon=0``): the paper's feature ensemble over layers
    and its logistic-regression weights are tuned on OOD validation data, which an audit
    does not have. Set ``epsilon > 0`` for the paper's input preprocessing, one signed
    gradient step on the input that lowers the minimum distance (the paper tunes eps in
    {0, 0.0005, 0.001, 0.0014, 0.002, 0.005, 0.01} on validation data).

    Parameters:
        epsilon: input-preprocessing step, a number >= 0 (default 0.0: none).
        batch_size: samples per forward pass, an int >= 1 (default 256).

    ``fit(model, x_in_train, y_in_train=None)``: class means and the shared covariance
    of the penultimate features (input of the last ``nn.Linear``); labels are the true
    ones when given (as in the paper), else the model's predictions. Classes without a
    sample are left out. The pseudo-inverse covariance is used, so rank-deficient
    features work. ``score(model, x)``: x [N, ...] -> scores [N] <= 0.

    Example::

        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Identity(), nn.Linear(2, 2))
        >>> x = torch.randn(100, 2, generator=torch.Generator().manual_seed(0))
        >>> y = (x[:, 0] > 0).long()
        >>> det = Mahalanobis().fit(model, x, y)
        >>> det.score(model, x[:3]).shape
        torch.Size([3])
    """

    name = "mahalanobis"
    requires_fit = True

    def __init__(self, *, epsilon: float = 0.0, batch_size: int = 256) -> None:
        super().__init__(batch_size=batch_size)
        self.epsilon = check_float("epsilon", epsilon, "Mahalanobis", low=0.0)

    def fit(self, model: nn.Module, x_in_train: Tensor, y_in_train: Tensor | None = None
            ) -> Self:
        _, feats, labels = self._train_features(model, x_in_train, y_in_train)
        feats64 = feats.double()
        num_classes = int(labels.max()) + 1
        counts = torch.bincount(labels, minlength=num_classes)
        sums = feats64.new_zeros(num_classes, feats.shape[1]).index_add_(0, labels, feats64)
        present = counts > 0
        means = sums[present] / counts[present].unsqueeze(1)
        centred = feats64 - (sums / counts.clamp_min(1).unsqueeze(1))[labels]
        covariance = centred.T @ centred / feats.shape[0]
        whitener = whitening_matrix(covariance)
        if whitener.shape[1] == 0:
            raise AssayValueError(
                "Mahalanobis.fit: the training features do not vary within classes (zero "
                "covariance), so no Mahalanobis distance exists. Use more varied training data."
            )
        self.classes_ = torch.nonzero(present).squeeze(1)
        self.means_ = means.to(feats.dtype)
        self.whitener_ = whitener.to(feats.dtype)
        self._white_means = (means @ whitener).to(feats.dtype)
        self._fitted = True
        return self

    def _min_distance(self, feats: Tensor) -> Tensor:
        """Squared Mahalanobis distance to the closest class mean, [B]."""
        whitener = self.whitener_.to(feats.device, feats.dtype)
        centres = self._white_means.to(feats.device, feats.dtype)
        z = feats @ whitener
        sq = (z * z).sum(1, keepdim=True) - 2 * z @ centres.T + (centres * centres).sum(1)
        return sq.clamp_min(0).amin(dim=1)

    def score(self, model: nn.Module, x: Tensor) -> Tensor:
        self._check_fitted()
        owner = "Mahalanobis.score"
        check_inputs(x, owner)

        def score_batch(xb: Tensor) -> Tensor:
            if self.epsilon > 0:
                check_float_input(xb, owner)
                with torch.enable_grad():
                    xg = xb.detach().requires_grad_(True)
                    _, feats, _ = forward_with_features(model, xg, owner)
                    xb = gradient_sign_step(xg, self._min_distance(feats).sum(), self.epsilon)
            with torch.no_grad():
                _, feats, _ = forward_with_features(model, xb, owner)
                return -self._min_distance(feats)

        with eval_mode(model):
            return map_batches(score_batch, x, batch_size=self.batch_size,
                               device=model_device(model, x.device))
