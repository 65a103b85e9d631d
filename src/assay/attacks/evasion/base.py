"""What every evasion attack shares: the result type, input checks, batching, and the
model's eval mode during the attack (restored afterwards)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..._params import Configured, Int, Optional
from ...core.data import outside_bounds
from ...core.inference import channels_last_copy, eval_mode, gains_from_channels_last
from ...errors import AssayValueError
from ...registry import Registry


@dataclass(frozen=True)
class AttackResult:
    """Adversarial examples and what they cost.

    x_adv : Tensor [N, ...] - the adversarial inputs (the input itself where nothing was found)
    success : Tensor [N] bool - the attack reached its goal (misclassified, or the target class)
    queries : int - forward passes spent, counted per sample (a batch of 64 counts 64)
    """

    x_adv: Tensor
    success: Tensor
    queries: int


def model_bounds(model: nn.Module,
                 default: tuple[float, float] = (0.0, 1.0)) -> tuple[float, float]:
    """Input bounds of an :class:`assay.core.model.ModelWrapper`, else ``default``."""
    bounds = getattr(model, "bounds", None)
    return (float(bounds[0]), float(bounds[1])) if bounds is not None else default


BATCH_SIZE = Optional(Int(low=1))  # None: the whole input at once

ATTACKS: Registry[type[EvasionAttack]] = Registry(
    "attack", group="assay.attacks",
    builtins=[f"{__package__}.{m}" for m in ("pgd", "fgsm", "apgd", "mifgsm", "deepfool", "cw",
                                              "fab", "square", "hopskipjump")])


def check_batch_size(batch_size: int | None, owner: str) -> int | None:
    return BATCH_SIZE.check("batch_size", batch_size, owner)


def check_attack_inputs(model: nn.Module, x: Tensor, y: Tensor, owner: str, *,
                        labels: str = "labels") -> tuple[float, float]:
    """Refuse inputs an attack or evaluation cannot use; return the model's bounds.

    ``x``: a floating tensor ``[N, *model.input_shape]`` (when the model declares its input
    shape), finite and within ``model.bounds`` (up to ``BOUNDS_TOLERANCE``); ``y``: int64
    ``[N]`` with values in ``0 .. K-1``, K the model's ``num_classes`` (a model without one
    is asked with one forward pass on ``x[:1]`` in eval mode). Costs a min/max over ``x``
    and ``y``; call it once per call, not per step.
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        got = f"dtype {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
        raise AssayValueError(f"{owner}: x must be a floating-point tensor; got {got}. Fix: "
                              "pass floats in their natural range (e.g. x.float() / 255).")
    if not isinstance(y, Tensor) or y.ndim != 1 or len(y) != len(x):
        raise AssayValueError(f"{owner}: y must be a 1-D tensor with one label per input; "
                              f"got shape {tuple(getattr(y, 'shape', ()))} for {len(x)} inputs.")
    if y.dtype != torch.int64:
        raise AssayValueError(f"{owner}: y must hold int64 class indices; got dtype {y.dtype}. "
                              "Fix: pass y.long() (class indices, not one-hot or scores).")
    shape = getattr(model, "input_shape", None)
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise AssayValueError(f"{owner}: inputs of shape {tuple(x.shape[1:])} do not match the "
                              f"model's input shape {tuple(shape)}. Fix: reshape x to "
                              f"[N, {', '.join(map(str, shape))}].")
    lo, hi = model_bounds(model)
    if len(x) == 0:
        return lo, hi
    found = outside_bounds(x, (lo, hi))
    if found is not None:
        if not all(map(math.isfinite, found)):
            raise AssayValueError(f"{owner}: x contains NaN or infinite values. Fix: clean or "
                                  "drop those inputs.")
        raise AssayValueError(f"{owner}: inputs range from {found[0]:g} to {found[1]:g}, outside "
                              f"the model's bounds [{lo:g}, {hi:g}]. Fix: pass inputs in their "
                              "natural range (normalisation belongs in the model wrapper), or "
                              "set the model's bounds.")
    num_classes = getattr(model, "num_classes", None)
    if num_classes is None:
        with eval_mode(model), torch.no_grad():
            num_classes = model(x[:1]).shape[-1]
    low, high = (int(v) for v in torch.stack(torch.aminmax(y)).cpu())
    if low < 0 or high >= num_classes:
        raise AssayValueError(f"{owner}: {labels} must lie in 0..{num_classes - 1} (the model's "
                              f"{num_classes} classes); found {labels} from {low} to {high}. "
                              "Fix: pass the labels of the classes the model outputs.")
    return lo, hi


class EvasionAttack(Configured):
    """Base class: subclasses implement ``_run(model, x, y, lo, hi)`` on one batch, and
    declare every constructor keyword's allowed values in ``constraints``."""

    batch_size: int | None = None
    targeted: bool = False
    # Gradient attacks run a channels_last copy on the CPU; the query-only ones query the
    # model as given, so a model that counts or logs its queries sees every one.
    layout_copy: bool = True

    def _achieved(self, logits: Tensor, y: Tensor) -> Tensor:
        """Per sample: the goal is reached (the target class, or any wrong class)."""
        pred = logits.argmax(dim=1)
        return pred == y if self.targeted else pred != y

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """Adversarial examples for ``x`` with labels (or, when targeted, targets) ``y``."""
        return self.run(model, x, y).x_adv

    def run(self, model: nn.Module, x: Tensor, y: Tensor) -> AttackResult:
        """The attack on ``x`` with labels (or targets) ``y``, in batches of ``batch_size``,
        with the model in eval mode. On the CPU, gradient attacks attack a model with 2-D
        convolutions as a copy with channels_last weights
        (:func:`assay.core.inference.channels_last_copy`: the same function up to float
        rounding; forward and backward of the MNIST LeNet 1.2x faster); the model itself
        is never changed."""
        lo, hi = check_attack_inputs(model, x, y, type(self).__name__,
                                     labels="targets" if self.targeted else "labels")
        if self.layout_copy and gains_from_channels_last(model, x):
            model = channels_last_copy(model)
        with eval_mode(model):
            step = self._samples_per_pass(x)
            parts = [self._run(model, x[i:i + step], y[i:i + step].to(x.device), lo, hi)
                     for i in range(0, len(x), step)]
        if not parts:
            return AttackResult(x.clone(), torch.zeros(0, dtype=torch.bool, device=x.device), 0)
        return AttackResult(torch.cat([p.x_adv for p in parts]),
                            torch.cat([p.success for p in parts]),
                            sum(p.queries for p in parts))

    def _samples_per_pass(self, x: Tensor) -> int:
        """How many of the inputs ``x`` one call of ``_run`` gets."""
        return self.batch_size or max(len(x), 1)

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, lo: float,
             hi: float) -> AttackResult:
        raise NotImplementedError
