"""Logits and penultimate features of a classifier, in batches.

The penultimate features are the input of the model's classification head: the last
``nn.Linear`` that runs in the forward pass. Every ``nn.Linear`` of the model gets a
forward pre-hook for the duration of the call; the one executed last wins, so the head is
found whatever order the modules were registered in. Feature-space methods
(Mahalanobis, KNN, ViM in :mod:`assay.shift.ood`) build on this.

TorchScript modules (scripted, traced or frozen) take no hooks, and their layers are no
``nn.Linear``: for each one, its forward graph (inlined) is extended to also return the
input of its last top-level ``aten::linear``, and that copy stands in for the module during
the call, so the executed-last rule holds across Python and TorchScript parts alike.

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

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor, nn

from .._params import check_int
from ..errors import AssayValueError
# batched_logits and model_device are part of this module's public names (as before).
from .inference import batched_logits, check_logits, eval_mode, map_batches, model_device

__all__ = ["LinearHead", "batched_logits", "classifier_head", "logits_and_features",
           "model_device"]


def check_inputs(x: object, owner: str, name: str = "x") -> Tensor:
    """A non-empty tensor with a batch dimension."""
    if not isinstance(x, Tensor) or x.ndim == 0 or x.shape[0] == 0:
        got = f"a tensor of shape {tuple(x.shape)}" if isinstance(x, Tensor) else repr(x)
        raise AssayValueError(
            f"The '{name}' parameter of {owner} must be a non-empty tensor whose first "
            f"dimension is the batch. Got {got} instead."
        )
    return x


@dataclass(frozen=True)
class LinearHead:
    """The weight [K, D] and bias [K] (or None) of a TorchScript model's last linear layer."""

    weight: Tensor
    bias: Tensor | None


@dataclass(frozen=True)
class _Tap:
    """A TorchScript module's forward extended to return ``(output, head input)``, called
    as ``function(module._c, *inputs)``, and where its head's weight and bias live
    (attribute paths from the module, or constants of a frozen module)."""

    function: Callable[..., tuple[Tensor, Tensor]]
    weight: tuple[str, ...] | Tensor
    bias: tuple[str, ...] | Tensor | None

    def head(self, module: nn.Module) -> LinearHead:
        def get(where: tuple[str, ...] | Tensor | None) -> Tensor | None:
            if where is None or isinstance(where, Tensor):
                return where
            value: object = module
            for name in where:
                value = getattr(value, name)
            return cast(Tensor, value)
        return LinearHead(cast(Tensor, get(self.weight)), get(self.bias))


_TAPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _tap(module: torch.jit.ScriptModule, owner: str) -> _Tap | None:
    """The tap of a TorchScript module, or None when its graph runs no ``aten::linear``."""
    if module in _TAPS:
        return _TAPS[module]
    try:
        graph = cast(torch._C.Graph, module.forward.graph).copy()  # type: ignore[attr-defined]
        torch._C._jit_pass_inline(graph)  # calls of submodules become their operations
    except (AttributeError, RuntimeError):
        return None
    nodes = list(graph.nodes())
    linears = [i for i, node in enumerate(nodes) if node.kind() == "aten::linear"]
    after = nodes[linears[-1] + 1:] if linears else nodes
    if any(_runs_linear(block) for node in after for block in node.blocks()):
        raise AssayValueError(
            f"{owner}: the TorchScript model {module.original_name} runs its last linear layer "
            "inside control flow (if/loop), so its penultimate features cannot be read. Fix: "
            "script or trace a model whose classification head runs outside control flow.")
    if not linears:
        return None
    last = nodes[linears[-1]]
    self_value = next(graph.inputs())
    try:
        weight, bias = (_where(value, self_value) for value in list(last.inputs())[1:])
        outputs = list(graph.outputs())
        if len(outputs) != 1:
            raise RuntimeError("the forward returns several values")
        graph.eraseOutput(0)
        pair = graph.create("prim::TupleConstruct", [outputs[0], last.inputsAt(0)], 1)
        graph.appendNode(pair)
        pair.output().setType(torch._C.TupleType([outputs[0].type(),
                                                  last.inputsAt(0).type()]))
        graph.registerOutput(pair.output())
        function = torch._C._create_function_from_graph(f"{owner}_features", graph)
    except RuntimeError as err:
        raise AssayValueError(
            f"{owner}: cannot read the penultimate features of the TorchScript model "
            f"{module.original_name} ({err}). Fix: pass the model as a Python nn.Module with "
            "an nn.Linear head, or leave out the feature-based detectors.") from err
    if not isinstance(weight, (tuple, Tensor)):
        raise AssayValueError(f"{owner}: the last linear layer of the TorchScript model "
                              f"{module.original_name} has no weight.")
    tap = _Tap(function, weight, bias)
    _TAPS[module] = tap
    return tap


def _runs_linear(block: torch._C.Block) -> bool:
    return any(node.kind() == "aten::linear" or any(map(_runs_linear, node.blocks()))
               for node in block.nodes())


def _where(value: torch._C.Value, self_value: torch._C.Value) -> tuple[str, ...] | Tensor | None:
    """Attribute path from the module to ``value``, or its constant (a frozen module)."""
    node = value.node()
    if node.kind() == "prim::Constant":
        return cast("Tensor | None", value.toIValue())
    if node.kind() == "prim::GetAttr":
        parent = node.input()
        path = () if parent.unique() == self_value.unique() else _where(parent, self_value)
        if isinstance(path, tuple):
            return (*path, node.s("name"))
    raise RuntimeError(f"the head's parameter comes from {node.kind()}")


class _TapModule(nn.Module):
    """Stands in for a TorchScript module during one forward pass and records the input
    of its last linear layer in ``slot``."""

    def __init__(self, module: torch.jit.ScriptModule, tap: _Tap,
                 slot: dict[str, object]) -> None:
        super().__init__()
        self.training = module.training
        object.__setattr__(self, "scripted", module)  # no child: modules() stays the same
        self.tap, self.slot = tap, slot

    def forward(self, *args: object) -> Tensor:
        scripted = cast(torch.jit.ScriptModule, self.__dict__["scripted"])
        output, features = self.tap.function(scripted._c, *args)
        self.slot["features"] = features
        self.slot["head"] = self.tap.head(scripted)
        return output


def _script_parts(model: nn.Module) -> list[tuple[nn.Module | None, str, torch.jit.ScriptModule]]:
    """The outermost TorchScript modules of ``model``: (parent, name, module); the parent
    is None when ``model`` itself is one."""
    if isinstance(model, torch.jit.ScriptModule):
        return [(None, "", model)]
    found: list[tuple[nn.Module | None, str, torch.jit.ScriptModule]] = []
    for name, child in model.named_children():
        if isinstance(child, torch.jit.ScriptModule):
            found.append((model, name, child))
        else:
            found += _script_parts(child)
    return found


@contextmanager
def _capture_head(model: nn.Module, owner: str
                  ) -> Iterator[tuple[dict[str, object], Callable[[Tensor], Tensor]]]:
    """Hook every nn.Linear and tap every TorchScript part; yields ``slot``, which holds
    the input and head of the last one run, and the function to call instead of the model."""
    slot: dict[str, object] = {}

    def make_hook(layer: nn.Linear):
        def hook(module: nn.Module, args: tuple[object, ...]) -> None:
            slot["features"] = args[0]
            slot["head"] = layer
        return hook

    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    taps = [(parent, name, module, tap) for parent, name, module in _script_parts(model)
            for tap in [_tap(module, owner)] if tap is not None]
    if not layers and not taps:
        raise AssayValueError(
            f"{owner} needs the model's penultimate features, taken as the input of its last "
            f"nn.Linear layer, but {type(model).__name__} contains no nn.Linear (nor, if it is "
            "TorchScript, an aten::linear). Give the model a linear classification head (e.g. "
            "nn.Sequential(feature_map, nn.Linear(d, num_classes)))."
        )
    handles = [layer.register_forward_pre_hook(make_hook(layer)) for layer in layers]
    runner: Callable[[Tensor], Tensor] = model
    swapped = []
    try:
        for parent, name, module, tap in taps:
            stand_in = _TapModule(module, tap, slot)
            if parent is None:
                runner = stand_in
            else:  # nn.Module looks children up in _modules: swap for this call only
                parent._modules[name] = stand_in
                swapped.append((parent, name, module))
        yield slot, runner
    finally:
        for handle in handles:
            handle.remove()
        for parent, name, module in swapped:
            parent._modules[name] = module


def forward_with_features(model: nn.Module, xb: Tensor, owner: str
                          ) -> tuple[Tensor, Tensor, nn.Linear | LinearHead]:
    """One forward pass: logits [B, K], features [B, D] and the head (an ``nn.Linear``, or
    a :class:`LinearHead` for TorchScript); keeps the graph.

    The caller chooses grad mode and eval mode; ``xb`` must be on the model's device.
    """
    with _capture_head(model, owner) as (slot, runner):
        logits = runner(xb)
    if "features" not in slot:
        raise AssayValueError(
            f"{owner}: no nn.Linear of {type(model).__name__} ran in the forward pass, so the "
            "penultimate features could not be captured. The classification head must be an "
            "nn.Linear called by forward()."
        )
    feats = cast(Tensor, slot["features"])
    head = cast("nn.Linear | LinearHead", slot["head"])
    check_logits(logits, xb.shape[0], owner)
    if feats.ndim != 2 or feats.shape[0] != xb.shape[0]:
        raise AssayValueError(
            f"{owner}: the last nn.Linear of {type(model).__name__} received an input of shape "
            f"{tuple(feats.shape)}; penultimate features must have shape [batch, features] = "
            f"[{xb.shape[0]}, D]. Use a head applied to pooled [N, D] features."
        )
    return logits, feats, head


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
    with eval_mode(model), torch.no_grad():
        logits, feats = map_batches(lambda xb: forward_with_features(model, xb, owner)[:2], x,
                                    batch_size=batch_size, device=model_device(model, x.device))
    return logits, feats


def classifier_head(model: nn.Module, x_probe: Tensor) -> nn.Linear | LinearHead:
    """The model's classification head: the last ``nn.Linear`` run on ``x_probe`` (for
    TorchScript, a :class:`LinearHead` with the weight and bias of its last linear layer).

    One forward pass on the first sample of ``x_probe`` (eval mode, no grad) tells which
    ``nn.Linear`` executes last; ViM needs its weight and bias.
    """
    owner = "classifier_head"
    check_inputs(x_probe, owner, "x_probe")
    device = model_device(model, x_probe.device)
    with eval_mode(model), torch.no_grad():
        _, _, head = forward_with_features(model, x_probe[:1].to(device), owner)
    return head
