"""Magnitude pruning: zero the smallest weights, or the weakest whole channels.

References
----------
- S. Han, J. Pool, J. Tran, W. J. Dally. "Learning both Weights and Connections for
  Efficient Neural Networks". NeurIPS 2015 (unstructured: drop the weights of smallest
  magnitude).
- H. Li, A. Kadav, I. Durdanovic, H. Samet, H. P. Graf. "Pruning Filters for Efficient
  ConvNets". ICLR 2017 (structured: drop the filters of smallest L1 norm, layer by layer).

Both are one-shot here, without the retraining the papers interleave; retrain the result
with :func:`assay.core.training.fit` if needed (the zeros then have to be kept, e.g. by
pruning again after each epoch).
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from ..._params import check_bool, check_choice, check_float
from ...errors import AssayValueError
from ._common import rewrap, unwrap
from .measure import PRUNABLE

Scope = Literal["global", "layer"]
Structure = Literal["unstructured", "structured"]


def prune(model: nn.Module, amount: float, *, scope: Scope | None = None,
          structure: Structure = "unstructured", keep_last: bool = False) -> nn.Module:
    """A pruned copy of ``model``: weights of Conv2d and Linear layers set to zero.

    Parameters
    ----------
    model : nn.Module or ModelWrapper - left untouched; a ModelWrapper gives a ModelWrapper
        with the same bounds and normalisation.
    amount : float in [0, 1) - the fraction of weights (unstructured) or of output
        channels per layer (structured) to zero.
    scope : {"global", "layer"} or None, default None - "global" ranks all pruned weights
        together (Han et al.; torch's ``global_unstructured``), so layers end up with
        different sparsities and the total is ``amount``; "layer" prunes ``amount`` of each
        layer. None means "global" for unstructured and "layer" for structured pruning
        (Li et al. rank filters within a layer; filter norms of different layers are not
        comparable, so structured pruning has no global scope).
    structure : {"unstructured", "structured"}, default "unstructured" - "structured"
        zeroes whole output channels of a Conv2d (filters) and whole output rows of a
        Linear layer, those of smallest L1 norm (torch's ``ln_structured`` with n=1,
        dim=0), and their bias entries with them, so a removed filter outputs zero as if
        it were cut out. Tensor sizes are NOT reduced: the zeros stay in place, so the
        model is not smaller or faster on dense hardware; it shows what removing the
        channels would cost in accuracy.
    keep_last : bool, default False - leave the last Conv2d/Linear layer (usually the
        classifier) dense. Han et al. prune every layer, hence the default. Structured
        pruning never prunes the last layer's rows: each row is a class.

    Returns a new module whose pruning is permanent (``prune.remove``): plain weights
    holding zeros, no masks or forward hooks. Measure it with :func:`sparsity`.

    Example
    -------
    >>> from assay.defenses.compression import sparsity
    >>> net = nn.Sequential(nn.Linear(20, 20), nn.ReLU(), nn.Linear(20, 3))
    >>> round(sparsity(prune(net, 0.5)), 2)
    0.5
    """
    owner = "prune"
    amount = check_float("amount", amount, owner, low=0.0, high=1.0, high_open=True)
    check_choice("structure", structure, ("unstructured", "structured"), owner)
    if scope is None:
        scope = "global" if structure == "unstructured" else "layer"
    check_choice("scope", scope, ("global", "layer"), owner)
    check_bool("keep_last", keep_last, owner)
    if structure == "structured" and scope == "global":
        raise AssayValueError("The 'scope' parameter of prune must be 'layer' when structure is "
                              "'structured' (filter norms of different layers are not "
                              "comparable). Got 'global' instead. Fix: pass scope='layer' or "
                              "leave it None.")
    net = copy.deepcopy(unwrap(model))
    layers = [m for m in net.modules() if isinstance(m, PRUNABLE)]
    if not layers:
        raise AssayValueError(f"prune: {type(net).__name__} has no Conv2d or Linear layer to "
                              "prune.")
    if keep_last or structure == "structured":
        layers = layers[:-1]
    if not layers:
        raise AssayValueError("prune: the model's only Conv2d/Linear layer is its last one, "
                              "which keep_last (or structured pruning) leaves dense.")
    if amount > 0:
        if structure == "structured":
            for layer in layers:
                torch_prune.ln_structured(layer, "weight", amount=amount, n=1, dim=0)
        elif scope == "global":
            torch_prune.global_unstructured([(layer, "weight") for layer in layers],
                                            pruning_method=torch_prune.L1Unstructured,
                                            amount=amount)
        else:
            for layer in layers:
                torch_prune.l1_unstructured(layer, "weight", amount=amount)
        for layer in layers:
            torch_prune.remove(layer, "weight")
            if structure == "structured":
                _zero_bias_of_empty_channels(layer)
    return rewrap(model, net, suffix=f" (pruned {amount:g})")


@torch.no_grad()
def _zero_bias_of_empty_channels(layer: nn.Conv2d | nn.Linear) -> None:
    if layer.bias is not None:
        empty = (layer.weight.flatten(1) == 0).all(dim=1)
        layer.bias[empty] = 0.0
