"""The interface every OOD detector follows, and the pieces they share."""

from __future__ import annotations

from typing import ClassVar, Self

import torch
from torch import Tensor, nn

from ..._params import check_int
from ...core.features import check_inputs, logits_and_features
from ...errors import AssayValueError
from ...metrics._tensor_checks import labels_vector


class OODDetector:
    """Base class of the OOD detectors: settings in ``__init__``, model and data at call time.

    ``fit(model, x_in_train, y_in_train=None) -> self`` learns what the method needs from
    in-distribution training data (a no-op for post-hoc methods), and
    ``score(model, x) -> Tensor[N]`` returns one score per input, **higher = more
    in-distribution**, on ``x``'s device. The model runs in eval mode (each submodule's
    mode is restored) and in batches of ``batch_size``.
    """

    #: registry key
    name: ClassVar[str] = ""
    #: whether ``score`` needs a prior ``fit``
    requires_fit: ClassVar[bool] = False

    def __init__(self, *, batch_size: int = 256) -> None:
        self.batch_size = check_int("batch_size", batch_size, type(self).__name__, low=1)
        self._fitted = not self.requires_fit

    def fit(self, model: nn.Module, x_in_train: Tensor, y_in_train: Tensor | None = None
            ) -> Self:
        """Learn from in-distribution training data; post-hoc detectors ignore it."""
        return self

    def score(self, model: nn.Module, x: Tensor) -> Tensor:
        """Scores [N] for inputs ``x`` [N, ...]; higher = more in-distribution."""
        raise NotImplementedError

    @property
    def is_fitted(self) -> bool:
        return self._fitted

    def _check_fitted(self) -> None:
        if not self._fitted:
            raise AssayValueError(
                f"{type(self).__name__} must be fitted before scoring: call "
                f"{type(self).__name__}(...).fit(model, x_in_train) first."
            )

    def _features(self, model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
        check_inputs(x, f"{type(self).__name__}.score")
        return logits_and_features(model, x, batch_size=self.batch_size)

    def _train_features(self, model: nn.Module, x_in_train: Tensor,
                        y_in_train: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Logits, features and labels of the training data (predicted labels if y is None)."""
        owner = f"{type(self).__name__}.fit"
        check_inputs(x_in_train, owner, "x_in_train")
        logits, feats = logits_and_features(model, x_in_train, batch_size=self.batch_size)
        if y_in_train is None:
            labels = logits.argmax(dim=1)
        else:
            labels = labels_vector("y_in_train", y_in_train, owner, logits.shape[0],
                                   logits.shape[1]).to(logits.device)
        return logits, feats, labels

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in vars(self).items()
                             if not k.startswith("_") and not k.endswith("_"))
        return f"{type(self).__name__}({settings})"


def check_float_input(x: Tensor, owner: str) -> None:
    """Input preprocessing needs a gradient with respect to a floating input."""
    if not x.is_floating_point():
        raise AssayValueError(
            f"The 'x' parameter of {owner} must be a floating tensor for input preprocessing "
            f"(a gradient step on the input). Got dtype {x.dtype} instead; convert images to "
            "float in [0, 1]."
        )


def gradient_sign_step(x: Tensor, objective: Tensor, epsilon: float) -> Tensor:
    """``x - epsilon * sign(d objective / d x)``: one step that lowers ``objective``.

    Only the gradient with respect to the input is taken, so the model's parameter
    gradients (``.grad``) are left untouched.
    """
    (grad,) = torch.autograd.grad(objective, x)
    return (x - epsilon * grad.sign()).detach()
