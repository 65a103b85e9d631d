"""Fast gradient sign method (FGSM).

Reference: I. J. Goodfellow, J. Shlens, C. Szegedy. "Explaining and Harnessing Adversarial
Examples". ICLR 2015.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..._params import Bool, Choice, Float
from .._projection import Norm, ascent_direction
from .base import ATTACKS, BATCH_SIZE, AttackResult, EvasionAttack


@ATTACKS.register("fgsm")
class FGSM(EvasionAttack):
    """One gradient step of size ``eps`` on the cross-entropy loss.

    Linf: ``x + eps * sign(grad)`` (the paper's method); L2: ``x + eps * grad / ||grad||_2``
    (the fast gradient method, its L2 counterpart). The result is clipped to the model's
    input bounds. When targeted, the step descends the cross-entropy of the target class.
    Deterministic: no seed. ``success`` is measured with one more forward pass.

    Parameters (keyword-only)
    -------------------------
    eps : float >= 0 - step length (and radius of the ball). ``eps=0`` returns the inputs.
    norm : {"linf", "l2"}, default "linf"
    targeted : bool, default False - when True, ``y`` holds target classes.
    batch_size : int or None, default None - split the inputs into batches of this size

    Shapes: ``x`` [N, ...] in the model's bounds, ``y`` [N] int64; returns ``x_adv`` like ``x``.
    Queries: 2 per sample (gradient, then the check of the result).

    Example
    -------
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    >>> x, y = torch.rand(8, 1, 2, 2), torch.randint(0, 3, (8,))
    >>> result = FGSM(eps=0.1).run(model, x, y)
    >>> bool(((result.x_adv - x).abs() <= 0.1 + 1e-6).all()), result.success.shape
    (True, torch.Size([8]))
    """

    constraints = {
        "eps": Float(low=0.0),
        "norm": Choice(("linf", "l2")),
        "targeted": Bool(),
        "batch_size": BATCH_SIZE,
    }

    def __init__(self, *, eps: float, norm: Norm = "linf", targeted: bool = False,
                 batch_size: int | None = None) -> None:
        self.eps = self._validated("eps", eps)
        self.norm: Norm = self._validated("norm", norm)
        self.targeted = self._validated("targeted", targeted)
        self.batch_size = self._validated("batch_size", batch_size)

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, lo: float,
             hi: float) -> AttackResult:
        if self.eps == 0 or len(x) == 0:
            with torch.no_grad():
                success = self._achieved(model(x), y)
            return AttackResult(x.detach().clone(), success, len(x))
        current = x.detach().clone().requires_grad_(True)
        loss = F.cross_entropy(model(current), y, reduction="sum")
        grad, = torch.autograd.grad(-loss if self.targeted else loss, current)
        with torch.no_grad():
            x_adv = (x + self.eps * ascent_direction(grad, self.norm)).clamp(lo, hi)
            success = self._achieved(model(x_adv), y)
        return AttackResult(x_adv.detach(), success, 2 * len(x))
