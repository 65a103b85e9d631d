"""Adversarial training through the one training loop (:func:`assay.core.training.fit`).

Each method is a ``loss_fn(model, x, y)`` for ``fit``:

- PGD-AT: cross-entropy on PGD examples. A. Madry, A. Makelov, L. Schmidt, D. Tsipras,
  A. Vladu. "Towards Deep Learning Models Resistant to Adversarial Attacks". ICLR 2018.
- TRADES: cross-entropy on clean inputs plus ``beta`` times the KL divergence between the
  clean and the adversarial prediction. H. Zhang, Y. Yu, J. Jiao, E. Xing, L. El Ghaoui,
  M. Jordan. "Theoretically Principled Trade-off between Robustness and Accuracy". ICML 2019.
- Fast: one FGSM step from a uniform random start. E. Wong, L. Rice, J. Z. Kolter. "Fast is
  better than free: Revisiting adversarial training". ICLR 2020.

``OverfittingGuard`` is an ``on_epoch_end`` hook that measures PGD accuracy on held-out
points after every epoch and stops training, restoring the best weights, when it collapses
(catastrophic overfitting, Wong et al. sec. 5.2). The adversarial examples are crafted with
the model in eval mode (as every assay attack does); the parameter update runs in train mode.
"""

from __future__ import annotations

import copy
import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .._params import check_choice, check_float, check_int
from ..attacks._projection import Norm, ascent_direction, project, random_in_ball
from ..attacks.evasion.base import model_bounds
from ..attacks.evasion.pgd import PGD
from ..core.data import Dataset
from ..core.inference import eval_mode, model_device
from ..core.rng import seeded_generator
from ..core.training import LossFn, TrainConfig, TrainHistory, fit
from ..errors import AssayValueError, AssayWarning

Method = Literal["pgd", "trades", "fast"]


class _Schedule:
    """Per batch: a fresh seed from one generator (training repeats for a given seed) and
    the radius, grown linearly from eps / ramp to eps over the first ``ramp`` batches."""

    def __init__(self, seed: int, eps: float, ramp: int) -> None:
        self.generator = seeded_generator(seed)
        self.eps, self.ramp, self.batches = eps, check_int("ramp", ramp, "adversarial loss",
                                                           low=0), 0

    def next_seed(self) -> tuple[int, float]:
        """The next batch's seed and radius."""
        self.batches += 1
        scale = min(1.0, self.batches / self.ramp) if self.ramp else 1.0
        return int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator)), self.eps * scale

    def next(self, device: torch.device) -> tuple[torch.Generator, float]:
        """The next batch's generator on ``device`` and radius."""
        seed, eps = self.next_seed()
        return seeded_generator(seed, device), eps


def pgd_loss(eps: float, *, norm: Norm = "linf", steps: int = 10,
             step_size: float | None = None, ramp: int = 0, seed: int = 0) -> LossFn:
    """PGD-AT (Madry et al. 2018): cross-entropy on the last PGD iterate (random start, no
    early stop). Defaults: 10 steps of ``2.5 * eps / steps``. Madry et al. use 40 steps of
    0.01 at eps 0.3 on MNIST; 10 steps keep a CPU epoch affordable. ``ramp`` (every
    method): batches over which the radius grows linearly to ``eps`` (default 0: none)."""
    owner = "pgd_loss"
    check_float("eps", eps, owner, low=0.0, low_open=True)
    check_int("steps", steps, owner, low=1)
    schedule = _Schedule(seed, eps, ramp)

    def loss_fn(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        seed_now, eps_now = schedule.next_seed()
        size = None if step_size is None else step_size * eps_now / eps
        attack = PGD(eps=eps_now, norm=norm, steps=steps, step_size=size, early_stop=False,
                     seed=seed_now)
        return F.cross_entropy(model(attack(model, x, y)), y)

    return loss_fn


def trades_loss(eps: float, *, beta: float = 6.0, norm: Norm = "linf", steps: int = 10,
                step_size: float | None = None, ramp: int = 0, seed: int = 0) -> LossFn:
    """TRADES (Zhang et al. 2019): ``CE(f(x), y) + beta * KL(f(x) || f(x'))`` where ``x'``
    maximises the KL term by ``steps`` projected steps from ``x + 0.001 * N(0, I)``.
    Defaults: beta 6 (the paper's CIFAR-10 value; it uses 1 to 6 on MNIST), 10 steps of
    ``eps / 4`` for Linf (the paper: 0.007 at eps 0.031 on CIFAR-10, 0.01 x 40 on MNIST)."""
    owner = "trades_loss"
    check_float("eps", eps, owner, low=0.0, low_open=True)
    check_float("beta", beta, owner, low=0.0)
    check_int("steps", steps, owner, low=1)
    schedule = _Schedule(seed, eps, ramp)

    def loss_fn(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        lo, hi = model_bounds(model)
        generator, eps_now = schedule.next(x.device)
        alpha = (step_size if step_size is not None else eps / 4) * eps_now / eps
        x_adv = (x + 0.001 * torch.randn(x.shape, generator=generator, device=x.device,
                                         dtype=x.dtype)).clamp(lo, hi)
        with eval_mode(model):  # crafted in eval mode, as by every attack
            with torch.no_grad():
                p_clean = F.softmax(model(x), dim=1)
            for _ in range(steps):
                x_adv.requires_grad_(True)
                kl = F.kl_div(F.log_softmax(model(x_adv), dim=1), p_clean, reduction="sum")
                grad, = torch.autograd.grad(kl, x_adv)
                with torch.no_grad():
                    moved = x_adv + alpha * ascent_direction(grad, norm)
                    x_adv = (x + project(moved - x, norm, eps_now)).clamp(lo, hi)
        logits = model(x)
        robust = F.kl_div(F.log_softmax(model(x_adv.detach()), dim=1), F.softmax(logits, dim=1),
                          reduction="batchmean")
        return F.cross_entropy(logits, y) + beta * robust

    return loss_fn


def fast_loss(eps: float, *, alpha: float | None = None, norm: Norm = "linf", ramp: int = 0,
              seed: int = 0) -> LossFn:
    """Fast adversarial training (Wong et al. 2020): ``delta`` uniform in the ball, one step
    of size ``alpha`` along the gradient's sign, projected back. Default ``alpha = 1.25 *
    eps`` (the paper's CIFAR-10 rule); on MNIST at eps 0.3 the paper needs alpha 0.375 (=
    1.25 * eps too) with a small learning rate, and larger steps overfit catastrophically."""
    owner = "fast_loss"
    check_float("eps", eps, owner, low=0.0, low_open=True)
    step = alpha if alpha is not None else 1.25 * eps
    check_float("alpha", step, owner, low=0.0, low_open=True)
    schedule = _Schedule(seed, eps, ramp)

    def loss_fn(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        lo, hi = model_bounds(model)
        generator, eps_now = schedule.next(x.device)
        start = (x + random_in_ball(x.shape, norm, eps_now, device=x.device, dtype=x.dtype,
                                    generator=generator)).clamp(lo, hi).requires_grad_(True)
        with eval_mode(model):  # crafted in eval mode, as by every attack
            grad, = torch.autograd.grad(F.cross_entropy(model(start), y), start)
        with torch.no_grad():
            moved = start + step * eps_now / eps * ascent_direction(grad, norm)
            x_adv = (x + project(moved - x, norm, eps_now)).clamp(lo, hi)
        return F.cross_entropy(model(x_adv), y)

    return loss_fn


@dataclass
class OverfittingGuard:
    """``on_epoch_end`` hook: PGD accuracy on held-out points after each epoch.

    When it falls more than ``drop`` below the best epoch's (catastrophic overfitting: the
    model learns to defeat the single-step attack only), the best weights are restored, an
    ``AssayWarning`` is issued and training stops. ``accuracies`` keeps the curve.
    """

    x: Tensor
    y: Tensor
    eps: float
    norm: Norm = "linf"
    steps: int = 10
    drop: float = 0.2
    accuracies: list[float] = field(default_factory=list)
    collapsed_at: int | None = None
    _best: tuple[float, dict] | None = None

    def __call__(self, epoch: int, model: nn.Module) -> bool:
        attack = PGD(eps=self.eps, norm=self.norm, steps=self.steps, seed=epoch)
        x_adv = attack(model, self.x, self.y)
        with torch.no_grad():
            accuracy = float((model(x_adv).argmax(1) == self.y).float().mean())
        self.accuracies.append(accuracy)
        if self._best is None or accuracy >= self._best[0]:
            self._best = (accuracy, copy.deepcopy(model.state_dict()))
        elif accuracy < self._best[0] - self.drop:
            self.collapsed_at = epoch
            model.load_state_dict(self._best[1])
            warnings.warn(f"catastrophic overfitting: PGD-{self.steps} accuracy on held-out "
                          f"points fell from {self._best[0]:.3f} to {accuracy:.3f} in epoch "
                          f"{epoch + 1}; stopped and restored the best epoch's weights.",
                          AssayWarning, stacklevel=2)
            return True
        return False


@dataclass
class HardeningResult:
    """What :func:`adversarial_training` did: the loop's history and the guard's curve."""

    history: TrainHistory
    method: str
    eps: float
    guard_accuracies: list[float]
    collapsed_at: int | None


LOSSES: dict[str, Callable[..., LossFn]] = {"pgd": pgd_loss, "trades": trades_loss,
                                           "fast": fast_loss}


def adversarial_training(model: nn.Module, data: Dataset, *, method: Method = "pgd",
                         eps: float, norm: Norm = "linf", config: TrainConfig = TrainConfig(),
                         steps: int | None = None, step_size: float | None = None,
                         beta: float | None = None, alpha: float | None = None,
                         ramp_epochs: float = 0.0, guard_points: int = 256,
                         show_progress: bool = True) -> HardeningResult:
    """Train ``model`` in place with ``method`` at radius ``eps``; return what happened.

    ``steps`` and ``step_size`` (pgd, trades), ``beta`` (trades) and ``alpha`` (fast) go to
    the method's loss; None keeps that loss's default (:func:`pgd_loss`,
    :func:`trades_loss`, :func:`fast_loss`), and an option the method does not take is an
    error. ``ramp_epochs``: epochs (a fraction is fine) over which the radius grows
    linearly to ``eps`` (0: none; from scratch on MNIST at eps 0.3, PGD-AT needs about 2).
    ``guard_points`` training points are held out for the :class:`OverfittingGuard` (0: no
    guard).
    """
    owner = "adversarial_training"
    check_choice("method", method, tuple(LOSSES), owner)
    check_choice("norm", norm, ("linf", "l2"), owner)
    check_int("guard_points", guard_points, owner, low=0)
    check_float("ramp_epochs", ramp_epochs, owner, low=0.0)
    if guard_points >= len(data):
        raise AssayValueError(f"{owner}: guard_points ({guard_points}) must be smaller than the "
                              f"training set ({len(data)} points).")
    given = {k: v for k, v in (("steps", steps), ("step_size", step_size), ("beta", beta),
                               ("alpha", alpha)) if v is not None}
    accepted = set(inspect.signature(LOSSES[method]).parameters) - {"eps", "norm", "seed"}
    unknown = sorted(set(given) - accepted)
    if unknown:
        raise AssayValueError(f"{owner}: method {method!r} takes no option(s) {unknown}; its "
                              f"options are {sorted(accepted - {'ramp'})}.")
    guard = None
    if guard_points:
        held, data = data.split_off(guard_points / len(data), seed=config.seed)
        device = model_device(model)
        guard = OverfittingGuard(held.x.to(device), held.y.to(device), eps, norm)
    batches_per_epoch = -(-len(data) // config.batch_size)  # as fit cuts the epoch
    ramp = round(ramp_epochs * batches_per_epoch)
    loss_fn = LOSSES[method](eps, norm=norm, seed=config.seed, ramp=ramp, **given)
    history = fit(model, data, config, loss_fn=loss_fn, on_epoch_end=guard,
                  show_progress=show_progress)
    return HardeningResult(history, method, eps, guard.accuracies if guard else [],
                           guard.collapsed_at if guard else None)
