"""Momentum iterative fast gradient sign method (MI-FGSM).

Reference: Y. Dong, F. Liao, T. Pang, H. Su, J. Zhu, X. Hu, J. Li. "Boosting Adversarial
Attacks with Momentum". CVPR 2018.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..._params import Bool, Choice, Float, Int, Optional
from .._projection import Norm, ascent_direction, project
from .base import ATTACKS, BATCH_SIZE, AttackResult, EvasionAttack


@ATTACKS.register("mifgsm")
class MIFGSM(EvasionAttack):
    """Iterative FGSM whose steps follow an accumulated, L1-normalised gradient.

    ``g <- decay * g + grad / ||grad||_1`` (per sample), then ``x <- x + step_size *
    sign(g)`` (Linf) or ``step_size * g / ||g||_2`` (L2), projected onto the ``eps`` ball
    and the model's bounds. The momentum stabilises the direction, so examples crafted
    on a surrogate model transfer better to other models (see :func:`transfer_attack`).
    Deterministic: it starts at the input and takes no seed.

    Parameters (keyword-only)
    -------------------------
    eps : float >= 0 - radius of the ball. ``eps=0`` returns the inputs unchanged.
    norm : {"linf", "l2"}, default "linf"
    steps : int >= 0, default 10
    step_size : float > 0 or None, default None - None means ``eps / steps`` (the paper).
    decay : float >= 0, default 1.0 - momentum decay mu; 0 gives I-FGSM.
    targeted : bool, default False - when True, ``y`` holds target classes.
    early_stop : bool, default False - stop attacking samples the model already gets
        wrong. Off by default: for transfer, pushing on past the surrogate's boundary is
        what makes the examples transfer; turn it on for a white-box attack.
    batch_size : int or None, default None - split the inputs into batches of this size

    Shapes: ``x`` [N, ...] in the model's bounds, ``y`` [N] int64; returns ``x_adv`` like ``x``.

    Example
    -------
    >>> import torch
    >>> from torch import nn
    >>> surrogate = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    >>> x, y = torch.rand(8, 1, 2, 2), torch.randint(0, 3, (8,))
    >>> result = MIFGSM(eps=0.1, steps=5).run(surrogate, x, y)
    >>> bool(((result.x_adv - x).abs() <= 0.1 + 1e-6).all()), result.queries
    (True, 48)
    """

    constraints = {
        "eps": Float(low=0.0),
        "norm": Choice(("linf", "l2")),
        "steps": Int(low=0),
        "step_size": Optional(Float(low=0.0, low_open=True)),
        "decay": Float(low=0.0),
        "targeted": Bool(),
        "early_stop": Bool(),
        "batch_size": BATCH_SIZE,
    }

    def __init__(self, *, eps: float, norm: Norm = "linf", steps: int = 10,
                 step_size: float | None = None, decay: float = 1.0, targeted: bool = False,
                 early_stop: bool = False, batch_size: int | None = None) -> None:
        self.eps = self._validated("eps", eps)
        self.norm: Norm = self._validated("norm", norm)
        self.steps = self._validated("steps", steps)
        self.step_size = self._validated("step_size", step_size)
        self.decay = self._validated("decay", decay)
        self.targeted = self._validated("targeted", targeted)
        self.early_stop = self._validated("early_stop", early_stop)
        self.batch_size = self._validated("batch_size", batch_size)

    @property
    def alpha(self) -> float:
        return self.step_size if self.step_size is not None else self.eps / max(self.steps, 1)

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, lo: float,
             hi: float) -> AttackResult:
        x_adv = x.detach().clone()
        success = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        if self.eps == 0 or len(x) == 0 or self.steps == 0:
            with torch.no_grad():
                success = self._achieved(model(x_adv), y)
            return AttackResult(x_adv, success, len(x))
        sign = -1.0 if self.targeted else 1.0
        view = (-1,) + (1,) * (x.ndim - 1)
        index = torch.arange(len(x), device=x.device)
        x0, target, current = x, y, x.detach().clone()
        momentum = torch.zeros_like(x)
        queries = 0
        for step in range(self.steps + 1):
            last = step == self.steps
            current.requires_grad_(True)
            logits = model(current)
            queries += len(current)
            if last:
                done = self._achieved(logits.detach(), target)
                x_adv[index] = current.detach()
                success[index] = done
                break
            keep = None
            if self.early_stop:
                done = self._achieved(logits.detach(), target)
                if bool(done.any()):
                    x_adv[index[done]] = current.detach()[done]
                    success[index[done]] = True
                    keep = ~done
                    if not bool(keep.any()):
                        break
            rows = slice(None) if keep is None else keep
            loss = F.cross_entropy(logits[rows], target[rows], reduction="sum")
            grad, = torch.autograd.grad(sign * loss, current)
            with torch.no_grad():
                if keep is not None:
                    index, x0, target = index[keep], x0[keep], target[keep]
                    current, momentum, grad = current[keep], momentum[keep], grad[keep]
                l1 = grad.abs().flatten(1).sum(dim=1).clamp_min(1e-12).view(view)
                momentum = self.decay * momentum + grad / l1
                moved = current + self.alpha * ascent_direction(momentum, self.norm)
                current = (x0 + project(moved - x0, self.norm, self.eps)).clamp(lo, hi)
        return AttackResult(x_adv, success, queries)
