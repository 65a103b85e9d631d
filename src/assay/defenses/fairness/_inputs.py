"""Input checks shared by the fairness mitigations: labels, group codes, scores. Each
failure is an ``AssayValueError`` naming the argument and the fix."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ...errors import AssayValueError
from ...metrics._tensor_checks import describe


def _integer_vector(name: str, value: object, owner: str, what: str) -> Tensor:
    if not isinstance(value, Tensor) or value.ndim != 1 or len(value) == 0 \
            or value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        raise AssayValueError(f"The '{name}' parameter of {owner} must be a non-empty 1-D "
                              f"integer tensor of {what}. Got {describe(value)} instead.")
    return value.long()


def labels_of(y: object, owner: str, name: str = "y") -> tuple[Tensor, int]:
    """Each label's index among the labels that occur [N], and their count (>= 2)."""
    labels = _integer_vector(name, y, owner, "class labels")
    values, index = torch.unique(labels, return_inverse=True)
    if len(values) < 2:
        raise AssayValueError(f"The '{name}' parameter of {owner} must hold at least 2 "
                              f"different labels; every sample has label {int(values[0])}. "
                              "Fix: a fairness mitigation needs data with both outcomes.")
    return index, len(values)


def group_index(groups: object, n: int | None, owner: str, name: str = "groups"
                ) -> tuple[Tensor, int, Tensor]:
    """Each sample's group index [N] (in 0..G-1), G, and the code of each group [G].

    The codes that occur are the groups: at least 2, each with at least 2 members; ``n``,
    when given, is the number of samples they must match."""
    codes = _integer_vector(name, groups, owner, "group codes (one per sample)")
    if n is not None and len(codes) != n:
        raise AssayValueError(f"The '{name}' parameter of {owner} must have one code per "
                              f"sample ({n}). Got {len(codes)} codes instead. Fix: pass the "
                              "groups of the same samples, in the same order.")
    values, index, counts = torch.unique(codes, return_inverse=True, return_counts=True)
    if len(values) < 2:
        raise AssayValueError(f"The '{name}' parameter of {owner} must hold at least 2 "
                              f"groups; every sample is in group {int(values[0])}. Fix: pass "
                              "the sensitive attribute of data that has more than one group.")
    small = (counts < 2).nonzero()
    if len(small):
        code = int(values[int(small[0])])
        raise AssayValueError(f"The '{name}' parameter of {owner} must give every group at "
                              f"least 2 members; group {code} has 1. Fix: merge it with "
                              "another group or drop its samples.")
    return index, len(values), values


def unit_scores(scores: object, n: int | None, owner: str, name: str = "scores") -> Tensor:
    """A 1-D float tensor of positive-class probabilities in [0, 1] (``n`` of them when
    given)."""
    if not isinstance(scores, Tensor) or scores.ndim != 1 or len(scores) == 0 \
            or not scores.is_floating_point():
        raise AssayValueError(f"The '{name}' parameter of {owner} must be a non-empty 1-D "
                              "float tensor of positive-class probabilities. Got "
                              f"{describe(scores)} instead.")
    if n is not None and len(scores) != n:
        raise AssayValueError(f"The '{name}' parameter of {owner} must have one score per "
                              f"sample ({n}). Got {len(scores)} instead.")
    outside = ~((scores >= 0) & (scores <= 1))  # NaN is outside
    if bool(outside.any()):
        raise AssayValueError(f"The '{name}' parameter of {owner} must lie in [0, 1] (the "
                              f"positive class's probability); {int(outside.sum())} scores "
                              "do not. Fix: pass softmax(logits)[:, positive_class], not the "
                              "logits (positive_class_scores does this).")
    return scores


def batch_lookup(values: Tensor, owner: str, what: str) -> Callable[[Tensor, torch.device],
                                                                  Tensor]:
    """``lookup(index, device)``: ``values[index]`` on ``device`` (each device's copy made
    once), for an :class:`~assay.core.training.IndexedLoss`; an index past ``values`` (a
    training set larger than the values given) is refused naming ``what``."""
    cache: dict[torch.device, Tensor] = {}

    def lookup(index: Tensor, device: torch.device) -> Tensor:
        if int(index.max()) >= len(values):
            raise AssayValueError(f"{owner}: the training set has more samples than the "
                                  f"{len(values)} {what}. Fix: compute them for the set "
                                  "that fit trains on.")
        return cache.setdefault(device, values.to(device))[index.to(device)]

    return lookup
