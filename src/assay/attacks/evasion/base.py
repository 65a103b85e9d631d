"""What every evasion attack shares: the result type, input checks, batching, and the
model's eval mode during the attack (restored afterwards)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..._params import check_int
from ...errors import AssayValueError


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


def model_bounds(model: nn.Module, default: tuple[float, float] = (0.0, 1.0)) -> tuple[float, float]:
    """Input bounds of an :class:`assay.core.model.ModelWrapper`, else ``default``."""
    bounds = getattr(model, "bounds", None)
    return tuple(bounds) if bounds is not None else default  # type: ignore[return-value]


def check_batch_size(batch_size: int | None, owner: str) -> int | None:
    return None if batch_size is None else check_int("batch_size", batch_size, owner, low=1)


class EvasionAttack:
    """Base class: subclasses implement ``_run(model, x, y, lo, hi)`` on one batch."""

    batch_size: int | None = None
    targeted: bool = False

    def _achieved(self, logits: Tensor, y: Tensor) -> Tensor:
        """Per sample: the goal is reached (the target class, or any wrong class)."""
        pred = logits.argmax(dim=1)
        return pred == y if self.targeted else pred != y

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """Adversarial examples for ``x`` with labels (or, when targeted, targets) ``y``."""
        return self.run(model, x, y).x_adv

    def run(self, model: nn.Module, x: Tensor, y: Tensor) -> AttackResult:
        name = type(self).__name__
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise AssayValueError(f"{name}: x must be a floating-point tensor.")
        if not isinstance(y, Tensor) or y.ndim != 1 or len(y) != len(x):
            raise AssayValueError(f"{name}: y must be a 1-D tensor with one label per input; "
                                  f"got shape {tuple(getattr(y, 'shape', ()))} for {len(x)} inputs.")
        lo, hi = model_bounds(model)
        if len(x) and (float(x.min()) < lo - 1e-6 or float(x.max()) > hi + 1e-6):
            raise AssayValueError(f"{name}: inputs lie outside the model's bounds [{lo}, {hi}]; "
                                  "pass inputs in their natural range (normalisation belongs "
                                  "in the model wrapper).")
        was_training = model.training
        model.eval()
        try:
            step = self.batch_size or max(len(x), 1)
            parts = [self._run(model, x[i:i + step], y[i:i + step].to(x.device), lo, hi)
                     for i in range(0, len(x), step)]
        finally:
            model.train(was_training)
        if not parts:
            return AttackResult(x.clone(), torch.zeros(0, dtype=torch.bool, device=x.device), 0)
        return AttackResult(torch.cat([p.x_adv for p in parts]),
                            torch.cat([p.success for p in parts]),
                            sum(p.queries for p in parts))

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, lo: float,
             hi: float) -> AttackResult:
        raise NotImplementedError
