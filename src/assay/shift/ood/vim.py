"""ViM: virtual-logit matching.

Reference: Haoqi Wang, Zhizhong Li, Litong Feng and Wayne Zhang, "ViM: Out-Of-Distribution
with Virtual-logit Matching", CVPR 2022.

With the head ``logits = W f + b``, features are taken relative to the origin
``o = -pinv(W) b``. Fit: the principal subspace P (top-D eigenvectors of the
uncentred covariance of ``f - o`` on training data) and the matching constant
``alpha = mean(max logit) / mean(||(f - o)^{P-perp}||)`` over the training set.
Score: ``logsumexp(logits) - alpha * ||(f - o)^{P-perp}||``. The paper's ViM score is the
softmax probability of the virtual logit ``alpha * ||(f - o)^{P-perp}||`` next to the real
logits; that probability is a decreasing function of this score, so both rank inputs
identically. Higher = more in-distribution.
"""

from __future__ import annotations

from typing import Self

import torch
from torch import Tensor, nn

from ..._params import check_int
from ...core.features import check_inputs, classifier_head
from ...errors import AssayValueError
from ._base import OODDetector


def default_principal_dim(feature_dim: int) -> int:
    """The paper's rule for D: 1000 if N >= 1500, 512 if N >= 768, else N // 2.

    The paper's models have N = 2048 (BiT, ResNet-50: D = 1000) or N = 768 (ViT, DeiT,
    Swin: D = 512); N // 2 covers the small feature spaces it does not study.
    """
    if feature_dim >= 1500:
        return 1000
    if feature_dim >= 768:
        return 512
    return feature_dim // 2


class ViM(OODDetector):
    """Virtual-logit matching (Wang et al., CVPR 2022).

    Parameters:
        principal_dim: D, the dimension of the principal subspace, an int >= 1 and below
            the feature dimension N, or None (default) for the paper's rule: D = 1000 if
            N >= 1500, D = 512 if 768 <= N < 1500, D = N // 2 otherwise.
        batch_size: samples per forward pass, an int >= 1 (default 256).

    ``fit(model, x_in_train, y_in_train=None)``: the head is the last ``nn.Linear`` that
    runs, or a TorchScript model's last linear layer (its input are the features); labels
    are not used; alpha comes from the training data as in the paper. ``score(model, x)``:
    x [N, ...] -> scores [N].

    Example::

        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Identity(), nn.Linear(6, 3))
        >>> x = torch.randn(50, 6, generator=torch.Generator().manual_seed(0))
        >>> ViM().fit(model, x).score(model, x[:4]).shape
        torch.Size([4])
    """

    name = "vim"
    requires_fit = True

    def __init__(self, *, principal_dim: int | None = None, batch_size: int = 256) -> None:
        super().__init__(batch_size=batch_size)
        if principal_dim is not None:
            check_int("principal_dim", principal_dim, "ViM", low=1)
        self.principal_dim = principal_dim

    def fit(self, model: nn.Module, x_in_train: Tensor, y_in_train: Tensor | None = None
            ) -> Self:
        check_inputs(x_in_train, "ViM.fit", "x_in_train")
        logits, feats = self._features(model, x_in_train)
        head = classifier_head(model, x_in_train)
        n_features = feats.shape[1]
        dim = (default_principal_dim(n_features) if self.principal_dim is None
               else self.principal_dim)
        if not 1 <= dim < n_features:
            raise AssayValueError(
                f"The 'principal_dim' parameter of ViM must be in [1, {n_features - 1}] for "
                f"features of dimension {n_features}. Got {dim} instead"
                + (" (from the paper's rule N // 2); ViM needs features of dimension >= 2."
                   if self.principal_dim is None else ".")
            )
        weight = head.weight.detach().to(feats.device, torch.float64)
        bias = (head.bias.detach().to(feats.device, torch.float64) if head.bias is not None
                else weight.new_zeros(weight.shape[0]))
        origin = -torch.linalg.pinv(weight) @ bias
        centred = feats.double() - origin
        covariance = centred.T @ centred / centred.shape[0]
        _, eigvecs = torch.linalg.eigh(0.5 * (covariance + covariance.T))
        # eigh sorts eigenvalues ascending: the residual space is the first N - D columns
        residual_basis = eigvecs[:, : n_features - dim]
        residual_norm = (centred @ residual_basis).norm(dim=1).mean()
        if float(residual_norm) <= torch.finfo(feats.dtype).tiny:
            raise AssayValueError(
                f"ViM.fit: the training features have no component outside the {dim}-"
                "dimensional principal subspace, so alpha is undefined. Lower principal_dim."
            )
        self.origin_ = origin.to(feats.dtype)
        self.residual_basis_ = residual_basis.to(feats.dtype)
        self.alpha_ = float(logits.double().amax(dim=1).mean() / residual_norm)
        self.principal_dim_ = dim
        self._fitted = True
        return self

    def score(self, model: nn.Module, x: Tensor) -> Tensor:
        self._check_fitted()
        logits, feats = self._features(model, x)
        origin = self.origin_.to(feats.device, feats.dtype)
        basis = self.residual_basis_.to(feats.device, feats.dtype)
        virtual_logit = self.alpha_ * ((feats - origin) @ basis).norm(dim=1)
        return torch.logsumexp(logits, dim=1) - virtual_logit
