"""RMIA, the robust membership-inference attack (Zarifzadeh, Liu, Lee & Shokri, "Low-Cost
High-Power Membership Inference Attacks", ICML 2024).

The likelihood ratio of a target sample x against a population sample z is
LR(x, z) = (Pr(x | theta) / Pr(x)) / (Pr(z | theta) / Pr(z)), with Pr(. | theta) the target
model's probability of the true class and Pr(.) its mean over reference models. The score
of x is the share of population samples z with LR(x, z) > ``gamma``. The population z
must be samples the target did not train on (not the audited targets), and their Pr(z)
come from the same reference models.

Offline (default), Pr(x) uses only the reference models that did not train on x, and
approximates the mean over all of them as Pr(x) = ((1 + a) Pr_OUT(x) + (1 - a)) / 2
(the paper's linear fit). Online, Pr(x) is the mean over all reference models.
Population samples are treated the same way. :func:`tune_offline_a` picks ``a`` the
paper's way, from reference models alone: one of them plays the target.

Augmented queries (``aggregate``): ``"vote"`` (default, the authors' code,
``research/2024_rmia`` of ml_privacy_meter) tests LR(x, z) > gamma on each query (each
query's Pr from the same query of every model) and counts z where a strict majority of
the queries says so; ``"mean"`` averages the probabilities over the queries first and
tests once. With one query both are the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import Tensor

from ..._params import check_bool, check_choice, check_float
from ...errors import AssayValueError
from ...metrics.privacy import auc_with_interval

__all__ = ["A_GRID", "RMIA", "tune_offline_a"]

# the authors' grid for a (ml_privacy_meter's tune_offline_a: 0, 0.1, ..., 1)
A_GRID = tuple(round(0.1 * i, 1) for i in range(11))
_CHUNK = 2 ** 22  # pair-query comparisons per block of the vote


@dataclass(frozen=True)
class RMIA:
    """The robust membership-inference attack.

    a : float in [0, 1], default 0.3 - the offline scaling of Pr_OUT (1: use it as it is);
        0.3 is the authors' CIFAR-10 offline setting, or tune it by :func:`tune_offline_a`
    gamma : float > 0, default 1.0 - the likelihood-ratio threshold against each z (the
        paper's main results; its code uses 2 in some settings)
    online : bool, default False
    aggregate : {"vote", "mean"}, default "vote" - how the augmented queries combine

    Call with the target's phi = log(p / (1 - p)) per query, ``target_x`` [A, N] and
    ``target_z`` [A, Z], the reference models' ``reference_x`` [M, A, N] and
    ``reference_z`` [M, A, Z], and ``keep_x`` [M, N], ``keep_z`` [M, Z] (True where a
    reference model trained on the sample); returns scores [N] in [0, 1], higher for
    members.

    >>> import torch
    >>> out = torch.zeros(1, 3, dtype=torch.bool)
    >>> target, reference = torch.tensor([[4.0, 0.0, -1.0]]), torch.zeros(1, 1, 3)
    >>> RMIA(a=1.0)(target[:, :1], reference[..., :1], out[:, :1],
    ...             target[:, 1:], reference[..., 1:], out[:, 1:]).tolist()
    [1.0]
    """

    a: float = 0.3
    gamma: float = 1.0
    online: bool = False
    aggregate: Literal["vote", "mean"] = "vote"

    def __post_init__(self) -> None:
        check_float("a", self.a, "RMIA", low=0.0, high=1.0)
        check_float("gamma", self.gamma, "RMIA", low=0.0, low_open=True)
        check_bool("online", self.online, "RMIA")
        check_choice("aggregate", self.aggregate, ("vote", "mean"), "RMIA")

    def _ratio(self, target: Tensor, reference: Tensor, keep: Tensor) -> Tensor:
        """Pr(. | theta) / Pr(.) per query [A, N] (sigmoid(phi) is the true class's p);
        with ``aggregate="mean"`` one row [1, N] of the query-averaged probabilities."""
        p_target = torch.sigmoid(target.double())  # [A, N]
        p_reference = torch.sigmoid(reference.double())  # [M, A, N]
        if self.aggregate == "mean":
            p_target, p_reference = p_target.mean(0, keepdim=True), p_reference.mean(1,
                                                                                   keepdim=True)
        if self.online:
            prior = p_reference.mean(0)
        else:
            out = (~keep.to(p_reference.device, torch.bool)).double()[:, None, :]  # [M, 1, N]
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
        if (target_x.ndim != 2 or reference_x.shape[1:] != target_x.shape
                or keep_x.shape != (reference_x.shape[0], target_x.shape[1])
                or target_z.ndim != 2 or reference_z.shape[1:] != target_z.shape
                or keep_z.shape != (reference_z.shape[0], target_z.shape[1])
                or target_z.shape[0] != target_x.shape[0]
                or reference_z.shape[0] != reference_x.shape[0]):
            raise AssayValueError(
                f"RMIA needs target_x [A, N], reference_x [M, A, N], keep_x [M, N], target_z "
                f"[A, Z], reference_z [M, A, Z] and keep_z [M, Z]; got "
                f"{[list(t.shape) for t in (target_x, reference_x, keep_x)]} and "
                f"{[list(t.shape) for t in (target_z, reference_z, keep_z)]}.")
        ratio_x = self._ratio(target_x, reference_x, keep_x)  # [A, N]
        ratio_z = self._ratio(target_z, reference_z, keep_z)  # [A, Z]
        queries = len(ratio_x)
        if queries == 1:
            # LR(x, z) > gamma  <=>  ratio_z < ratio_x / gamma: count those z by bisection
            below = torch.searchsorted(ratio_z[0].sort().values, ratio_x[0] / self.gamma,
                                       right=False)
            return below.double() / ratio_z.shape[1]
        # the authors' vote: LR(x, z) > gamma on a strict majority of the queries
        limit = self.gamma * ratio_z  # [A, Z]
        rows = max(1, _CHUNK // (queries * ratio_z.shape[1]))
        counts = [((ratio_x[:, start:start + rows, None] > limit[:, None, :]).sum(0)
                   > queries / 2).sum(1)
                  for start in range(0, ratio_x.shape[1], rows)]
        return torch.cat(counts).double() / ratio_z.shape[1]


def tune_offline_a(attack: RMIA, paired_x: Tensor, reference_x: Tensor, keep_x: Tensor,
                   member_x: Tensor, paired_z: Tensor, reference_z: Tensor, keep_z: Tensor,
                   grid: Sequence[float] = A_GRID) -> tuple[float, dict[float, float]]:
    """The paper's choice of the offline ``a``, from reference models alone: one reference
    model (``paired_x`` [A, N], ``paired_z`` [A, Z]) plays the target, the others
    (``reference_x`` [M, A, N], ``reference_z`` [M, A, Z], with ``keep_x``, ``keep_z``)
    attack it, and the ``a`` of ``grid`` whose scores tell its training samples
    (``member_x`` [N], True where the paired model trained on x) from its other samples
    with the highest AUC wins (the first of equals). The population z must be samples the
    paired model did not train on. Returns that ``a`` and the AUC of every ``a`` tried.
    ``attack``'s other settings (gamma, aggregate) are kept; it must be offline."""
    if attack.online:
        raise AssayValueError("tune_offline_a tunes the offline attack's a; got an online "
                              "RMIA. Fix: pass RMIA(online=False, ...).")
    member = member_x.to(torch.bool).cpu()
    if member.shape != (paired_x.shape[-1],) or bool(member.all()) or not bool(member.any()):
        raise AssayValueError(f"tune_offline_a needs member_x [N] (N = {paired_x.shape[-1]}) "
                              f"with members and non-members of the paired model; got shape "
                              f"{list(member.shape)} with {int(member.sum())} members.")
    aucs = {}
    for a in grid:
        scores = replace(attack, a=float(a))(paired_x, reference_x, keep_x, paired_z,
                                             reference_z, keep_z).cpu()
        aucs[float(a)] = auc_with_interval(scores[member], scores[~member])[0]
    best = max(aucs, key=lambda a: aucs[a])  # max keeps the first of equal AUCs
    return best, aucs
