"""FAB-T: the targeted fast adaptive boundary attack.

Reference: F. Croce, M. Hein. "Minimally distorted adversarial examples with a fast adaptive
boundary attack". ICML 2020. (The targeted variant over the top classes follows
F. Croce, M. Hein, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks", ICML 2020.)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..._params import Choice, Float, Int, Seed
from ...core.rng import seeded_generator
from .._projection import Norm, distance, random_in_ball
from .base import ATTACKS, BATCH_SIZE, AttackResult, EvasionAttack

_BISECTION_STEPS = 40


def _box_hyperplane_step(w: Tensor, need: Tensor, low: Tensor, high: Tensor, norm: Norm) -> Tensor:
    """The smallest step d (in ``norm``) with ``w . d = need`` and ``low <= d <= high``.

    Shapes: w, low, high [n, d]; need [n]. Where the box cannot reach the hyperplane the
    step goes as far as the box allows. Solved by bisection on the KKT multiplier: for L2
    ``d = clip(lam * w, low, high)``, for Linf ``d = clip(t * sign(w), low, high)``, both with
    ``w . d`` nondecreasing in the multiplier.
    """
    sgn = torch.where(need >= 0, 1.0, -1.0).to(w.dtype).unsqueeze(1)
    w = w * sgn  # now we need w . d = |need| >= 0, moving along +w
    target = need.abs()
    base = w.sign() if norm == "linf" else w

    def reached(lam: Tensor) -> Tensor:
        return (base * lam.unsqueeze(1)).clamp(low, high)

    room = torch.where(w > 0, high, low.neg()).clamp_min(0)
    scale = base.abs().clamp_min(1e-12)
    top = (room / scale).amax(1).clamp(max=1e12) + 1e-12
    left, right = torch.zeros_like(target), top
    for _ in range(_BISECTION_STEPS):
        mid = (left + right) / 2
        enough = (w * reached(mid)).sum(1) >= target
        right = torch.where(enough, mid, right)
        left = torch.where(enough, left, mid)
    return reached(right)


@ATTACKS.register("fab")
class FABT(EvasionAttack):
    """FAB-T (Linf or L2): targeted fast adaptive boundary attack over the top classes.

    For each target t among the ``n_target_classes`` classes ranked 2, 3, ... by clean
    logit, FAB linearises ``g = z_y - z_t`` at the current point, projects both the current
    point and the original input onto the linearised boundary ``g = 0`` intersected with the
    input box (exact projections in the chosen norm), and moves to
    ``(1 - a) (x_i + eta d_i) + a (x_0 + eta d_0)`` with the adaptive weight
    ``a = min(||d_i|| / (||d_i|| + ||d_0||), alpha_max)``. When the new point is classified
    as t, it is recorded if closer than the best so far and the walk steps back towards the
    input: ``x_{i+1} = (1 - beta) x_0 + beta x_{i+1}``. The first restart starts at the input,
    later ones at a random point of the ``eps`` ball (as in the authors' code).
    Samples broken within ``eps`` by one target are not attacked for the next ones.
    Each iteration costs one forward-backward pass: the pass that classifies the new point
    also linearises there, where the next iteration starts (the authors' code classifies
    with a forward of its own), plus one pass for each point that steps back.

    The attack looks for a minimal perturbation; ``eps`` is the evaluation budget:
    ``success`` means misclassified by a point within ``eps`` (then ``x_adv`` is the
    smallest one found); elsewhere ``x_adv`` is the input.

    Parameters (keyword-only)
    -------------------------
    eps : float > 0 - evaluation budget (and the radius of random restarts)
    norm : {"linf", "l2"}, default "linf"
    n_iter : int >= 1, default 100
    n_restarts : int >= 1, default 1
    n_target_classes : int >= 1, default 9 (capped at the class count minus one)
    alpha_max : float in [0, 1], default 0.1
    eta : float >= 1, default 1.05 - overshoot of each projection
    beta : float in (0, 1], default 0.9 - backward step after a success
    seed : int or None, default None - seeds the random restarts
    batch_size : int or None, default None

    Shapes: ``x`` [N, ...] in the model's bounds, ``y`` [N] int64 labels; returns ``x_adv``
    like ``x``.

    Example
    -------
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    >>> x = torch.rand(8, 1, 2, 2)
    >>> y = model(x).argmax(1)
    >>> result = FABT(eps=0.5, n_iter=20, seed=0).run(model, x, y)
    >>> bool(((result.x_adv - x).abs() <= 0.5 + 1e-6).all())
    True
    """

    constraints = {
        "eps": Float(low=0.0, low_open=True),
        "norm": Choice(("linf", "l2")),
        "n_iter": Int(low=1),
        "n_restarts": Int(low=1),
        "n_target_classes": Int(low=1),
        "alpha_max": Float(low=0.0, high=1.0),
        "eta": Float(low=1.0),
        "beta": Float(low=0.0, high=1.0, low_open=True),
        "seed": Seed(),
        "batch_size": BATCH_SIZE,
    }

    def __init__(self, *, eps: float, norm: Norm = "linf", n_iter: int = 100,
                 n_restarts: int = 1, n_target_classes: int = 9, alpha_max: float = 0.1,
                 eta: float = 1.05, beta: float = 0.9, seed: int | None = None,
                 batch_size: int | None = None) -> None:
        self.eps = self._validated("eps", eps)
        self.norm: Norm = self._validated("norm", norm)
        self.n_iter = self._validated("n_iter", n_iter)
        self.n_restarts = self._validated("n_restarts", n_restarts)
        self.n_target_classes = self._validated("n_target_classes", n_target_classes)
        self.alpha_max = self._validated("alpha_max", alpha_max)
        self.eta = self._validated("eta", eta)
        self.beta = self._validated("beta", beta)
        self.seed = self._validated("seed", seed)
        self.batch_size = self._validated("batch_size", batch_size)

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, lo: float,
             hi: float) -> AttackResult:
        n = len(x)
        x_adv = x.detach().clone()
        if n == 0:
            return AttackResult(x_adv, torch.zeros(0, dtype=torch.bool, device=x.device), 0)
        generator = seeded_generator(self.seed, x.device)
        with torch.no_grad():
            clean = model(x)
        queries = n
        success = clean.argmax(1) != y
        best = torch.where(success, 0.0, float("inf")).to(x.dtype)
        ranked = clean.argsort(dim=1, descending=True)
        n_targets = min(self.n_target_classes, clean.shape[1] - 1)
        for rank in range(1, n_targets + 1):
            for restart in range(self.n_restarts):
                index = (~success).nonzero().squeeze(1)
                if len(index) == 0:
                    break
                x0, label, target = x[index], y[index], ranked[index, rank]
                current = x0.clone()
                if restart > 0:
                    start = random_in_ball(x0.shape, self.norm, self.eps / 2, device=x.device,
                                           dtype=x.dtype, generator=generator)
                    current = (x0 + start).clamp(lo, hi)
                g, grad, _ = self._linearised(model, current, label, target)
                queries += len(current)
                for step in range(self.n_iter):
                    with torch.no_grad():
                        moved = self._step(current, x0, g, grad, lo, hi)
                    # One pass both classifies the new point and linearises there, where
                    # the next step starts unless the point reached its target.
                    last = step == self.n_iter - 1
                    if last:
                        with torch.no_grad():
                            pred = model(moved).argmax(1)
                    else:
                        g, grad, pred = self._linearised(model, moved, label, target)
                    queries += len(moved)
                    hit = pred == target
                    with torch.no_grad():
                        dist = distance(moved, x0, self.norm)
                        better = hit & (dist < best[index])
                        if bool(better.any()):
                            rows = index[better]
                            best[rows] = dist[better]
                            x_adv[rows] = moved[better]
                    current = moved
                    if not last and bool(hit.any()):  # step back towards the input
                        back = (1 - self.beta) * x0[hit] + self.beta * moved[hit]
                        g_back, grad_back, _ = self._linearised(model, back, label[hit],
                                                                target[hit])
                        queries += len(back)
                        current, g, grad = current.clone(), g.clone(), grad.clone()
                        current[hit], g[hit], grad[hit] = back, g_back, grad_back
                success = best <= self.eps * (1 + 1e-6)
        success = best <= self.eps * (1 + 1e-6)
        x_adv[~success] = x[~success]
        return AttackResult(x_adv, success, queries)

    @staticmethod
    def _linearised(model: nn.Module, point: Tensor, label: Tensor,
                    target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """At ``point``: g = z_y - z_t [n], its input gradient, and the predicted class."""
        point = point.detach().requires_grad_(True)
        logits = model(point)
        g = logits.gather(1, label.view(-1, 1)) - logits.gather(1, target.view(-1, 1))
        grad, = torch.autograd.grad(g.sum(), point)
        return g.detach().squeeze(1), grad.detach(), logits.detach().argmax(1)

    def _step(self, current: Tensor, x0: Tensor, g: Tensor, grad: Tensor, lo: float,
              hi: float) -> Tensor:
        """FAB's move from ``current``: the projections of ``current`` and of the input onto
        the linearised boundary within the box, mixed by the adaptive weight, overshot by
        ``eta``."""
        w = grad.flatten(1)
        cur, orig = current.flatten(1), x0.flatten(1)
        d_cur = _box_hyperplane_step(w, -g, lo - cur, hi - cur, self.norm)
        # The same hyperplane, seen from the input: w.(x0 + d - cur) + g = 0.
        g0 = g + (w * (orig - cur)).sum(1)
        d_orig = _box_hyperplane_step(w, -g0, lo - orig, hi - orig, self.norm)
        n_cur = distance(d_cur, torch.zeros_like(d_cur), self.norm)
        n_orig = distance(d_orig, torch.zeros_like(d_orig), self.norm)
        alpha = (n_cur / (n_cur + n_orig).clamp_min(1e-12)).clamp(max=self.alpha_max)
        alpha = alpha.unsqueeze(1)
        moved = ((1 - alpha) * (cur + self.eta * d_cur)
                 + alpha * (orig + self.eta * d_orig)).clamp(lo, hi)
        return moved.view_as(x0)
