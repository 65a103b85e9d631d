"""RMIA, the robust membership-inference attack (Zarifzadeh, Liu, Lee & Shokri, "Low-Cost
High-Power Membership Inference Attacks", ICML 2024).

The likelihood ratio of a target sample x against a population sample z is
LR(x, z) = (Pr(x | theta) / Pr(x)) / (Pr(z | theta) / Pr(z)), with Pr(. | theta) the target
model's probability of the true class (averaged over the augmented queries) and Pr(.)
its mean over reference models. The score of x is the share of population samples z
with LR(x, z) > ``gamma``.

Offline (default), Pr(x) uses only the reference models that did not train on x, and
approximates the mean over all of them as Pr(x) = ((1 + a) Pr_OUT(x) + (1 - a)) / 2
(the paper's linear fit; the paper tunes ``a`` on reference models, the default
``a = 0.3`` is untuned). Online, Pr(x) is the
mean over all reference models. Population samples are treated the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..._params import check_bool, check_float
from ...errors import AssayValueError

__all__ = ["RMIA"]


@dataclass(frozen=True)
class RMIA:
    """The robust membership-inference attack.

    a : float in [0, 1], default 0.3 - the offline scaling of Pr_OUT (1: use it as it is)
    gamma : float > 0, default 1.0 - the likelihood-ratio threshold against each z
    online : bool, default False

    Call with the target's phi per query, ``target_x`` [A, N] and ``target_z`` [A, Z],
    the reference models' ``reference_x`` [M, A, N] and ``reference_z`` [M, A, Z], and
    ``keep_x`` [M, N], ``keep_z`` [M, Z] (True where a reference model trained on the
    sample); returns scores [N] in [0, 1], higher for members.
    """

    a: float = 0.3
    gamma: float = 1.0
    online: bool = False

    def __post_init__(self) -> None:
        check_float("a", self.a, "RMIA", low=0.0, high=1.0)
        check_float("gamma", self.gamma, "RMIA", low=0.0, low_open=True)
        check_bool("online", self.online, "RMIA")

    def _ratio(self, target: Tensor, reference: Tensor, keep: Tensor) -> Tensor:
        """Pr(. | theta) / Pr(.) [N] from phi (sigmoid(phi) is the true class's p)."""
        p_target = torch.sigmoid(target.double()).mean(0)
        p_reference = torch.sigmoid(reference.double()).mean(1)  # [M, N]
        if self.online:
            prior = p_reference.mean(0)
        else:
            out = (~keep.to(p_reference.device, torch.bool)).double()
            if not bool((out.sum(0) > 0).all()):
                raise AssayValueError("RMIA offline: every sample needs a reference model that "
                                      "did not train on it; use at least 2 reference models.")
            p_out = (p_reference * out).sum(0) / out.sum(0)
            prior = ((1 + self.a) * p_out + (1 - self.a)) / 2
        return p_target / prior.clamp(min=1e-30)

    def __call__(self, target_x: Tensor, reference_x: Tensor, keep_x: Tensor,
                 target_z: Tensor, reference_z: Tensor, keep_z: Tensor) -> Tensor:
        if target_z.shape[-1] == 0:
            raise AssayValueError("RMIA needs population samples z (reference data that is "
                                  "not among the targets).")
        ratio_x = self._ratio(target_x, reference_x, keep_x)
        ratio_z = self._ratio(target_z, reference_z, keep_z).sort().values
        # LR(x, z) > gamma  <=>  ratio_z < ratio_x / gamma: count those z by bisection
        below = torch.searchsorted(ratio_z, ratio_x / self.gamma, right=False)
        return below.double() / len(ratio_z)
