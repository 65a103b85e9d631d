"""Projected gradient descent (PGD).

Reference: A. Madry, A. Makelov, L. Schmidt, D. Tsipras, A. Vladu. "Towards Deep Learning
Models Resistant to Adversarial Attacks". ICLR 2018.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..._params import Bool, Choice, Float, Int, Optional, Seed
from ...core.rng import seeded_generator
from .._projection import L1_PERCENTILE, Norm, ascent_direction, project, random_in_ball
from .base import ATTACKS, BATCH_SIZE, AttackResult, EvasionAttack


@ATTACKS.register("pgd")
class PGD(EvasionAttack):
    """PGD on the cross-entropy loss in an Linf, L2 or L1 ball, with random restarts.

    Each step moves by ``step_size`` along sign(grad) (Linf), grad/||grad||_2 (L2) or the
    sparse L1 step (SLIDE) of F. Tramer, D. Boneh, "Adversarial training and robustness for
    multiple perturbations", NeurIPS 2019 (L1: the signs of the coordinates with |grad| at
    or above the ``l1_percentile``-th percentile, divided by their count), projects back
    onto the ``eps`` ball around the input (exactly, for L1 by the sort-based projection of
    Duchi et al., ICML 2008) and clips to the model's input bounds. For L1, coordinates
    that sit at an input bound and whose gradient pushes outwards are left out of the step
    (as in F. Croce, M. Hein, "Mind the box: l1-APGD...", ICML 2021, and cleverhans'
    ``clip_grad``), so the step is not wasted on a move the clipping would undo. (Projecting
    onto the ball and then clipping to the box is not the exact projection onto their
    intersection; PGD does this for every norm.) Samples that are already misclassified
    (or, when targeted, classified as their target) stop being attacked and keep the first
    adversarial point found (early stop); each restart attacks only the samples that are
    still robust.

    Parameters (keyword-only)
    -------------------------
    eps : float >= 0 - radius of the ball. ``eps=0`` returns the inputs unchanged.
    norm : {"linf", "l2", "l1"}, default "linf"
    steps : int >= 0, default 10
    step_size : float > 0 or None, default None - None means ``2.5 * eps / steps``, the
        rule of Madry et al. (appendix: it lets the walk reach the ball's boundary from
        any start); with 10 steps it equals torchattacks' default 2/255 at eps 8/255.
        The same rule holds for L1: a step has L1 length ``step_size``, so the walk's
        path is 2.5 eps long and can cross the ball from any start; it is close to
        cleverhans' SparseL1Descent defaults (eps 10, step 1.0, 20 steps: 2 eps), and on
        the digits CNN it was as strong as or stronger than smaller and larger steps
        (see tests/test_pgd_l1.py).
    l1_percentile : float in [0, 100), default 99.0 - L1 only: the SLIDE percentile q; the
        step keeps the top (100 - q)% coordinates by |grad|, at least one (q = 99 is
        cleverhans' default; on 64 pixels it is one coordinate, the steepest L1 ascent).
    restarts : int >= 1, default 1
    random_start : bool, default True - start uniformly in the ball (Madry et al.)
    targeted : bool, default False - when True, ``y`` holds target classes and the attack
        minimises their cross-entropy.
    early_stop : bool, default True
    seed : int or None, default None - seeds the random starts (None: fresh randomness)
    batch_size : int or None, default None - split the inputs into batches of this size

    Shapes: ``x`` [N, ...] in the model's bounds, ``y`` [N] int64; returns ``x_adv`` like ``x``.

    Example
    -------
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    >>> x, y = torch.rand(8, 1, 2, 2), torch.randint(0, 3, (8,))
    >>> x_adv = PGD(eps=0.1, steps=5, seed=0)(model, x, y)
    >>> bool(((x_adv - x).abs() <= 0.1 + 1e-6).all())
    True
    """

    constraints = {
        "eps": Float(low=0.0),
        "norm": Choice(("linf", "l2", "l1")),
        "steps": Int(low=0),
        "step_size": Optional(Float(low=0.0, low_open=True)),
        "restarts": Int(low=1),
        "random_start": Bool(),
        "targeted": Bool(),
        "early_stop": Bool(),
        "seed": Seed(),
        "batch_size": BATCH_SIZE,
        "l1_percentile": Float(low=0.0, high=100.0, high_open=True),
    }

    def __init__(self, *, eps: float, norm: Norm = "linf", steps: int = 10,
                 step_size: float | None = None, restarts: int = 1, random_start: bool = True,
                 targeted: bool = False, early_stop: bool = True, seed: int | None = None,
                 batch_size: int | None = None, l1_percentile: float = L1_PERCENTILE) -> None:
        self.eps = self._validated("eps", eps)
        self.norm: Norm = self._validated("norm", norm)
        self.steps = self._validated("steps", steps)
        self.step_size = self._validated("step_size", step_size)
        self.restarts = self._validated("restarts", restarts)
        self.random_start = self._validated("random_start", random_start)
        self.targeted = self._validated("targeted", targeted)
        self.early_stop = self._validated("early_stop", early_stop)
        self.seed = self._validated("seed", seed)
        self.batch_size = self._validated("batch_size", batch_size)
        self.l1_percentile = self._validated("l1_percentile", l1_percentile)

    @property
    def alpha(self) -> float:
        if self.step_size is not None:
            return self.step_size
        return 2.5 * self.eps / max(self.steps, 1)

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, lo: float,
             hi: float) -> AttackResult:
        generator = seeded_generator(self.seed, x.device)
        x_adv = x.detach().clone()
        success = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        queries = 0
        if self.eps == 0 or len(x) == 0:
            with torch.no_grad():
                success = self._achieved(model(x_adv), y)
            return AttackResult(x_adv, success, len(x))
        sign = -1.0 if self.targeted else 1.0
        for _ in range(self.restarts):
            # Work on a shrinking set: `index` maps working rows back to the batch.
            index = (~success).nonzero().squeeze(1)
            if len(index) == 0:
                break
            x0, target = x[index], y[index]
            if self.random_start:
                start = random_in_ball(x0.shape, self.norm, self.eps, device=x.device,
                                       dtype=x.dtype, generator=generator)
                current = (x0 + start).clamp(lo, hi)
            else:
                current = x0.clone()
            for step in range(self.steps + 1):
                last = step == self.steps
                current.requires_grad_(True)
                logits = model(current)
                queries += len(current)
                done = None
                if self.early_stop or last:
                    done = self._achieved(logits.detach(), target)
                    hit = index[done]
                    x_adv[hit] = current.detach()[done]
                    success[hit] = True
                if last and done is not None:  # last always sets done
                    x_adv[index[~done]] = current.detach()[~done]  # last iterate of the unbroken
                    break
                losses = F.cross_entropy(logits, target, reduction="none")
                if done is not None:
                    if bool(done.all()):
                        break
                    losses = losses[~done]
                grad, = torch.autograd.grad(losses.sum(), current)
                with torch.no_grad():
                    grad = sign * grad
                    if self.norm == "l1":  # leave out coordinates pushed out of the box
                        blocked = ((current <= lo) & (grad < 0)) | ((current >= hi) & (grad > 0))
                        grad = grad.masked_fill(blocked, 0.0)
                    moved = current + self.alpha * ascent_direction(
                        grad, self.norm, percentile=self.l1_percentile)
                    current = (x0 + project(moved - x0, self.norm, self.eps)).clamp(lo, hi)
                if done is not None and bool(done.any()):
                    keep = ~done
                    index, x0, target, current = index[keep], x0[keep], target[keep], current[keep]
        return AttackResult(x_adv, success, queries)
