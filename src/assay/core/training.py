"""The one training loop. Adversarial training, DP-SGD and the like extend it through
``loss_fn`` (how a batch becomes a loss; an :class:`IndexedLoss` also sees which samples
the batch holds, for per-sample weights or sensitive attributes), ``step_fn`` (how a
batch's loss becomes an update of the weights: DP-SGD clips and noises per-sample
gradients there) and ``on_epoch_end`` (what to watch after each epoch) instead of copying
it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .._params import check_choice, check_float, check_int
from .data import Dataset
from .inference import batched_predict, model_device
from .progress import progress_bar
from .rng import seeded_generator

_EPOCH_LOG_AFTER_S = 10.0
log = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, Tensor, Tensor], Tensor]


def cross_entropy_loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(model(x), y)


@dataclass(frozen=True)
class IndexedLoss:
    """A loss that needs per-sample values beside the batch (reweighing's weights, a
    fairness penalty's sensitive attribute): :func:`fit` calls ``fn(model, x, y, index)``
    with ``index`` the batch's positions in the training set (int64, on the CPU), so ``fn``
    can take ``weights[index]``."""

    fn: Callable[[nn.Module, Tensor, Tensor, Tensor], Tensor]

    def bind(self, index: Tensor) -> LossFn:
        """The plain ``loss_fn(model, x, y)`` of the batch at ``index``."""
        return lambda model, x, y: self.fn(model, x, y, index)


StepFn = Callable[[nn.Module, Tensor, Tensor, LossFn, torch.optim.Optimizer], Tensor]


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer ``config`` names for ``model``'s trainable parameters: Adam, or SGD
    with momentum 0.9, at ``config.lr`` and ``config.weight_decay``."""
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=0.9,
                           weight_decay=config.weight_decay)


def gradient_step(model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn,
                  optimizer: torch.optim.Optimizer) -> Tensor:
    """:func:`fit`'s default step: the gradient of the batch's loss, then one optimizer
    step; returns the loss."""
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model, x, y)
    loss.backward()
    optimizer.step()
    return loss


@dataclass(frozen=True)
class TrainConfig:
    """Settings of :func:`fit`.

    epochs : int, default 10
    batch_size : int, default 64
    lr : float, default 1e-3 (Adam) - pass 0.1 or so with ``optimizer="sgd"``
    optimizer : {"adam", "sgd"}, default "adam" (SGD uses momentum 0.9)
    weight_decay : float, default 0.0
    seed : int, default 0 - drives shuffling; the same seed gives the same weights on CPU
    schedule : {"constant", "cyclic"}, default "constant" - "cyclic" ramps the learning rate
        linearly from 0 to ``lr`` over the first half of training and back to 0 (the
        one-cycle schedule of Wong et al. 2020 for fast adversarial training)
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: Literal["adam", "sgd"] = "adam"
    weight_decay: float = 0.0
    seed: int = 0
    schedule: Literal["constant", "cyclic"] = "constant"

    def __post_init__(self) -> None:
        owner = "TrainConfig"
        check_int("epochs", self.epochs, owner, low=0)
        check_int("batch_size", self.batch_size, owner, low=1)
        check_float("lr", self.lr, owner, low=0.0, low_open=True)
        check_choice("optimizer", self.optimizer, ("adam", "sgd"), owner)
        check_float("weight_decay", self.weight_decay, owner, low=0.0)
        check_int("seed", self.seed, owner, low=0)
        check_choice("schedule", self.schedule, ("constant", "cyclic"), owner)


@dataclass(frozen=True)
class TrainingRecipe:
    """How a model was trained, or how the reference models a check trains must be: a
    zoo architecture (:data:`assay.core.zoo.ARCHITECTURES`) and :func:`fit`'s settings.
    A plan's ``[training]`` table; checks read it from ``CheckContext.training``."""

    arch: str
    config: TrainConfig = TrainConfig()

    def describe(self) -> dict:
        """The recipe as the plan's table: ``arch`` and every field of the config."""
        return {"arch": self.arch, **asdict(self.config)}


def cyclic_factor(step: int, total: int) -> float:
    """The learning-rate factor of step ``step`` of ``total`` under the "cyclic" schedule:
    a triangle from 0 up to 1 at the middle and back to 0, taken at the step's midpoint."""
    return 1 - abs(2 * (step + 0.5) / total - 1)


@dataclass
class TrainHistory:
    loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    stopped_early: bool = False


BatchSampler = Callable[[int, torch.Generator], list[Tensor]]


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator) -> list[Tensor]:
    """:func:`fit`'s default batches of one epoch: a random permutation of the ``n``
    samples cut into batches of ``batch_size`` (the last one smaller)."""
    order = torch.randperm(n, generator=generator)
    return [order[start:start + batch_size] for start in range(0, n, batch_size)]


def fit(model: nn.Module, data: Dataset, config: TrainConfig = TrainConfig(), *,
        loss_fn: LossFn | IndexedLoss = cross_entropy_loss, step_fn: StepFn = gradient_step,
        on_epoch_end: Callable[[int, nn.Module], bool] | None = None,
        sampler: BatchSampler | None = None, show_progress: bool = True) -> TrainHistory:
    """Train ``model`` in place on ``data`` and return the per-epoch history.

    ``loss_fn(model, x, y)`` turns a batch into a scalar loss (default: cross-entropy on
    the model's logits); an :class:`IndexedLoss` is also told the batch's sample indices.
    ``step_fn(model, x, y, loss_fn, optimizer)`` runs once per batch,
    in train mode, and returns the batch's mean loss as a tensor (for the history); the
    default :func:`gradient_step` zeroes the gradients, back-propagates ``loss_fn`` and
    steps ``optimizer`` (Adam or SGD of ``config``, whose learning-rate schedule is
    stepped after it). A custom step sets the parameters' ``.grad`` its own way (e.g.
    DP-SGD: clipped, noised per-sample gradients) and then calls ``optimizer.step()``, or
    updates the weights itself. ``on_epoch_end(epoch, model)`` runs after each epoch in
    eval mode; returning True stops training. ``sampler(n, generator)`` returns one epoch's
    batches as index tensors into the ``n`` training samples (int64, on the CPU), drawn
    from ``generator`` (seeded by ``config.seed``) or its own; default
    :func:`shuffled_batches` of ``config.batch_size`` (DP-SGD passes Poisson sampling,
    whose batches vary in size and may be empty; the cyclic schedule counts
    ``ceil(n / batch_size)`` batches an epoch). The model is left in eval mode.
    """
    device = model_device(model)
    optimizer = make_optimizer(model, config)
    generator = seeded_generator(config.seed)
    history = TrainHistory()
    x_all, y_all = data.x, data.y
    per_epoch = -(-len(y_all) // config.batch_size)
    scheduler = None
    if config.schedule == "cyclic" and config.epochs and per_epoch:
        total = config.epochs * per_epoch
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: cyclic_factor(step, total))
    started = time.perf_counter()
    for epoch in range(config.epochs):
        model.train()
        batches = (shuffled_batches(len(y_all), config.batch_size, generator)
                   if sampler is None else sampler(len(y_all), generator))
        total_loss, seen = 0.0, 0
        for index in progress_bar(batches, desc=f"epoch {epoch + 1}/{config.epochs}",
                                  enabled=show_progress):
            x, y = x_all[index].to(device), y_all[index].to(device)
            batch_loss = loss_fn.bind(index) if isinstance(loss_fn, IndexedLoss) else loss_fn
            loss = step_fn(model, x, y, batch_loss, optimizer)
            if scheduler is not None:
                scheduler.step()
            total_loss += float(loss.detach()) * len(y)
            seen += len(y)
        model.eval()
        predicted = batched_predict(model, x_all, batch_size=1024, device=device)
        correct = int((predicted == y_all).sum())
        history.loss.append(total_loss / max(seen, 1))
        history.train_accuracy.append(correct / len(y_all))
        # a line per epoch is progress for long training, noise for a few seconds of it
        long = time.perf_counter() - started > _EPOCH_LOG_AFTER_S
        level = logging.INFO if long else logging.DEBUG
        log.log(level, "epoch %d: loss %.4f, train accuracy %.4f", epoch + 1, history.loss[-1],
                history.train_accuracy[-1])
        if on_epoch_end is not None and on_epoch_end(epoch, model):
            history.stopped_early = True
            break
    model.eval()
    return history
