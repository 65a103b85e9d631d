"""Temperature scaling.

Reference: Chuan Guo, Geoff Pleiss, Yu Sun and Kilian Q. Weinberger, "On Calibration of
Modern Neural Networks", ICML 2017.

One scalar T > 0 divides all logits; it is fitted by minimising the negative
log-likelihood on held-out calibration data. Dividing by a positive constant keeps the
argmax, so accuracy is unchanged; only the confidence moves (T > 1 softens an
overconfident model).

Example::

    >>> import torch
    >>> from torch import nn
    >>> from assay.defenses.calibration.temperature import TemperatureScaled, fit_temperature
    >>> g = torch.Generator().manual_seed(0)
    >>> true_logits = 2 * torch.randn(2000, 5, generator=g)
    >>> labels = torch.multinomial(true_logits.softmax(1), 1, generator=g).squeeze(1)
    >>> t = fit_temperature(3 * true_logits, labels)  # a model 3x overconfident
    >>> 2.7 < t < 3.3
    True
    >>> scaled = TemperatureScaled(nn.Linear(4, 5), temperature=t)
"""

from __future__ import annotations

import math
from typing import Self

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..._params import check_float, check_int
from ...core.features import check_inputs
from ...core.inference import batched_logits
from ...errors import AssayValueError
from ...metrics._tensor_checks import float_matrix, labels_vector

__all__ = ["TemperatureScaled", "fit_temperature"]

#: the search range of T; an optimum outside it (e.g. all calibration samples correct,
#: where the NLL keeps falling as T -> 0) ends on the bound
T_MIN, T_MAX = 1e-2, 1e2


def fit_temperature(logits: Tensor, labels: Tensor, *, max_iter: int = 100) -> float:
    """The temperature T minimising the NLL of ``softmax(logits / T)`` (Guo et al., 2017).

    L-BFGS (strong-Wolfe line search) on log T, starting at T = 1, in float64 on the
    logits' device; T is kept in [0.01, 100].

    Parameters:
        logits: held-out calibration logits [N, K] (not the training set's).
        labels: integer labels [N] in [0, K).
        max_iter: L-BFGS iterations, an int >= 1 (default 100).

    Returns:
        T as a float.
    """
    owner = "fit_temperature"
    check_int("max_iter", max_iter, owner, low=1)
    z = float_matrix("logits", logits, owner).detach().double()
    y = labels_vector("labels", labels, owner, z.shape[0], z.shape[1]).to(z.device)
    log_t = torch.zeros(1, dtype=torch.float64, device=z.device, requires_grad=True)
    bounds = (math.log(T_MIN), math.log(T_MAX))
    optimiser = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-10,
                                  tolerance_change=1e-12)

    def closure() -> Tensor:
        optimiser.zero_grad()
        loss = F.cross_entropy(z * torch.exp(-log_t.clamp(*bounds)), y)
        loss.backward()
        return loss

    optimiser.step(closure)
    value = float(log_t.detach().clamp(*bounds).exp())
    if not math.isfinite(value):
        raise AssayValueError("fit_temperature: the optimisation diverged; check the logits.")
    return value


class TemperatureScaled(nn.Module):
    """A new model returning ``model(x) / T`` (Guo et al., ICML 2017).

    The wrapped model is not modified; its argmax (and so its accuracy) is unchanged.
    T is a buffer, so it moves with ``.to(device)`` and is saved in the state dict.

    Parameters:
        model: the classifier returning logits.
        temperature: T, a number > 0 (no default: fit it with :func:`fit_temperature` or
            :meth:`TemperatureScaled.fit`).

    Example::

        >>> import torch
        >>> from torch import nn
        >>> base = nn.Linear(4, 3)
        >>> scaled = TemperatureScaled(base, temperature=2.0)
        >>> x = torch.rand(6, 4)
        >>> torch.equal(scaled(x).argmax(1), base(x).argmax(1))
        True
    """

    temperature: Tensor

    def __init__(self, model: nn.Module, *, temperature: float) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise AssayValueError("The 'model' parameter of TemperatureScaled must be a "
                                  f"torch.nn.Module. Got {type(model).__name__} instead.")
        t = check_float("temperature", temperature, "TemperatureScaled", low=0.0,
                        low_open=True)
        self.model = model
        self.register_buffer("temperature", torch.tensor(t))
        self.train(model.training)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x) / self.temperature

    @classmethod
    def fit(cls, model: nn.Module, x_cal: Tensor, y_cal: Tensor, *, batch_size: int = 256,
            max_iter: int = 100) -> Self:
        """Fit T on held-out data ``(x_cal, y_cal)`` and return the wrapped model.

        Parameters:
            model: the classifier returning logits.
            x_cal: calibration inputs [N, ...] (held out from training).
            y_cal: their labels [N].
            batch_size: samples per forward pass, an int >= 1 (default 256).
            max_iter: L-BFGS iterations, an int >= 1 (default 100).
        """
        check_inputs(x_cal, "TemperatureScaled.fit", "x_cal")
        logits = batched_logits(model, x_cal, batch_size=batch_size)
        if isinstance(y_cal, Tensor):
            y_cal = y_cal.to(logits.device)
        return cls(model, temperature=fit_temperature(logits, y_cal, max_iter=max_iter))

    def extra_repr(self) -> str:
        return f"temperature={float(self.temperature):.4g}"
