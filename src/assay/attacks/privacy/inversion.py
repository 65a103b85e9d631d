"""Model inversion: the input a classifier is most confident belongs to a class, found by
gradient descent on the input (MI-Face of Fredrikson, Jha & Ristenpart, "Model Inversion
Attacks that Exploit Confidence Information and Basic Countermeasures", ACM CCS 2015).

When a class is one person (face recognition) or one rare category, the inversion shows
what the model learnt that person looks like; for classes of many samples (digits) it
shows what they have in common, which the ``model_inversion`` check compares with the
class's mean image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..._params import Configured, Float, Int, Optional
from ...core.inference import check_logits, eval_mode, model_device
from ...errors import AssayValueError
from ...explain.metrics import gaussian_blur
from ..evasion.base import model_bounds

__all__ = ["InversionResult", "ModelInversion"]


@dataclass(frozen=True)
class InversionResult:
    """One inversion per class asked for.

    images : Tensor [K, *input_shape], in the model's bounds: the lowest-cost point found
    classes : Tensor [K] int64
    confidence : Tensor [K], the model's probability of the class on its image
    steps : Tensor [K] int64, the descent steps each class ran before it stopped
    """

    images: Tensor
    classes: Tensor
    confidence: Tensor
    steps: Tensor


class ModelInversion(Configured):
    """MI-Face (Fredrikson, Jha & Ristenpart, CCS 2015, Algorithm 1).

    For each class, gradient descent on the cost ``c(x) = 1 - p_class(x)`` from
    ``x_0 = 0`` (clipped into the model's bounds): ``x_i = Process(x_{i-1} - lr *
    grad c(x_{i-1}))``, where Process clips to the bounds and, with ``blur_sigma``, blurs
    the image (a denoising step, in the place of the paper's denoise-and-sharpen for its
    autoencoder). A class stops when its cost is no lower than every one of the previous
    ``window`` costs (no progress), or when it reaches ``1 - threshold`` (the paper's
    gamma = 0.99 read as the confidence to reach, as ART's MIFace does), or after
    ``steps``; it keeps the lowest-cost image it visited. The paper's parameters: lr
    (lambda) 0.1, steps (alpha) 5000, window (beta) 100, gamma 0.99. All classes descend
    together in one batch; a class that has stopped costs nothing more. Deterministic: the
    start is fixed.

    Parameters (keyword-only)
    -------------------------
    steps : int >= 1, default 5000
    lr : float > 0, default 0.1
    window : int >= 1, default 100
    threshold : float in (0, 1), default 0.99
    blur_sigma : float > 0 or None, default None (no denoising)

    Call with the model and the classes (default: all) -> :class:`InversionResult`.

    Example
    -------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    >>> result = ModelInversion(steps=50)(net, [0, 2], input_shape=(1, 2, 2))
    >>> result.images.shape
    torch.Size([2, 1, 2, 2])
    """

    constraints = {"steps": Int(low=1), "lr": Float(low=0.0, low_open=True),
                   "window": Int(low=1),
                   "threshold": Float(low=0.0, high=1.0, low_open=True, high_open=True),
                   "blur_sigma": Optional(Float(low=0.0, low_open=True))}

    def __init__(self, *, steps: int = 5000, lr: float = 0.1, window: int = 100,
                 threshold: float = 0.99, blur_sigma: float | None = None) -> None:
        self.steps = self._validated("steps", steps)
        self.lr = self._validated("lr", lr)
        self.window = self._validated("window", window)
        self.threshold = self._validated("threshold", threshold)
        self.blur_sigma = self._validated("blur_sigma", blur_sigma)

    def __call__(self, model: nn.Module, classes: Sequence[int] | None = None, *,
                 input_shape: Sequence[int] | None = None) -> InversionResult:
        owner = type(self).__name__
        shape = input_shape if input_shape is not None else getattr(model, "input_shape", None)
        if shape is None:
            raise AssayValueError(f"{owner}: pass input_shape (one input's shape); the model "
                                  "does not declare one.")
        device = model_device(model)
        lo, hi = model_bounds(model)
        with eval_mode(model):
            start = torch.zeros((1, *shape), device=device).clamp(lo, hi)
            num_classes = getattr(model, "num_classes", None)
            if num_classes is None:
                with torch.no_grad():
                    num_classes = check_logits(model(start), 1, owner).shape[1]
            if classes is None:
                classes = range(num_classes)
            wanted = torch.as_tensor(list(classes), dtype=torch.long, device=device)
            if wanted.ndim != 1 or len(wanted) == 0 or bool((wanted < 0).any()) or \
                    bool((wanted >= num_classes).any()):
                raise AssayValueError(f"{owner}: 'classes' must name at least one class in "
                                      f"0..{num_classes - 1}. Got {list(classes)!r} instead.")
            return self._descend(model, wanted, start.expand(len(wanted), *shape).clone(),
                                 (lo, hi))

    def _cost(self, model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
        probs = F.softmax(model(x), dim=1)
        return 1 - probs.gather(1, target[:, None]).squeeze(1)

    def _descend(self, model: nn.Module, classes: Tensor, x: Tensor,
                 bounds: tuple[float, float]) -> InversionResult:
        lo, hi = bounds
        k = len(classes)
        best, best_cost = x.clone(), torch.full((k,), math.inf, device=x.device)
        history = torch.full((self.window, k), -math.inf, device=x.device)  # costs, a ring
        steps = torch.zeros(k, dtype=torch.long, device=x.device)
        index = torch.arange(k, device=x.device)  # the classes still descending
        for step in range(self.steps + 1):
            current = x[index].requires_grad_(True)
            cost = self._cost(model, current, classes[index])
            with torch.no_grad():
                better = cost < best_cost[index]
                best[index[better]] = current.detach()[better]
                best_cost[index[better]] = cost.detach()[better]
                # Algorithm 1: stop without progress over the window, or at the goal
                stalled = (cost >= history[:, index].max(0).values) if step > 0 else \
                    torch.zeros_like(better)
                done = stalled | (cost <= 1 - self.threshold)
                history[step % self.window, index] = cost.detach()
            if step == self.steps or bool(done.all()):
                break
            grad, = torch.autograd.grad(cost.sum(), current)
            with torch.no_grad():
                moved = current.detach() - self.lr * grad
                if self.blur_sigma is not None and moved.ndim == 4:
                    moved = gaussian_blur(moved, self.blur_sigma)
                keep = ~done
                index = index[keep]
                x[index] = moved[keep].clamp(lo, hi)
                steps[index] += 1
        with torch.no_grad():
            confidence = 1 - self._cost(model, best, classes)
        return InversionResult(best, classes, confidence, steps)
