"""Auto-PGD (APGD): PGD with momentum and a step size that adapts itself.

Reference: F. Croce, M. Hein. "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks". ICML 2020.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..._params import Bool, Choice, Float, Int, Optional, Seed, check_choice
from ...core.rng import seeded_generator
from ...errors import AssayValueError
from .._losses import margin
from .._projection import Norm, ascent_direction, project, random_in_ball
from .base import ATTACKS, BATCH_SIZE, AttackResult, EvasionAttack

Loss = Literal["ce", "dlr", "dlr-targeted"]


def apgd_checkpoints(n_iter: int) -> list[int]:
    """Iterations where APGD may halve its step: ``ceil(p_j * n_iter)`` with p_0 = 0,
    p_1 = 0.22 and p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06) (Croce & Hein, sec. 3.1)."""
    p = [0.0, 0.22]
    while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1.0:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({math.ceil(q * n_iter) for q in p[1:]} - {0})


def dlr_loss(logits: Tensor, label: Tensor) -> Tensor:
    """Difference-of-logits ratio, per sample: -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)."""
    top = logits.topk(3, dim=1).values
    return -margin(logits, label) / (top[:, 0] - top[:, 2] + 1e-12)


def dlr_targeted_loss(logits: Tensor, label: Tensor, target: Tensor) -> Tensor:
    """Targeted DLR, per sample: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)."""
    top = logits.topk(4, dim=1).values
    z_y = logits.gather(1, label[:, None]).squeeze(1)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    return -(z_y - z_t) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


@ATTACKS.register("apgd")
class APGD(EvasionAttack):
    """APGD in an Linf or L2 ball on the cross-entropy or the DLR loss.

    From a random start the first step has size ``2 * eps``; every later step mixes the
    projected gradient step with the previous move (momentum ``alpha``). At checkpoints
    (``apgd_checkpoints``) each sample halves its step and restarts from its highest-loss
    point when the loss rose in fewer than ``rho`` of the steps since the last checkpoint,
    or when neither the step nor the best loss changed since then. Samples that reach the
    goal stop being attacked (early stop) and keep the first adversarial point found; the
    others return their highest-loss point. Each restart attacks only the robust samples.

    Parameters (keyword-only)
    -------------------------
    eps : float >= 0 - radius of the ball. ``eps=0`` returns the inputs unchanged.
    norm : {"linf", "l2"}, default "linf"
    n_iter : int >= 0, default 100 - steps per restart (``n_iter + 1`` gradients).
    n_restarts : int >= 1, default 1
    loss : {"ce", "dlr", "dlr-targeted"}, default "ce" - "dlr-targeted" needs
        ``targeted=True`` or ``target_class_rank``, and at least 4 classes ("dlr": 3).
    targeted : bool, default False - when True, ``y`` holds target classes; success means
        reaching them. With "ce" the attack minimises the target's cross-entropy; with
        "dlr-targeted" the class the model predicts on the clean input plays ``y``.
    target_class_rank : int >= 2 or None, default None - untargeted run (``y`` holds the
        labels, success is any misclassification) that pushes towards the class ranked
        this high on the clean logits (2: the runner-up), as APGD-T in AutoAttack.
    rho : float in (0, 1), default 0.75 - the fraction of rising steps below which the
        step is halved.
    alpha : float in (0, 1], default 0.75 - weight of the new step against the momentum.
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
    >>> result = APGD(eps=0.1, n_iter=10, seed=0).run(model, x, y)
    >>> bool(((result.x_adv - x).abs() <= 0.1 + 1e-6).all()), result.success.shape
    (True, torch.Size([8]))
    """

    constraints = {
        "eps": Float(low=0.0),
        "norm": Choice(("linf", "l2")),
        "n_iter": Int(low=0),
        "n_restarts": Int(low=1),
        "targeted": Bool(),
        "target_class_rank": Optional(Int(low=2)),
        "loss": Choice(("ce", "dlr", "dlr-targeted")),
        "rho": Float(low=0.0, high=1.0, low_open=True, high_open=True),
        "alpha": Float(low=0.0, high=1.0, low_open=True),
        "early_stop": Bool(),
        "seed": Seed(),
        "batch_size": BATCH_SIZE,
    }

    def __init__(self, *, eps: float, norm: Norm = "linf", n_iter: int = 100,
                 n_restarts: int = 1, loss: Loss = "ce", targeted: bool = False,
                 target_class_rank: int | None = None, rho: float = 0.75,
                 alpha: float = 0.75, early_stop: bool = True, seed: int | None = None,
                 batch_size: int | None = None) -> None:
        self.eps = self._validated("eps", eps)
        self.norm: Norm = self._validated("norm", norm)
        self.n_iter = self._validated("n_iter", n_iter)
        self.n_restarts = self._validated("n_restarts", n_restarts)
        self.targeted = self._validated("targeted", targeted)
        self.target_class_rank = self._validated("target_class_rank", target_class_rank)
        self._validated("loss", loss)
        # Cross-parameter rules: given targets leave no rank to choose, and a target (given
        # or ranked) needs a loss that uses it.
        if target_class_rank is not None and self.targeted:
            check_choice("target_class_rank", target_class_rank, (None,),
                         "APGD with targeted=True")
        if self.targeted or target_class_rank is not None:
            self.loss: Loss = check_choice("loss", loss, ("ce", "dlr-targeted"),
                                           "APGD with a target")
        else:
            self.loss = check_choice("loss", loss, ("ce", "dlr"), "APGD without a target")
        self.rho = self._validated("rho", rho)
        self.alpha = self._validated("alpha", alpha)
        self.early_stop = self._validated("early_stop", early_stop)
        self.seed = self._validated("seed", seed)
        self.batch_size = self._validated("batch_size", batch_size)

    def _objective(self, logits: Tensor, label: Tensor, target: Tensor | None) -> Tensor:
        """The per-sample loss the attack maximises."""
        if self.loss == "ce":
            if target is None:
                return F.cross_entropy(logits, label, reduction="none")
            return -F.cross_entropy(logits, target, reduction="none")
        if self.loss == "dlr":
            return dlr_loss(logits, label)
        if target is None:  # __init__ refuses dlr-targeted without targets
            raise RuntimeError("APGD: the targeted DLR loss needs target classes")
        return dlr_targeted_loss(logits, label, target)

    def _evaluate(self, model: nn.Module, point: Tensor, label: Tensor,
                  target: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        point = point.detach().requires_grad_(True)
        logits = model(point)
        loss = self._objective(logits, label, target)
        grad, = torch.autograd.grad(loss.sum(), point)
        return loss.detach(), grad.detach(), logits.detach()

    def _goals(self, model: nn.Module, x: Tensor,
               y: Tensor) -> tuple[Tensor, Tensor | None, int]:
        """The labels the loss moves away from [n], the targets it moves towards ([R, n],
        one row per target class tried, or None) for the samples ``x``, and the queries
        spent finding them."""
        if not (self.targeted or self.target_class_rank is not None):
            if self.loss != "dlr":
                return y, None, 0
            with torch.no_grad():
                self._require_classes(model(x[:1]).shape[1], 0)
            return y, None, 1
        with torch.no_grad():
            clean = model(x)
        self._require_classes(clean.shape[1], self.target_class_rank or 0)
        if self.targeted:
            return clean.argmax(dim=1), y[None], len(x)
        return y, self._ranked(clean, [self.target_class_rank or 2]), len(x)

    def _require_classes(self, classes: int, rank: int) -> None:
        need = max({"ce": 2, "dlr": 3, "dlr-targeted": 4}[self.loss], rank)
        if classes < need:
            raise AssayValueError(f"{type(self).__name__}: this setting needs at least {need} "
                                  f"classes; the model has {classes}.")

    @staticmethod
    def _ranked(clean: Tensor, ranks: list[int]) -> Tensor:
        """[len(ranks), n]: per sample, the classes at these ranks of its clean logits."""
        order = clean.argsort(dim=1, descending=True)
        return order[:, [rank - 1 for rank in ranks]].T.contiguous()

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, lo: float,
             hi: float) -> AttackResult:
        if self.eps == 0 or len(x) == 0:
            with torch.no_grad():
                return AttackResult(x.detach().clone(), self._achieved(model(x), y), len(x))
        label, targets, queries = self._goals(model, x, y)
        result = self._search(model, x, label, targets, lo, hi)
        return AttackResult(result.x_adv, result.success, result.queries + queries)

    def _search(self, model: nn.Module, x: Tensor, label: Tensor, targets: Tensor | None,
                lo: float, hi: float) -> AttackResult:
        """The APGD iterations on ``len(targets)`` rows per sample (one per target; one row
        when there are no targets), all in each pass. Rows are laid out target-major (row
        ``r * m + j`` is sample ``j``'s r-th target, m samples left); a sample stops being
        attacked, in all its rows, once one of them reaches the goal."""
        generator = seeded_generator(self.seed, x.device)
        x_adv = x.detach().clone()
        success = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        queries = 0
        group = 1 if targets is None else len(targets)
        checkpoints = apgd_checkpoints(self.n_iter)
        view = (-1,) + (1,) * (x.ndim - 1)

        def achieved(logits: Tensor, lab: Tensor, tgt: Tensor | None) -> Tensor:
            pred = logits.argmax(dim=1)
            return pred == tgt if self.targeted and tgt is not None else pred != lab

        def bound(point: Tensor, x0: Tensor) -> Tensor:
            return (x0 + project(point - x0, self.norm, self.eps)).clamp(lo, hi)

        def by_sample(rows: Tensor) -> Tensor:
            """[R * m, ...] rows as [R, m, ...]."""
            return rows.view(group, -1, *rows.shape[1:])

        for _ in range(self.n_restarts):
            index = (~success).nonzero().squeeze(1)  # the samples attacked, m of them
            if len(index) == 0:
                break
            x0 = x[index].repeat(group, *([1] * (x.ndim - 1)))
            lab = label[index].repeat(group)
            tgt = None if targets is None else targets[:, index].reshape(-1)
            start = random_in_ball(x0.shape, self.norm, self.eps, device=x.device,
                                   dtype=x.dtype, generator=generator)
            cur = (x0 + start).clamp(lo, hi)
            loss, grad, logits = self._evaluate(model, cur, lab, tgt)
            queries += len(cur)
            state = dict(x0=x0, lab=lab, cur=cur, prev=cur.clone(), evaluated=cur,
                         loss=loss, grad=grad, best_x=cur.clone(), best_loss=loss.clone(),
                         best_grad=grad.clone(),
                         eta=torch.full((len(cur),), 2 * self.eps, device=x.device, dtype=x.dtype),
                         rises=torch.zeros(len(cur), device=x.device),
                         reduced=torch.zeros(len(cur), dtype=torch.bool, device=x.device),
                         best_at_check=loss.clone())
            if tgt is not None:
                state["tgt"] = tgt
            last_check = 0
            for k in range(self.n_iter + 1):
                # Record the point just evaluated; drop the samples it broke.
                rows_done = by_sample(achieved(logits, state["lab"], state.get("tgt")))
                done = rows_done.any(0) & ~success[index]
                first = rows_done.to(torch.uint8).argmax(0)  # the first target that broke it
                hit = done.nonzero().squeeze(1)
                x_adv[index[hit]] = by_sample(state["evaluated"])[first[hit], hit]
                success[index[hit]] = True
                if k == self.n_iter:
                    rest = (~success[index]).nonzero().squeeze(1)
                    highest = by_sample(state["best_loss"]).argmax(0)
                    x_adv[index[rest]] = by_sample(state["best_x"])[highest[rest], rest]
                    break
                if self.early_stop and len(hit):
                    keep = ~done
                    index = index[keep]
                    rows = keep.repeat(group)
                    state = {key: value[rows] for key, value in state.items()}
                    if len(index) == 0:
                        break
                s = state
                with torch.no_grad():
                    step = s["eta"].view(view) * ascent_direction(s["grad"], self.norm)
                    z = bound(s["cur"] + step, s["x0"])
                    if k > 0:
                        z = bound(s["cur"] + self.alpha * (z - s["cur"])
                                  + (1 - self.alpha) * (s["cur"] - s["prev"]), s["x0"])
                new_loss, new_grad, logits = self._evaluate(model, z, s["lab"], s.get("tgt"))
                queries += len(z)
                s["evaluated"] = z
                s["rises"] += (new_loss > s["loss"]).to(s["rises"].dtype)
                s["prev"], s["cur"], s["loss"], s["grad"] = s["cur"], z, new_loss, new_grad
                better = new_loss > s["best_loss"]
                s["best_loss"] = torch.where(better, new_loss, s["best_loss"])
                b = better.view(view)
                s["best_x"] = torch.where(b, z, s["best_x"])
                s["best_grad"] = torch.where(b, new_grad, s["best_grad"])
                if k + 1 in checkpoints:
                    w = k + 1
                    oscillating = s["rises"] < self.rho * (w - last_check)
                    stalled = ~s["reduced"] & (s["best_at_check"] >= s["best_loss"])
                    reduce = oscillating | stalled
                    s["reduced"], s["best_at_check"] = reduce, s["best_loss"].clone()
                    s["rises"] = torch.zeros_like(s["rises"])
                    last_check = w
                    s["eta"] = torch.where(reduce, s["eta"] / 2, s["eta"])
                    r = reduce.view(view)
                    s["cur"] = torch.where(r, s["best_x"], s["cur"])
                    s["prev"] = torch.where(r, s["best_x"], s["prev"])
                    s["grad"] = torch.where(r, s["best_grad"], s["grad"])
                    s["loss"] = torch.where(reduce, s["best_loss"], s["loss"])
        return AttackResult(x_adv, success, queries)


@ATTACKS.register("apgd-t")
class APGDT(APGD):
    """APGD-T: APGD on the targeted DLR loss towards each of the ``n_target_classes``
    classes ranked 2, 3, ... on the clean logits; a sample counts as broken when any
    target's run misclassifies it (Croce & Hein 2020, the targeted attack of AutoAttack).

    The authors' code (and AutoAttack) runs the targets one after the other, each on the
    samples the earlier ones left robust (``wide=False``). With ``wide=True`` all targets
    of a sample are rows of the same passes, ``n_target_classes`` times wider (on a GPU
    a pass of a small model is mostly overhead, paid once per step instead of once per
    target), and a sample's rows all stop as soon as one of them breaks it. Each row
    follows the same iterations as a run of :class:`APGD` with ``target_class_rank``
    set; only the random starts are drawn in a different order. On 2 CPU cores the wide
    passes were 1.1-1.3x *slower* per input (MNIST LeNet, 149 robust points, four paired
    runs: 19.5 / 25.9, 19.7 / 26.1, 12.1 / 13.5, 13.8 / 15.6 s), so ``wide=None`` means
    wide on an accelerator and one target after another on the CPU. A sample left robust
    returns the best point of its target with the highest loss (wide) or of the last
    target (not wide). ``batch_size`` counts rows, as for every attack the inputs of one
    pass: a wide pass holds ``batch_size // n_target_classes`` samples (at least one).

    Parameters (keyword-only): as :class:`APGD` without ``loss``, ``targeted`` and
    ``target_class_rank``, plus ``n_target_classes`` : int >= 1, default 9 (AutoAttack's;
    capped at the class count minus one) and ``wide`` : bool or None, default None. Needs
    at least 4 classes (the loss uses four logits). ``n_iter`` defaults to 100 and
    ``n_restarts`` to 1, AutoAttack's standard.

    Example
    -------
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 5))
    >>> x, y = torch.rand(8, 1, 2, 2), torch.randint(0, 5, (8,))
    >>> result = APGDT(eps=0.1, n_iter=10, n_target_classes=3, seed=0).run(model, x, y)
    >>> bool(((result.x_adv - x).abs() <= 0.1 + 1e-6).all())
    True
    """

    constraints = {key: value for key, value in APGD.constraints.items()
                   if key not in ("loss", "targeted", "target_class_rank")}
    constraints["n_target_classes"] = Int(low=1)
    constraints["wide"] = Optional(Bool())

    def __init__(self, *, eps: float, norm: Norm = "linf", n_iter: int = 100,
                 n_restarts: int = 1, n_target_classes: int = 9, rho: float = 0.75,
                 alpha: float = 0.75, early_stop: bool = True, seed: int | None = None,
                 batch_size: int | None = None, wide: bool | None = None) -> None:
        self.wide = self._validated("wide", wide)
        self.eps = self._validated("eps", eps)
        self.norm = self._validated("norm", norm)
        self.n_iter = self._validated("n_iter", n_iter)
        self.n_restarts = self._validated("n_restarts", n_restarts)
        self.n_target_classes = self._validated("n_target_classes", n_target_classes)
        self.rho = self._validated("rho", rho)
        self.alpha = self._validated("alpha", alpha)
        self.early_stop = self._validated("early_stop", early_stop)
        self.seed = self._validated("seed", seed)
        self.batch_size = self._validated("batch_size", batch_size)
        self.loss, self.targeted, self.target_class_rank = "dlr-targeted", False, None

    def _is_wide(self, x: Tensor) -> bool:
        return self.wide if self.wide is not None else x.device.type != "cpu"

    def _samples_per_pass(self, x: Tensor) -> int:
        if self.batch_size is None or not self._is_wide(x):
            return super()._samples_per_pass(x)
        return max(1, self.batch_size // self.n_target_classes)

    def _search(self, model: nn.Module, x: Tensor, label: Tensor, targets: Tensor | None,
                lo: float, hi: float) -> AttackResult:
        if self._is_wide(x) or targets is None:
            return super()._search(model, x, label, targets, lo, hi)
        x_adv, queries = x.detach().clone(), 0
        success = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for target in targets:  # one target after another, on the samples still robust
            index = (~success).nonzero().squeeze(1)
            if len(index) == 0:
                break
            one = super()._search(model, x[index], label[index], target[None, index], lo, hi)
            queries += one.queries
            x_adv[index] = one.x_adv
            success[index] = one.success
        return AttackResult(x_adv, success, queries)

    def _goals(self, model: nn.Module, x: Tensor,
               y: Tensor) -> tuple[Tensor, Tensor | None, int]:
        with torch.no_grad():
            clean = model(x)
        self._require_classes(clean.shape[1], 0)
        count = min(self.n_target_classes, clean.shape[1] - 1)
        return y, self._ranked(clean, list(range(2, count + 2))), len(x)
