"""HopSkipJump: a decision-based attack that uses only the predicted label.

Reference: J. Chen, M. I. Jordan, M. J. Wainwright. "HopSkipJumpAttack: A query-efficient
decision-based attack". IEEE Symposium on Security and Privacy (S&P) 2020.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..._params import Bool, Choice, Float, Int, Optional, Seed, check_int
from ...core.inference import batched_logits
from ...core.rng import seeded_generator
from ...errors import AssayValueError
from .._projection import Norm, distance
from .base import ATTACKS, BATCH_SIZE, AttackResult, EvasionAttack

_INIT_TOLERANCE = 1e-3  # bisection tolerance of the initial blend (the authors' code)
_MAX_HALVINGS = 30  # cap on the geometric step-size search (the authors' loop has none)


@ATTACKS.register("hopskipjump")
class HopSkipJump(EvasionAttack):
    """HopSkipJump (L2 or Linf), untargeted or targeted, from predicted labels alone.

    1. Start: an adversarial point per sample (``x_init`` rows passed to :meth:`run`
       where they are adversarial, else uniform noise in the model's bounds, up to
       ``init_trials`` draws), moved towards the input by bisection on the blend
       ``(1 - a) x + a x_start`` to tolerance 1e-3.
    2. Boundary search: bisection between the input and the current point (L2: on the
       blend weight; Linf: on the radius of a box around the input) until the interval
       is below the threshold ``theta = gamma / d^(3/2)`` (L2) or
       ``min(theta_linf * dist, theta_linf)`` with ``theta_linf = gamma / d^2`` (Linf),
       where ``d`` is the input size; the adversarial end is kept.
    3. Iteration ``t = 1..num_iterations``: estimate the boundary's normal by Monte-Carlo
       with ``min(init_num_evals * sqrt(t), max_num_evals)`` random unit directions
       (Gaussian for L2, uniform in [-1, 1]^d for Linf) at radius ``delta`` (0.1 of the
       bounds' width at t = 1, then ``sqrt(d) * theta * dist`` for L2 and
       ``d * theta * dist`` for Linf), with the mean decision as baseline; step along it
       (its sign for Linf) by ``dist / sqrt(t)``, halved until the point is adversarial
       (geometric progression, at most 30 halvings); then boundary search again.

    All samples of a batch move together: one gradient estimate is a single batched
    forward pass over ``samples * num_evals`` inputs, cut into chunks of
    ``query_batch_size`` inputs to bound memory. The model is only called under
    ``torch.no_grad`` and only its argmax is used. ``queries`` counts every input of
    every forward pass, the initial check of the clean inputs included.

    Success. The attack looks for a minimal perturbation (in ``norm``):
    - ``eps=None``: ``success`` means an adversarial point was found at all (a wrong
      class, or the target when ``targeted``); ``x_adv`` is the closest one found, or the
      input where none was found.
    - ``eps`` given: ``success`` means an adversarial point within ``eps`` was found
      (as in :class:`FABT`); ``x_adv`` is that point, or the input elsewhere. With
      ``early_stop`` a sample is no longer attacked (nor charged queries) once it has a
      point within ``eps``, so ``x_adv`` is the first such point, not the smallest.
    Inputs already misclassified (or already of their target class) succeed at once
    with ``x_adv = x``.

    Targeted: ``y`` holds the target classes. A start of the target class is needed:
    pass ``x_init`` to :meth:`run` (for instance training images of the target class);
    rows of ``x_init`` that the model does not put in the target class, or all rows when
    ``x_init`` is None, fall back to the random-noise search, which often fails for a
    targeted goal (those samples are reported unsuccessful). ``x_init`` is held on the
    instance for the duration of :meth:`run`: do not share one instance across threads.

    Parameters (keyword-only)
    -------------------------
    norm : {"l2", "linf"}, default "l2"
    eps : float >= 0 or None, default None - evaluation budget (see Success)
    targeted : bool, default False
    num_iterations : int >= 0, default 40 (the authors' code)
    max_num_evals : int >= 1, default 10000 - cap on directions per gradient estimate
    init_num_evals : int in [1, max_num_evals], default 100
    gamma : float > 0, default 1.0 - sets the bisection threshold theta (above)
    init_trials : int >= 1, default 100 - random-noise draws per sample at the start
        (ART's ``init_size``; the authors' code tries up to 1e4)
    early_stop : bool, default True - only used with ``eps``
    query_batch_size : int >= 1, default 1024 - inputs per forward pass
    seed : int or None, default None - seeds the noise and directions (torch.Generator)
    batch_size : int or None, default None - split the inputs into batches of this size

    Shapes: ``x`` [N, ...] in the model's bounds, ``y`` [N] int64 labels (targets when
    targeted), ``x_init`` like ``x``; returns ``x_adv`` like ``x``.

    Example
    -------
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    >>> x = torch.rand(8, 1, 2, 2)
    >>> y = model(x).argmax(1)
    >>> result = HopSkipJump(num_iterations=5, seed=0).run(model, x, y)
    >>> bool((model(result.x_adv).argmax(1)[result.success] != y[result.success]).all())
    True
    """

    layout_copy = False  # query-only: the model as given sees every query

    constraints = {
        "norm": Choice(("l2", "linf")),
        "eps": Optional(Float(low=0.0)),
        "targeted": Bool(),
        "num_iterations": Int(low=0),
        "max_num_evals": Int(low=1),
        "init_num_evals": Int(low=1),
        "gamma": Float(low=0.0, low_open=True),
        "init_trials": Int(low=1),
        "early_stop": Bool(),
        "query_batch_size": Int(low=1),
        "seed": Seed(),
        "batch_size": BATCH_SIZE,
    }

    def __init__(self, *, norm: Norm = "l2", eps: float | None = None, targeted: bool = False,
                 num_iterations: int = 40, max_num_evals: int = 10000,
                 init_num_evals: int = 100, gamma: float = 1.0, init_trials: int = 100,
                 early_stop: bool = True, query_batch_size: int = 1024,
                 seed: int | None = None, batch_size: int | None = None) -> None:
        owner = "HopSkipJump"
        self.norm: Norm = self._validated("norm", norm)
        self.eps = self._validated("eps", eps)
        self.targeted = self._validated("targeted", targeted)
        self.num_iterations = self._validated("num_iterations", num_iterations)
        self.max_num_evals = self._validated("max_num_evals", max_num_evals)
        self.init_num_evals = self._validated("init_num_evals", init_num_evals)
        # A cross-parameter rule: the first estimate may not use more than the cap.
        check_int("init_num_evals", init_num_evals, owner, low=1, high=self.max_num_evals)
        self.gamma = self._validated("gamma", gamma)
        self.init_trials = self._validated("init_trials", init_trials)
        self.early_stop = self._validated("early_stop", early_stop)
        self.query_batch_size = self._validated("query_batch_size", query_batch_size)
        self.seed = self._validated("seed", seed)
        self.batch_size = self._validated("batch_size", batch_size)
        self._x_init: Tensor | None = None
        self._offset = 0

    def run(self, model: nn.Module, x: Tensor, y: Tensor, *,
            x_init: Tensor | None = None) -> AttackResult:
        """Attack ``x``; ``x_init`` (like ``x``, optional) gives per-sample starting points."""
        if x_init is not None:
            if not isinstance(x_init, Tensor) or tuple(x_init.shape) != tuple(x.shape):
                raise AssayValueError(
                    f"HopSkipJump: x_init must be a tensor shaped like x {tuple(x.shape)}; got "
                    f"{tuple(getattr(x_init, 'shape', ()))}. Pass one start per input.")
        self._x_init, self._offset = x_init, 0
        try:
            return super().run(model, x, y)
        finally:
            self._x_init = None

    # -- geometry ---------------------------------------------------------------------
    def _toward(self, x0: Tensor, far: Tensor, a: Tensor) -> Tensor:
        """The point between ``x0`` (a = 0) and ``far`` used by the boundary search."""
        a = a.view(-1, *([1] * (x0.ndim - 1)))
        if self.norm == "l2":
            return (1 - a) * x0 + a * far
        return torch.maximum(torch.minimum(far, x0 + a), x0 - a)

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, lo: float,
             hi: float) -> AttackResult:
        n = len(x)
        x_adv = x.detach().clone()
        start_rows = None
        if self._x_init is not None:
            start_rows = self._x_init[self._offset:self._offset + n].to(x.device, x.dtype)
            self._offset += n
        if n == 0:
            return AttackResult(x_adv, torch.zeros(0, dtype=torch.bool, device=x.device), 0)
        generator = seeded_generator(self.seed, x.device)
        queries = 0

        def adversarial(inputs: Tensor, labels: Tensor) -> Tensor:
            nonlocal queries
            queries += len(inputs)
            logits = batched_logits(model, inputs, batch_size=self.query_batch_size,
                                    device=inputs.device, owner="HopSkipJump")
            return self._achieved(logits, labels)

        d = x[0].numel()
        theta = self.gamma / (d * math.sqrt(d)) if self.norm == "l2" else self.gamma / d ** 2
        best = torch.full((n,), float("inf"), dtype=x.dtype, device=x.device)
        clean = adversarial(x, y)
        best[clean] = 0.0

        def boundary(index: Tensor, far: Tensor) -> tuple[Tensor, Tensor]:
            """Bisection between x[index] and the adversarial ``far`` to the threshold."""
            x0, labels = x[index], y[index]
            if self.norm == "l2":
                high = torch.ones(len(index), dtype=x.dtype, device=x.device)
                threshold = torch.full_like(high, theta)
            else:
                high = distance(far, x0, "linf")
                threshold = (high * theta).clamp(max=theta)
            low = torch.zeros_like(high)
            threshold = threshold.clamp_min(torch.finfo(x.dtype).tiny)
            while True:
                open_ = (high - low) > threshold
                if not bool(open_.any()):
                    break
                rows = open_.nonzero().squeeze(1)
                mid = (high[rows] + low[rows]) / 2
                ok = adversarial(self._toward(x0[rows], far[rows], mid), labels[rows])
                high[rows] = torch.where(ok, mid, high[rows])
                low[rows] = torch.where(ok, low[rows], mid)
            out = self._toward(x0, far, high)
            return out, distance(out, x0, self.norm)

        # 1. Starting points: x_init where adversarial, else uniform noise.
        index = (~clean).nonzero().squeeze(1)
        start = torch.empty_like(x)
        found = torch.zeros(n, dtype=torch.bool, device=x.device)
        if start_rows is not None and len(index):
            ok = adversarial(start_rows[index], y[index])
            start[index[ok]] = start_rows[index[ok]]
            found[index[ok]] = True
        for _ in range(self.init_trials):
            rows = index[~found[index]]
            if len(rows) == 0:
                break
            noise = lo + (hi - lo) * torch.rand(x[rows].shape, dtype=x.dtype, device=x.device,
                                                generator=generator)
            ok = adversarial(noise, y[rows])
            start[rows[ok]] = noise[ok]
            found[rows[ok]] = True
        index = index[found[index]]
        if len(index):
            x0, far = x[index], start[index]
            low = torch.zeros(len(index), dtype=x.dtype, device=x.device)
            high = torch.ones_like(low)
            while True:
                open_ = (high - low) > _INIT_TOLERANCE
                if not bool(open_.any()):
                    break
                rows = open_.nonzero().squeeze(1)
                mid = (high[rows] + low[rows]) / 2
                a = mid.view(-1, *([1] * (x.ndim - 1)))
                ok = adversarial((1 - a) * x0[rows] + a * far[rows], y[index[rows]])
                high[rows] = torch.where(ok, mid, high[rows])
                low[rows] = torch.where(ok, low[rows], mid)
            a = high.view(-1, *([1] * (x.ndim - 1)))
            current, dist = boundary(index, (1 - a) * x0 + a * far)
            x_adv[index], best[index] = current, dist
        else:
            current = x[:0]
            dist = best[:0]

        # 2. Iterations on the samples that have an adversarial point.
        shape = (-1, *([1] * (x.ndim - 1)))
        for t in range(1, self.num_iterations + 1):
            if self.eps is not None and self.early_stop and len(index):
                keep = best[index] > self.eps * (1 + 1e-6)
                index, current, dist = index[keep], current[keep], dist[keep]
            if len(index) == 0:
                break
            if t == 1:
                delta = torch.full_like(dist, 0.1 * (hi - lo))
            else:
                delta = (math.sqrt(d) if self.norm == "l2" else d) * theta * dist
            delta = delta.clamp_min(torch.finfo(x.dtype).eps)
            num_evals = int(min(self.init_num_evals * math.sqrt(t), self.max_num_evals))
            grad = self._estimate_normal(adversarial, current, y[index], delta, num_evals,
                                         lo, hi, generator)
            update = grad.sign() if self.norm == "linf" else grad
            # Geometric progression: step dist / sqrt(t), halved until adversarial.
            step = dist / math.sqrt(t)
            moved = current.clone()
            pending = torch.ones(len(index), dtype=torch.bool, device=x.device)
            for _ in range(_MAX_HALVINGS + 1):
                rows = pending.nonzero().squeeze(1)
                if len(rows) == 0:
                    break
                trial = (current[rows] + step[rows].view(shape) * update[rows]).clamp(lo, hi)
                ok = adversarial(trial, y[index[rows]])
                moved[rows[ok]] = trial[ok]
                pending[rows[ok]] = False
                step[rows[~ok]] = step[rows[~ok]] / 2
            current, dist = boundary(index, moved)
            better = dist < best[index]
            x_adv[index[better]] = current[better]
            best[index[better]] = dist[better]

        if self.eps is None:
            success = torch.isfinite(best)
        else:
            success = best <= self.eps * (1 + 1e-6)
        x_adv[~success] = x[~success]
        x_adv[clean] = x[clean]
        return AttackResult(x_adv, success, queries)

    def _estimate_normal(self, adversarial, current: Tensor, labels: Tensor, delta: Tensor,
                         num_evals: int, lo: float, hi: float,
                         generator: torch.Generator | None) -> Tensor:
        """Monte-Carlo estimate of the boundary normal at each row of ``current``
        (unit L2 norm), from ``num_evals`` decisions per row."""
        per_chunk = max(1, self.query_batch_size // num_evals)
        parts = []
        for i in range(0, len(current), per_chunk):
            base, step = current[i:i + per_chunk], delta[i:i + per_chunk]
            m = len(base)
            size = (m, num_evals, *base.shape[1:])
            if self.norm == "l2":
                rv = torch.randn(size, dtype=base.dtype, device=base.device, generator=generator)
            else:
                rv = 2 * torch.rand(size, dtype=base.dtype, device=base.device,
                                    generator=generator) - 1
            bshape = (m, 1, *([1] * (base.ndim - 1)))
            rv = rv / rv.flatten(2).norm(dim=2).clamp_min(1e-12).view(m, num_evals,
                                                                       *([1] * (base.ndim - 1)))
            probes = (base.unsqueeze(1) + step.view(bshape) * rv).clamp(lo, hi)
            rv = (probes - base.unsqueeze(1)) / step.view(bshape)
            ok = adversarial(probes.flatten(0, 1), labels[i:i + m].repeat_interleave(num_evals))
            fval = 2 * ok.view(m, num_evals).to(base.dtype) - 1
            mean = fval.mean(dim=1, keepdim=True)
            # Baseline: the mean decision, except when all agree (then plain +-mean(rv)).
            baseline = torch.where(mean.abs() == 1, torch.zeros_like(mean), mean)
            weights = (fval - baseline).view(m, num_evals, *([1] * (base.ndim - 1)))
            grad = (weights * rv).mean(dim=1)
            parts.append(grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(
                -1, *([1] * (base.ndim - 1))))
        return torch.cat(parts)
