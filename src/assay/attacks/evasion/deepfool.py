"""DeepFool: a minimal perturbation found by linearising the classifier.

Reference: S.-M. Moosavi-Dezfooli, A. Fawzi, P. Frossard. "DeepFool: a simple and accurate
method to fool deep neural networks". CVPR 2016.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..._params import Choice, Float, Int
from .._projection import Norm
from .base import ATTACKS, BATCH_SIZE, AttackResult, EvasionAttack

_TINY = 1e-12


@ATTACKS.register("deepfool")
class DeepFool(EvasionAttack):
    """DeepFool (multi-class, L2 or Linf): walk to the nearest linearised decision boundary.

    At each iteration the classifier is linearised around the current point; for every
    candidate class k the boundary between k and the true class y is the hyperplane
    ``f_k + w_k . r = 0`` with ``f_k = z_k - z_y`` and ``w_k = grad z_k - grad z_y``. The step
    goes to the closest such hyperplane: distance ``|f_k| / ||w_k||_2`` along ``w_k``
    (L2), or ``|f_k| / ||w_k||_1`` along ``sign(w_k)`` (Linf, the dual norm; Algorithm 3 of
    the paper with p = inf). Steps accumulate in ``r_tot`` and the current point is
    ``x + (1 + overshoot) * r_tot``, clipped to the model's bounds. The candidates are the
    ``num_candidates`` classes with the highest clean logits (the paper's code uses 10).
    A sample stops costing compute once it is misclassified.

    A minimal-perturbation attack: there is no ``eps``. ``x_adv`` is the point found;
    ``success`` means it is misclassified. A sample already misclassified is returned
    unchanged (perturbation 0); a sample not broken within ``max_iter`` iterations is
    returned unchanged with ``success`` False.

    Parameters (keyword-only)
    -------------------------
    norm : {"l2", "linf"}, default "l2"
    overshoot : float >= 0, default 0.02 - the paper's factor that pushes past the boundary
    max_iter : int >= 1, default 50
    num_candidates : int >= 2, default 10 - candidate classes (capped at the class count),
        including the true one
    batch_size : int or None, default None - split the inputs into batches of this size

    Shapes: ``x`` [N, ...] in the model's bounds, ``y`` [N] int64 true labels; returns
    ``x_adv`` like ``x``. Cost: ``num_candidates`` backward passes per iteration.

    Example
    -------
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    >>> x = torch.rand(8, 1, 2, 2)
    >>> y = model(x).argmax(1)
    >>> result = DeepFool(max_iter=50).run(model, x, y)
    >>> bool((model(result.x_adv).argmax(1)[result.success] != y[result.success]).all())
    True
    """

    constraints = {
        "norm": Choice(("l2", "linf")),
        "overshoot": Float(low=0.0),
        "max_iter": Int(low=1),
        "num_candidates": Int(low=2),
        "batch_size": BATCH_SIZE,
    }

    def __init__(self, *, norm: Norm = "l2", overshoot: float = 0.02, max_iter: int = 50,
                 num_candidates: int = 10, batch_size: int | None = None) -> None:
        self.norm: Norm = self._validated("norm", norm)
        self.overshoot = self._validated("overshoot", overshoot)
        self.max_iter = self._validated("max_iter", max_iter)
        self.num_candidates = self._validated("num_candidates", num_candidates)
        self.batch_size = self._validated("batch_size", batch_size)

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, lo: float,
             hi: float) -> AttackResult:
        x_adv = x.detach().clone()
        success = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        if len(x) == 0:
            return AttackResult(x_adv, success, 0)
        with torch.no_grad():
            clean = model(x)
        queries = len(x)
        k = min(self.num_candidates, clean.shape[1])
        # Candidate 0 is the true class; then the k - 1 other classes with the highest logits.
        ranked = clean.detach().clone()
        ranked.scatter_(1, y.view(-1, 1), float("inf"))
        candidates = ranked.topk(k, dim=1).indices
        success = clean.argmax(1) != y  # already misclassified: zero perturbation
        index = (~success).nonzero().squeeze(1)
        x0, cand = x[index], candidates[index]
        r_tot = torch.zeros_like(x0)
        current = x0.clone()
        for _ in range(self.max_iter):
            if len(index) == 0:
                break
            current.requires_grad_(True)
            logits = model(current)
            queries += len(current)
            done = logits.detach().argmax(1) != cand[:, 0]
            if bool(done.any()):
                hit = index[done]
                x_adv[hit] = current.detach()[done]
                success[hit] = True
                keep = ~done
                if not bool(keep.any()):
                    break
                index, x0, cand, r_tot = index[keep], x0[keep], cand[keep], r_tot[keep]
                # Recompute on the survivors only, so broken samples cost nothing more.
                current = current.detach()[keep].requires_grad_(True)
                logits = model(current)
                queries += len(current)
            picked = logits.gather(1, cand)  # [n, k]: true class first
            grads = [torch.autograd.grad(picked[:, j].sum(), current, retain_graph=j < k - 1)[0]
                     for j in range(k)]
            with torch.no_grad():
                jac = torch.stack(grads, dim=1).flatten(2)  # [n, k, d]
                w = jac[:, 1:] - jac[:, :1]  # [n, k-1, d]
                f = (picked[:, 1:] - picked[:, :1]).detach()  # [n, k-1], negative before crossing
                dual = w.abs().sum(2) if self.norm == "linf" else w.norm(p=2, dim=2)
                dist = f.abs() / dual.clamp_min(_TINY)
                best = dist.argmin(1)
                w_best = w[torch.arange(len(w), device=w.device), best]  # [n, d]
                d_best = dist.gather(1, best.view(-1, 1))  # [n, 1]
                if self.norm == "linf":
                    step = (d_best + 1e-4) * w_best.sign()
                else:
                    unit = w_best / w_best.norm(p=2, dim=1, keepdim=True).clamp_min(_TINY)
                    step = (d_best + 1e-4) * unit
                r_tot = r_tot + step.view_as(r_tot)
                current = (x0 + (1 + self.overshoot) * r_tot).clamp(lo, hi)
        else:
            if len(index):
                with torch.no_grad():
                    done = model(current).argmax(1) != cand[:, 0]
                queries += len(current)
                x_adv[index[done]] = current.detach()[done]
                success[index[done]] = True
        return AttackResult(x_adv, success, queries)
