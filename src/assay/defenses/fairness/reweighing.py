"""Reweighing: per-sample weights that make the label independent of the group.

Reference: Faisal Kamiran and Toon Calders, "Data preprocessing techniques for
classification without discrimination", Knowledge and Information Systems 33(1), 2012.

Each sample of group g with label y gets the weight ``w(g, y) = P(g) P(y) / P(g, y)``
(empirical frequencies of the training set), the ratio between the frequency the cell
would have if label and group were independent and the frequency it has. Under the
weights the joint distribution factorises (``P_w(g, y) = P(g) P(y)``), the group sizes and
the label frequencies stay what they were, and the weights sum to N. A classifier trained
on the weighted loss then sees every group with the same positive rate.

A (group, label) cell without a member would need an infinite weight to reach
``P(g) P(y)``: no weighting makes that group's labels match the others'. Such data is
refused with the cell named, rather than weighted into a distribution that still
depends on the group.

Example::

    >>> import torch
    >>> from assay.defenses.fairness import reweighing_weights
    >>> y = torch.tensor([1, 1, 1, 0, 1, 0, 0, 0])
    >>> g = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    >>> reweighing_weights(y, g)
    tensor([0.6667, 0.6667, 0.6667, 2.0000, 2.0000, 0.6667, 0.6667, 0.6667])
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ...core.data import Dataset
from ...core.training import IndexedLoss, TrainConfig, TrainHistory, fit
from ...errors import AssayValueError
from ._inputs import batch_lookup, group_index, labels_of

__all__ = ["fit_reweighed", "reweighed_loss", "reweighing_weights"]


def reweighing_weights(y: Tensor, groups: Tensor) -> Tensor:
    """Kamiran & Calders' weights ``P(g) P(y) / P(g, y)``, one per sample.

    Parameters:
        y: labels [N], int64 (any number of classes; the labels that occur count).
        groups: group codes [N], int64 (the codes that occur are the groups; at least 2,
            each with at least 2 members and every label that occurs in ``y``).

    Returns:
        float32 [N] on ``y``'s device, summing to N (up to rounding).

    Raises ``AssayValueError`` for mismatched lengths, a single group, or a (group, label)
    cell without a member (its weight would be undefined).
    """
    owner = "reweighing_weights"
    labels, num_labels = labels_of(y, owner, "y")
    index, num_groups, codes = group_index(groups, len(labels), owner, "groups")
    cells = torch.bincount(index.to(labels.device) * num_labels + labels,
                           minlength=num_groups * num_labels).reshape(num_groups, num_labels)
    empty = (cells == 0).nonzero()
    if len(empty):
        g, label = (int(v) for v in empty[0])
        label_value = int(torch.unique(y)[label])
        raise AssayValueError(
            f"The 'groups' parameter of {owner} must give every group every label; group "
            f"{int(codes[g])} has no sample with label {label_value}, so its weight "
            "P(g) P(y) / P(g, y) is undefined and no weighting makes the label independent "
            "of the group. Fix: merge that group with another, drop it, or collect samples "
            "of the missing label.")
    cells = cells.double()
    n = cells.sum()
    expected = cells.sum(1, keepdim=True) * cells.sum(0, keepdim=True) / n  # N P(g) P(y)
    weights = expected / cells
    return weights[index.to(labels.device), labels].float()


def reweighed_loss(weights: Tensor) -> IndexedLoss:
    """Weighted cross-entropy for :func:`assay.core.training.fit`: the mean over the batch
    of ``weights[i] * CE(model(x_i), y_i)``, with ``weights`` indexed by each sample's
    position in the training set (:func:`reweighing_weights` of that set). With all
    weights 1 it is the plain cross-entropy.

    Parameters:
        weights: float [N], finite and >= 0, one per training sample.
    """
    owner = "reweighed_loss"
    if not isinstance(weights, Tensor) or weights.ndim != 1 or len(weights) == 0 \
            or not weights.is_floating_point():
        raise AssayValueError(f"The 'weights' parameter of {owner} must be a non-empty 1-D "
                              f"float tensor (one weight per training sample). Got {weights!r}"
                              " instead.")
    if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
        raise AssayValueError(f"The 'weights' parameter of {owner} must hold finite weights "
                              ">= 0. Fix: compute them with reweighing_weights.")
    weight_of = batch_lookup(weights, owner, "weights")

    def loss(model: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> Tensor:
        per_sample = F.cross_entropy(model(x), y, reduction="none")
        return (weight_of(index, y.device) * per_sample).mean()

    return IndexedLoss(loss)


def fit_reweighed(model: nn.Module, data: Dataset, attribute: str,
                  config: TrainConfig = TrainConfig(), *,
                  show_progress: bool = False) -> TrainHistory:
    """Train ``model`` in place on ``data`` with the reweighed loss for the sensitive
    attribute ``attribute`` (a name in ``data.attributes``) through the one training loop.

    Returns :func:`~assay.core.training.fit`'s history.
    """
    codes, _ = data.attribute(attribute)
    weights = reweighing_weights(data.y, codes)
    return fit(model, data, config, loss_fn=reweighed_loss(weights),
               show_progress=show_progress)
