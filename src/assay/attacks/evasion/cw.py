"""Carlini-Wagner L2: the smallest L2 perturbation found by optimisation.

Reference: N. Carlini, D. Wagner. "Towards Evaluating the Robustness of Neural Networks".
IEEE Symposium on Security and Privacy (S&P) 2017.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..._params import Bool, Float, Int
from .._losses import margin
from .base import ATTACKS, BATCH_SIZE, AttackResult, EvasionAttack

_BIG = 1e10


@ATTACKS.register("cw")
class CarliniWagnerL2(EvasionAttack):
    """Carlini-Wagner L2: minimise ``||x' - x||_2^2 + c * f(x')`` with Adam, binary search on c.

    The change of variables ``x' = lo + (tanh(w) + 1) / 2 * (hi - lo)`` keeps every iterate
    inside the model's bounds ``[lo, hi]``. The margin loss is
    ``f = max(z_y - max_{i != y} z_i + kappa, 0)`` (untargeted) or
    ``f = max(max_{i != t} z_i - z_t + kappa, 0)`` (targeted, ``y`` holding targets t).
    Each sample has its own constant c: it starts at ``initial_const``; after each of the
    ``binary_search_steps`` optimisations, c is halved towards the bracket found when the
    attack succeeded, and multiplied by 10 (or bisected, once bracketed) when it failed.
    Every iterate that reaches the goal with a smaller L2 than the best so far is kept, so
    ``x_adv`` is the smallest-L2 adversarial point seen over all steps. With
    ``abort_early`` a sample stops costing compute within one optimisation once its loss
    has not fallen by 0.01% over ``max_iter // 10`` iterations (the paper's rule, per sample).

    A minimal-perturbation attack: there is no ``eps``. ``success`` means the goal was
    reached (misclassified with margin ``kappa``, or classified as the target); where it
    was not, ``x_adv`` is the input itself.

    Parameters (keyword-only)
    -------------------------
    confidence : float >= 0, default 0.0 - the margin kappa
    initial_const : float > 0, default 1e-3 - the first c (as in the authors' code)
    binary_search_steps : int >= 1, default 9
    max_iter : int >= 1, default 1000 - Adam steps per binary-search step
    lr : float > 0, default 0.01 - Adam's learning rate (in tanh space)
    abort_early : bool, default True
    targeted : bool, default False
    batch_size : int or None, default None - split the inputs into batches of this size

    Shapes: ``x`` [N, ...] in the model's bounds, ``y`` [N] int64 (labels, or targets when
    targeted); returns ``x_adv`` like ``x``.

    Example
    -------
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    >>> x = torch.rand(8, 1, 2, 2)
    >>> y = model(x).argmax(1)
    >>> result = CarliniWagnerL2(max_iter=100, binary_search_steps=5).run(model, x, y)
    >>> bool((model(result.x_adv).argmax(1)[result.success] != y[result.success]).all())
    True
    """

    constraints = {
        "confidence": Float(low=0.0),
        "initial_const": Float(low=0.0, low_open=True),
        "binary_search_steps": Int(low=1),
        "max_iter": Int(low=1),
        "lr": Float(low=0.0, low_open=True),
        "abort_early": Bool(),
        "targeted": Bool(),
        "batch_size": BATCH_SIZE,
    }

    def __init__(self, *, confidence: float = 0.0, initial_const: float = 1e-3,
                 binary_search_steps: int = 9, max_iter: int = 1000, lr: float = 0.01,
                 abort_early: bool = True, targeted: bool = False,
                 batch_size: int | None = None) -> None:
        self.confidence = self._validated("confidence", confidence)
        self.initial_const = self._validated("initial_const", initial_const)
        self.binary_search_steps = self._validated("binary_search_steps", binary_search_steps)
        self.max_iter = self._validated("max_iter", max_iter)
        self.lr = self._validated("lr", lr)
        self.abort_early = self._validated("abort_early", abort_early)
        self.targeted = self._validated("targeted", targeted)
        self.batch_size = self._validated("batch_size", batch_size)

    def _margins(self, logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """(loss term f, goal reached) per sample."""
        gap = margin(logits, y)
        gap = -gap if self.targeted else gap  # <= -kappa means reached
        return (gap + self.confidence).clamp_min(0.0), gap < -self.confidence

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, lo: float,
             hi: float) -> AttackResult:
        n = len(x)
        x_adv = x.detach().clone()
        success = torch.zeros(n, dtype=torch.bool, device=x.device)
        if n == 0:
            return AttackResult(x_adv, success, 0)
        scale = hi - lo
        unit = ((x.detach() - lo) / scale * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6)
        w_start = torch.atanh(unit)
        best_l2 = torch.full((n,), float("inf"), device=x.device, dtype=x.dtype)
        const = torch.full((n,), self.initial_const, device=x.device, dtype=x.dtype)
        lower = torch.zeros_like(const)
        upper = torch.full_like(const, _BIG)
        beta1, beta2, adam_eps = 0.9, 0.999, 1e-8
        window = max(self.max_iter // 10, 1)
        queries = 0
        for _ in range(self.binary_search_steps):
            found = torch.zeros(n, dtype=torch.bool, device=x.device)
            index = torch.arange(n, device=x.device)
            w, x0, target, c = w_start.clone(), x.detach(), y, const
            m, v = torch.zeros_like(w), torch.zeros_like(w)
            previous = torch.full((n,), float("inf"), device=x.device, dtype=x.dtype)
            for it in range(self.max_iter):
                w.requires_grad_(True)
                current = lo + (torch.tanh(w) + 1) / 2 * scale
                logits = model(current)
                queries += len(current)
                l2sq = (current - x0).flatten(1).pow(2).sum(1)
                f, reached = self._margins(logits, target)
                loss = l2sq + c * f
                grad, = torch.autograd.grad(loss.sum(), w)
                with torch.no_grad():
                    l2 = l2sq.detach().sqrt()
                    better = reached & (l2 < best_l2[index])
                    if bool(better.any()):
                        hit = index[better]
                        best_l2[hit] = l2[better]
                        x_adv[hit] = current.detach()[better]
                        success[hit] = True
                    found[index[reached]] = True
                    t = it + 1
                    m = beta1 * m + (1 - beta1) * grad
                    v = beta2 * v + (1 - beta2) * grad * grad
                    step = (m / (1 - beta1 ** t)) / ((v / (1 - beta2 ** t)).sqrt() + adam_eps)
                    w = w.detach() - self.lr * step
                    if self.abort_early and t % window == 0:
                        loss = loss.detach()
                        keep = loss <= previous * 0.9999
                        previous = loss
                        if not bool(keep.all()):
                            if not bool(keep.any()):
                                break
                            index, w, x0 = index[keep], w[keep], x0[keep]
                            target, c = target[keep], c[keep]
                            m, v, previous = m[keep], v[keep], previous[keep]
            # Binary search on c, per sample.
            upper = torch.where(found, torch.minimum(upper, const), upper)
            lower = torch.where(found, lower, torch.maximum(lower, const))
            bracketed = upper < _BIG / 10
            const = torch.where(bracketed, (lower + upper) / 2, const * 10)
        return AttackResult(x_adv, success, queries)
