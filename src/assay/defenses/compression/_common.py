"""What the compression transforms share: unwrapping and re-wrapping a ModelWrapper."""

from __future__ import annotations

from torch import Tensor, nn

from ...core.model import ModelWrapper


def unwrap(model: nn.Module) -> nn.Module:
    """The bare network of a ModelWrapper, else the module itself."""
    return model.net if isinstance(model, ModelWrapper) else model


def rewrap(like: nn.Module, net: nn.Module, *, suffix: str = "") -> nn.Module:
    """``net`` wrapped like ``like`` (same bounds, normalisation, classes and input shape)
    when ``like`` is a ModelWrapper; otherwise ``net`` itself."""
    if not isinstance(like, ModelWrapper):
        return net
    wrapped = ModelWrapper(
        net, num_classes=like.num_classes, input_shape=like.input_shape, bounds=like.bounds,
        mean=None if like.mean is None else like.mean.flatten().cpu().tolist(),
        std=None if like.std is None else like.std.flatten().cpu().tolist(),
        name=f"{like.name}{suffix}")
    device = next((t.device for t in net.parameters()), None)
    return wrapped.to(device) if device is not None else wrapped


def normalise(like: nn.Module, x: Tensor) -> Tensor:
    """Apply the wrapper's mean/std to ``x`` (what its network sees); identity otherwise."""
    if isinstance(like, ModelWrapper):
        if like.mean is not None:
            x = x - like.mean.to(x.device)
        if like.std is not None:
            x = x / like.std.to(x.device)
    return x
