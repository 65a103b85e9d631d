"""LiRA, the likelihood-ratio attack (Carlini, Chien, Nasr, Song, Terzis & Tramer,
"Membership Inference Attacks From First Principles", IEEE S&P 2022).

For each target sample, the logit-scaled confidences phi of the reference models that
trained on it (IN) and of those that did not (OUT) are fitted with Gaussians, per
augmented query. The online attack scores the target model's phi by the log-likelihood
ratio log N(phi; mu_in, s_in^2) - log N(phi; mu_out, s_out^2); the offline attack, which
needs no IN models, by the one-sided test log Pr[Z < phi], Z ~ N(mu_out, s_out^2). Both
average over the queries.

Variance: ``"fixed"`` (default) pools the residuals of every sample into one variance
for IN and one for OUT, which the paper recommends below 64 reference models;
``"per_example"`` estimates each sample's own, and falls back to the pooled one for a
sample with fewer than two models on a side (their variance is not defined).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ..._params import check_bool, check_choice
from ...errors import AssayValueError

__all__ = ["LiRA"]

_MIN_STD = 1e-3  # phi of a model that predicts one class everywhere has no spread


def _gaussian(reference: Tensor, side: Tensor, per_example: bool) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation [A, N] of ``reference`` [M, A, N] over the models where
    ``side`` [M, N] is True."""
    weight = side[:, None, :].to(reference.dtype)
    count = weight.sum(0)
    mean = (reference * weight).sum(0) / count.clamp(min=1)
    squares = ((reference - mean) ** 2 * weight).sum(0)
    pooled_dof = (count - 1).clamp(min=0).sum(1, keepdim=True)  # per query
    pooled = squares.sum(1, keepdim=True) / pooled_dof.clamp(min=1)
    var = pooled.expand_as(mean)
    if per_example:
        own = squares / (count - 1).clamp(min=1)
        var = torch.where(count >= 2, own, var)
    return mean, var.sqrt().clamp(min=_MIN_STD)


@dataclass(frozen=True)
class LiRA:
    """The likelihood-ratio attack.

    online : bool, default True - IN and OUT Gaussians (False: OUT only, the offline test)
    variance : {"fixed", "per_example"}, default "fixed"

    Call with ``target`` [A, N] (the target model's phi per query and sample),
    ``reference`` [M, A, N] (each reference model's) and ``keep`` [M, N] (True where
    reference model m trained on sample n); returns scores [N], higher for members.

    >>> import torch
    >>> keep = torch.tensor([[True], [False], [True], [False]])
    >>> reference = torch.tensor([5.0, 0.0, 6.0, 1.0])[:, None, None]
    >>> bool(LiRA()(torch.tensor([[5.5]]), reference, keep) > 0)
    True
    """

    online: bool = True
    variance: Literal["fixed", "per_example"] = "fixed"

    def __post_init__(self) -> None:
        check_bool("online", self.online, "LiRA")
        check_choice("variance", self.variance, ("fixed", "per_example"), "LiRA")

    def __call__(self, target: Tensor, reference: Tensor, keep: Tensor) -> Tensor:
        if reference.ndim != 3 or target.shape != reference.shape[1:] or (
                keep.shape != (reference.shape[0], reference.shape[2])):
            raise AssayValueError(f"LiRA needs target [A, N], reference [M, A, N] and keep "
                                  f"[M, N]; got {list(target.shape)}, {list(reference.shape)} "
                                  f"and {list(keep.shape)}.")
        keep = keep.to(reference.device, torch.bool)
        if not bool((~keep).any(0).all()) or (self.online and not bool(keep.any(0).all())):
            raise AssayValueError("LiRA: every sample needs OUT reference models (and, online, "
                                  "IN ones); train at least 2 reference models on a membership "
                                  "matrix (assay.attacks.privacy.reference.membership_matrix).")
        per_example = self.variance == "per_example"
        target = target.to(reference.dtype)
        mu_out, sd_out = _gaussian(reference, ~keep, per_example)
        if not self.online:
            return torch.special.log_ndtr((target - mu_out) / sd_out).mean(0)
        mu_in, sd_in = _gaussian(reference, keep, per_example)
        return (_log_normal(target, mu_in, sd_in) - _log_normal(target, mu_out, sd_out)).mean(0)


def _log_normal(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    return -0.5 * ((x - mean) / std) ** 2 - std.log() - 0.5 * math.log(2 * math.pi)
