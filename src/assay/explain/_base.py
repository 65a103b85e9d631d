"""What every attribution method shares: the result type, the registry of methods, the
checks of ``x`` and ``target``, the passes over expanded inputs and the gradient of the
target logit.

A method is an :class:`Explainer`: settings go to ``__init__`` (keyword-only, validated
there), the model and the data to the call, ``Saliency()(model, x)``. The model runs in
eval mode (each submodule's mode restored afterwards) on its own device; on the CPU, a
convolutional model with image inputs runs as a channels_last copy
(:func:`assay.core.inference.channels_last_copy`: the same function up to float rounding,
its forward and backward passes about 1.3x faster), the caller's model untouched.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .._params import Configured, Constraint, Float
from ..attacks.evasion.base import BATCH_SIZE, check_attack_inputs
from ..core.inference import (batched_logits, batched_predict, channels_last_copy, check_logits,
                              eval_mode, gains_from_channels_last, map_batches,
                              model_device)
from ..errors import AssayValueError
from ..registry import Registry

__all__ = ["BATCH_SIZE", "Attribution", "Baseline", "EXPLAINERS", "Explainer", "Sides",
           "expanded_blocks", "input_gradients", "masked_outputs", "resolve_target",
           "target_gradient"]

# Every attribution method by name; built-ins register on import of their module.
EXPLAINERS: Registry[type[Explainer]] = Registry(
    "explanation method", group="assay.explainers",
    builtins=[f"assay.explain.{m}" for m in ("saliency", "gradient_x_input",
                                              "integrated_gradients", "smoothgrad", "gradcam",
                                              "occlusion", "kernel_shap", "lime")])


@dataclass(frozen=True)
class Attribution:
    """An explanation of ``target`` for each input.

    attributions : Tensor shaped like ``x`` - each input feature's share of the target logit
    target : Tensor [N] int64 - the class explained for each input
    delta : Tensor [N] or None - the method's own approximation error, where it has one
        (Integrated Gradients: sum of attributions minus ``f(x) - f(baseline)``)
    """

    attributions: Tensor
    target: Tensor
    delta: Tensor | None = None


class Explainer(Configured):
    """Base class: subclasses set ``name``, declare each keyword-only setting's allowed
    values in ``constraints`` (checked in ``__init__`` by ``self._validated``; the shared
    contract test tries every invalid example on every registered method) and implement
    ``_attribute(model, x, target)``, which gets ``x`` and ``target`` on the model's device,
    the model in eval mode, and returns ``(attributions, delta or None)``."""

    name: ClassVar[str]
    batch_size: int | None = 256

    def __call__(self, model: nn.Module, x: Tensor, target: int | Tensor | None = None) -> Tensor:
        """Attributions shaped like ``x`` for ``target`` (default: the predicted class)."""
        return self.run(model, x, target).attributions

    def run(self, model: nn.Module, x: Tensor, target: int | Tensor | None = None) -> Attribution:
        owner = type(self).__name__
        device = model_device(model, x.device)
        target = resolve_target(model, x, target, owner, self.batch_size)
        fast = model
        xd = x.detach().to(device)
        if gains_from_channels_last(model, xd):
            fast = channels_last_copy(model)
            xd = xd.contiguous(memory_format=torch.channels_last)
        if len(x) == 0:
            return Attribution(torch.zeros_like(x), target, None)
        with eval_mode(fast):
            attributions, delta = self._attribute(fast, xd, target.to(device))
        return Attribution(attributions.to(x.device).contiguous(), target,
                           None if delta is None else delta.to(x.device))

    def _attribute(self, model: nn.Module, x: Tensor,
                   target: Tensor) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError


@dataclass(frozen=True)
class Baseline(Constraint):
    """A reference input: a finite number, or a floating tensor of finite values (its
    shape is checked against the inputs at call time by :func:`baseline_tensor`)."""

    def describe(self) -> str:
        return "a finite number or a floating tensor of finite values broadcastable to x"

    def problem(self, value: Any) -> str | None:
        if isinstance(value, Tensor):
            if not value.is_floating_point():
                return f"a tensor of dtype {value.dtype}"
            return None if bool(torch.isfinite(value).all()) else "the tensor is not finite"
        return Float().problem(value)

    def normalise(self, value: Any) -> float | Tensor:
        return value if isinstance(value, Tensor) else float(value)

    def example(self) -> float:
        return 0.0

    def invalid_examples(self) -> list[Any]:
        return ["text", None, True, math.nan, math.inf, torch.tensor([math.nan]),
                torch.zeros(2, dtype=torch.long)]


@dataclass(frozen=True)
class Sides(Constraint):
    """The sides of a window or its strides over one input's dimensions: a non-empty
    list or tuple of ints >= 1 (normalised to a tuple), or with ``scalar`` also one int
    >= 1 for every dimension (normalised to a 1-tuple)."""

    scalar: bool = False

    def describe(self) -> str:
        text = "a non-empty sequence of ints >= 1"
        return f"an int >= 1 or {text}" if self.scalar else text

    def problem(self, value: Any) -> str | None:
        values = (value,) if self.scalar and isinstance(value, int) else value
        if not isinstance(values, (list, tuple)) or not values:
            return ""
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
            return ""
        return None

    def normalise(self, value: Any) -> tuple[int, ...]:
        return (value,) if isinstance(value, int) else tuple(value)

    def example(self) -> Any:
        return 1 if self.scalar else (1,)

    def invalid_examples(self) -> list[Any]:
        bad: list[Any] = ["text", None, True, (), (0,), (2, 0), (1.5,), (True,), 2.0]
        return bad + [0, -1] if self.scalar else bad + [4]


def resolve_target(model: nn.Module, x: Tensor, target: int | Tensor | None, owner: str,
                   batch_size: int | None = 256) -> Tensor:
    """``target`` as int64 [N] on ``x``'s device, after checking ``x`` (a floating tensor of
    the model's input shape within its bounds) and the classes (0..K-1); None: the
    model's predicted class of each input."""
    if target is None:
        check_attack_inputs(model, x, torch.zeros(len(x), dtype=torch.long, device=x.device),
                            owner)
        with eval_mode(model):
            return batched_predict(model, x, batch_size=batch_size, owner=owner)
    if isinstance(target, int) and not isinstance(target, bool):
        target = torch.full((len(x),), target, dtype=torch.long, device=x.device)
    elif not isinstance(target, Tensor) or target.dtype != torch.int64 or target.ndim != 1 \
            or len(target) != len(x):
        got = (f"a tensor of dtype {target.dtype} and shape {tuple(target.shape)}"
               if isinstance(target, Tensor) else repr(target))
        raise AssayValueError(f"The 'target' parameter of {owner} must be None (the predicted "
                              f"class), an int, or an int64 tensor of shape [{len(x)}] (one "
                              f"class per input). Got {got} instead.")
    target = target.to(x.device)
    check_attack_inputs(model, x, target, owner, labels="'target'")
    return target


def expanded_blocks(inputs: int, expansions: int,
                    batch_size: int | None) -> Iterator[tuple[slice, slice]]:
    """Blocks ``(inputs, expansions)`` of at most ``batch_size`` rows each (one row is one
    input under one expansion: an IG step, a noise draw, an occlusion window), as wide as
    the batch allows: whole inputs with all their expansions where they fit, else one
    input at a time with its expansions in runs of ``batch_size``."""
    if batch_size is None or expansions <= batch_size:
        per = inputs if batch_size is None else max(1, batch_size // expansions)
        for start in range(0, inputs, per):
            yield slice(start, min(start + per, inputs)), slice(0, expansions)
        return
    for index in range(inputs):
        for start in range(0, expansions, batch_size):
            yield slice(index, index + 1), slice(start, min(start + batch_size, expansions))


def target_gradient(model: nn.Module, rows: Tensor, target: Tensor,
                    owner: str) -> tuple[Tensor, Tensor]:
    """The gradient of each row's ``target`` logit with respect to the row (the weights
    get no gradient), and those logits."""
    rows = rows.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = check_logits(model(rows), len(rows), owner)
        selected = logits.gather(1, target[:, None]).squeeze(1)
        (grad,) = torch.autograd.grad(selected.sum(), rows)
    return grad, selected.detach()


def masked_outputs(model: nn.Module, x: Tensor, baseline: Tensor, keep: Tensor, target: Tensor,
                   batch_size: int | None, owner: str) -> Tensor:
    """The target logit [N, S] of each input with the features outside each of the ``S``
    masks ``keep`` [S, *x.shape[1:]] (bool) set to ``baseline`` (shaped like ``x``): one
    row per input and mask, in passes of ``batch_size`` rows, without gradients."""
    out = torch.empty(len(x), len(keep), device=x.device, dtype=x.dtype)
    for inputs, masks in expanded_blocks(len(x), len(keep), batch_size):
        rows = torch.where(keep[None, masks], x[inputs, None], baseline[inputs, None])
        n, s = rows.shape[:2]
        logits = batched_logits(model, rows.flatten(0, 1), batch_size=None, owner=owner)
        out[inputs, masks] = logits.gather(1, target[inputs].repeat_interleave(s)[:, None]
                                           ).view(n, s)
    return out


def input_gradients(model: nn.Module, x: Tensor, target: Tensor, batch_size: int | None,
                    owner: str) -> Tensor:
    """:func:`target_gradient` of every input, in passes of ``batch_size`` inputs."""
    def block(index: Tensor) -> Tensor:
        return target_gradient(model, x[index], target[index], owner)[0]

    return map_batches(block, torch.arange(len(x), device=x.device), batch_size=batch_size,
                       device=x.device)


def feature_shape_error(owner: str, name: str, value: object, shape: tuple[int, ...]) -> None:
    raise AssayValueError(f"The '{name}' parameter of {owner} must be a number or a tensor "
                          f"broadcastable to the inputs' shape [N, {', '.join(map(str, shape))}]. "
                          f"Got {value!r} instead.")


def baseline_tensor(baseline: float | Tensor, x: Tensor, owner: str) -> Tensor:
    """``baseline`` (a number, or a tensor broadcastable to ``x``) as a tensor shaped like
    ``x`` on its device."""
    if isinstance(baseline, Tensor):
        try:
            return torch.broadcast_to(baseline.to(x.device, x.dtype), x.shape)
        except RuntimeError:
            feature_shape_error(owner, "baseline", tuple(baseline.shape), tuple(x.shape[1:]))
    return torch.full_like(x, float(baseline))
