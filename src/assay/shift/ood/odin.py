"""ODIN: temperature scaling plus input preprocessing.

Reference: Shiyu Liang, Yixuan Li and R. Srikant, "Enhancing The Reliability of
Out-of-distribution Image Detection in Neural Networks", ICLR 2018.

Each input takes one signed-gradient step that raises its temperature-scaled softmax
score, ``x~ = x - eps * sign(-d/dx log S_yhat(x; T))``, and the score is
``max_k softmax(f(x~) / T)_k``; higher = more in-distribution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..._params import check_float
from ...core.features import check_inputs
from ...core.inference import eval_mode, map_batches, model_device
from ._base import OODDetector, check_float_input, gradient_sign_step


class ODIN(OODDetector):
    """ODIN score (Liang et al., ICLR 2018). Post-hoc: no fit.

    The paper tunes T and eps on OOD validation data; the defaults are its usual
    choices, T = 1000 and eps = 0.0014 (the value reported for CIFAR-10 models). The step
    is taken in the model's input space (images in [0, 1]: normalisation lives inside
    the model), without clipping; ``epsilon=0`` gives temperature-scaled MSP.

    Parameters:
        temperature: T, a number > 0 (default 1000.0).
        epsilon: step size of the input preprocessing, a number >= 0 (default 0.0014).
        batch_size: samples per forward/backward pass, an int >= 1 (default 256).

    ``score(model, x)``: x [N, ...] floating -> scores [N] in (0, 1], higher = more
    in-distribution. The model's parameter gradients are not touched.

    Example::

        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> ODIN(temperature=1000.0, epsilon=0.0014).score(model, torch.rand(5, 4)).shape
        torch.Size([5])
    """

    name = "odin"

    def __init__(self, *, temperature: float = 1000.0, epsilon: float = 0.0014,
                 batch_size: int = 256) -> None:
        super().__init__(batch_size=batch_size)
        self.temperature = check_float("temperature", temperature, "ODIN", low=0.0,
                                       low_open=True)
        self.epsilon = check_float("epsilon", epsilon, "ODIN", low=0.0)

    def score(self, model: nn.Module, x: Tensor) -> Tensor:
        check_inputs(x, "ODIN.score")
        t = self.temperature

        def score_batch(xb: Tensor) -> Tensor:
            if self.epsilon > 0:
                check_float_input(xb, "ODIN.score")
                with torch.enable_grad():
                    xg = xb.detach().requires_grad_(True)
                    logits = model(xg) / t
                    # -log S_yhat(x; T), summed over the batch (samples are independent)
                    loss = F.cross_entropy(logits, logits.argmax(dim=1), reduction="sum")
                    xb = gradient_sign_step(xg, loss, self.epsilon)
            with torch.no_grad():
                return (model(xb) / t).softmax(dim=1).amax(dim=1)

        with eval_mode(model):
            return map_batches(score_batch, x, batch_size=self.batch_size,
                               device=model_device(model, x.device))
