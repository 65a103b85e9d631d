"""Input checks for tensors handed to the metric and calibration functions.

Private helpers shared by :mod:`assay.metrics`, :mod:`assay.shift` and
:mod:`assay.defenses.calibration`; every failure raises
:class:`~assay.errors.AssayValueError` in the project's message pattern
("The 'x' parameter of Y must be <allowed>. Got <value> instead.").
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from ..errors import AssayValueError

Inputs = Literal["probs", "logits"]
INPUTS: tuple[str, ...] = ("probs", "logits")


def describe(value: object) -> str:
    """A short description of a value for error messages (shape and dtype for tensors)."""
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    return repr(value)


def fail(name: str, owner: str, allowed: str, value: object) -> AssayValueError:
    return AssayValueError(
        f"The '{name}' parameter of {owner} must be {allowed}. Got {describe(value)} instead."
    )


def real_vector(name: str, value: object, owner: str) -> Tensor:
    """A non-empty 1-D real tensor without NaN."""
    if not isinstance(value, Tensor) or value.ndim != 1 or value.numel() == 0 \
            or value.dtype == torch.bool or value.is_complex():
        raise fail(name, owner, "a non-empty 1-D real tensor", value)
    if value.is_floating_point() and bool(torch.isnan(value).any()):
        raise fail(name, owner, "a 1-D real tensor without NaN", value)
    return value


def float_matrix(name: str, value: object, owner: str) -> Tensor:
    """A non-empty 2-D floating tensor [N, K] with finite entries."""
    if not isinstance(value, Tensor) or value.ndim != 2 or value.shape[0] == 0 \
            or value.shape[1] == 0 or not value.is_floating_point():
        raise fail(name, owner, "a non-empty 2-D floating tensor of shape [N, K]", value)
    if not bool(torch.isfinite(value).all()):
        raise fail(name, owner, "a 2-D floating tensor with finite entries", value)
    return value


def labels_vector(name: str, value: object, owner: str, n: int, num_classes: int) -> Tensor:
    """A 1-D integer tensor of n labels in [0, num_classes)."""
    if not isinstance(value, Tensor) or value.ndim != 1 or value.dtype == torch.bool \
            or value.is_floating_point() or value.is_complex():
        raise fail(name, owner, "a 1-D integer tensor of class indices", value)
    if value.shape[0] != n:
        raise fail(name, owner, f"a 1-D integer tensor with {n} entries (one per row)", value)
    if n and (int(value.min()) < 0 or int(value.max()) >= num_classes):
        raise fail(name, owner, f"class indices in [0, {num_classes - 1}]", value)
    return value.long()


def as_probs(values: object, inputs: str, owner: str, *, name: str = "probs") -> Tensor:
    """Probabilities [N, K] from ``values`` given as probabilities or as logits.

    ``inputs="probs"``: rows must lie in [0, 1] and sum to 1 (tolerance 1e-3), which
    catches logits passed by mistake. ``inputs="logits"``: softmax over the last axis.
    """
    tensor = float_matrix(name, values, owner)
    if inputs == "logits":
        return tensor.softmax(dim=-1)
    tol = 1e-3
    if bool((tensor < -tol).any()) or bool((tensor > 1 + tol).any()) or \
            bool(((tensor.sum(dim=-1) - 1).abs() > tol).any()):
        raise AssayValueError(
            f"The '{name}' parameter of {owner} must hold probabilities (entries in [0, 1], "
            f"rows summing to 1) when inputs='probs'. Got {describe(tensor)} whose rows do "
            "not sum to 1; pass inputs='logits' if these are logits."
        )
    return tensor
