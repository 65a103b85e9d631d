"""Logits and penultimate features of a classifier, in batches.

The penultimate features are the input of the model's classification head: the last
``nn.Linear`` that runs in the forward pass. Every ``nn.Linear`` of the model gets a
forward pre-hook for the duration of the call; the one executed last wins, so the head is
found whatever order the modules were registered in. Feature-space methods
(Mahalanobis, KNN, ViM in :mod:`assay.shift.ood`) build on this.

Example::

    >>> import torch
    >>> from torch import nn
    >>> from assay.core.features import logits_and_features
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> logits, feats = logits_and_features(model, torch.rand(10, 4))
    >>> tuple(logits.shape), tuple(feats.shape)
    ((10, 3), (10, 8))
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import torch
from torch import Tensor, nn

from .._params import check_int
from ..errors import AssayValueError

__all__ = ["batched_logits", "classifier_head", "logits_and_features", "model_device"]


def model_device(model: nn.Module, fallback: torch.device) -> torch.device:
    """The device of the model's first parameter or buffer; ``fallback`` if it has none."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return fallback


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode, and restore each one's own mode afterwards."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def check_inputs(x: object, owner: str, name: str = "x") -> Tensor:
    """A non-empty tensor with a batch dimension."""
    if not isinstance(x, Tensor) or x.ndim == 0 or x.shape[0] == 0:
        got = f"a tensor of shape {tuple(x.shape)}" if isinstance(x, Tensor) else repr(x)
        raise AssayValueError(
            f"The '{name}' parameter of {owner} must be a non-empty tensor whose first "
            f"dimension is the batch. Got {got} instead."
        )
    return x


def _linear_layers(model: nn.Module, owner: str) -> list[nn.Linear]:
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not layers:
        raise AssayValueError(
            f"{owner} needs the model's penultimate features, taken as the input of its last "
            f"nn.Linear layer, but {type(model).__name__} contains no nn.Linear. Give the "
            "model a linear classification head (e.g. nn.Sequential(feature_map, "
            "nn.Linear(d, num_classes)))."
        )
    return layers


@contextmanager
def _capture_head(model: nn.Module, owner: str) -> Iterator[dict[str, object]]:
    """Hook every nn.Linear; ``slot`` holds the input and module of the last one run."""
    slot: dict[str, object] = {}

    def make_hook(layer: nn.Linear):
        def hook(module: nn.Module, args: tuple[object, ...]) -> None:
            slot["features"] = args[0]
            slot["head"] = layer
        return hook

    handles = [layer.register_forward_pre_hook(make_hook(layer))
               for layer in _linear_layers(model, owner)]
    try:
        yield slot
    finally:
        for handle in handles:
            handle.remove()


def forward_with_features(model: nn.Module, xb: Tensor, owner: str
                          ) -> tuple[Tensor, Tensor, nn.Linear]:
    """One forward pass: logits [B, K], features [B, D] and the head; keeps the graph.

    The caller chooses grad mode and eval mode; ``xb`` must be on the model's device.
    """
    with _capture_head(model, owner) as slot:
        logits = model(xb)
    if "features" not in slot:
        raise AssayValueError(
            f"{owner}: no nn.Linear of {type(model).__name__} ran in the forward pass, so the "
            "penultimate features could not be captured. The classification head must be an "
            "nn.Linear called by forward()."
        )
    feats = cast(Tensor, slot["features"])
    head = cast(nn.Linear, slot["head"])
    _check_logits(logits, xb.shape[0], owner)
    if feats.ndim != 2 or feats.shape[0] != xb.shape[0]:
        raise AssayValueError(
            f"{owner}: the last nn.Linear of {type(model).__name__} received an input of shape "
            f"{tuple(feats.shape)}; penultimate features must have shape [batch, features] = "
            f"[{xb.shape[0]}, D]. Use a head applied to pooled [N, D] features."
        )
    return logits, feats, head


def _check_logits(logits: object, batch: int, owner: str) -> None:
    if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[0] != batch:
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise AssayValueError(
            f"{owner}: the model must return logits of shape [batch, num_classes] = "
            f"[{batch}, K]. Got {got} instead."
        )


def logits_and_features(model: nn.Module, x: Tensor, *, batch_size: int = 256
                        ) -> tuple[Tensor, Tensor]:
    """Logits and penultimate features of ``model`` on ``x``, computed in batches.

    Parameters:
        model: a classifier returning logits [B, K] whose head is an ``nn.Linear``; the
            features are the input of the last ``nn.Linear`` executed in the forward pass.
            It runs in eval mode (each submodule's mode is restored afterwards) under
            ``torch.no_grad``.
        x: inputs [N, ...] in the model's natural range; batches are moved to the model's
            device.
        batch_size: samples per forward pass, an int >= 1 (default 256).

    Returns:
        ``(logits [N, K], features [N, D])`` on ``x``'s device.

    Raises:
        AssayValueError: bad ``batch_size`` or ``x``; the model has no ``nn.Linear``; the
            head's input is not [B, D]; the model does not return [B, K] logits.
    """
    owner = "logits_and_features"
    check_int("batch_size", batch_size, owner, low=1)
    check_inputs(x, owner)
    device = model_device(model, x.device)
    logits_parts: list[Tensor] = []
    feature_parts: list[Tensor] = []
    with eval_mode(model), torch.no_grad():
        for xb in x.split(batch_size):
            logits, feats, _ = forward_with_features(model, xb.to(device), owner)
            logits_parts.append(logits)
            feature_parts.append(feats)
    return (torch.cat(logits_parts).to(x.device), torch.cat(feature_parts).to(x.device))


def batched_logits(model: nn.Module, x: Tensor, *, batch_size: int = 256) -> Tensor:
    """Logits [N, K] of ``model`` on ``x`` in eval mode, no grad, batched, on ``x``'s device.

    Parameters:
        model: a classifier returning logits [B, K].
        x: inputs [N, ...].
        batch_size: samples per forward pass, an int >= 1 (default 256).
    """
    owner = "batched_logits"
    check_int("batch_size", batch_size, owner, low=1)
    check_inputs(x, owner)
    device = model_device(model, x.device)
    parts: list[Tensor] = []
    with eval_mode(model), torch.no_grad():
        for xb in x.split(batch_size):
            logits = model(xb.to(device))
            _check_logits(logits, xb.shape[0], owner)
            parts.append(logits)
    return torch.cat(parts).to(x.device)


def classifier_head(model: nn.Module, x_probe: Tensor) -> nn.Linear:
    """The model's classification head: the last ``nn.Linear`` run on ``x_probe``.

    One forward pass on the first sample of ``x_probe`` (eval mode, no grad) tells which
    ``nn.Linear`` executes last; ViM needs its weight and bias.
    """
    owner = "classifier_head"
    check_inputs(x_probe, owner, "x_probe")
    device = model_device(model, x_probe.device)
    with eval_mode(model), torch.no_grad():
        _, _, head = forward_with_features(model, x_probe[:1].to(device), owner)
    return head
