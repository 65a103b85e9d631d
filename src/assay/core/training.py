"""The one training loop. Adversarial training, DP-SGD and the like extend it through
``loss_fn`` (how a batch becomes a loss) and ``on_epoch_end`` (what to watch after each
epoch) instead of copying it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .._params import check_choice, check_float, check_int
from .data import Dataset
from .progress import progress_bar

log = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, Tensor, Tensor], Tensor]


def cross_entropy_loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(model(x), y)


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


def cyclic_factor(step: int, total: int) -> float:
    """The learning-rate factor of step ``step`` of ``total`` under the "cyclic" schedule:
    a triangle from 0 up to 1 at the middle and back to 0, taken at the step's midpoint."""
    return 1 - abs(2 * (step + 0.5) / total - 1)


@dataclass
class TrainHistory:
    loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    stopped_early: bool = False


def fit(model: nn.Module, data: Dataset, config: TrainConfig = TrainConfig(), *,
        loss_fn: LossFn = cross_entropy_loss,
        on_epoch_end: Callable[[int, nn.Module], bool] | None = None,
        show_progress: bool = True) -> TrainHistory:
    """Train ``model`` in place on ``data`` and return the per-epoch history.

    ``loss_fn(model, x, y)`` turns a batch into a scalar loss (default: cross-entropy on
    the model's logits). ``on_epoch_end(epoch, model)`` runs after each epoch in eval
    mode; returning True stops training. The model is left in eval mode.
    """
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adam":
        optimizer: torch.optim.Optimizer = torch.optim.Adam(
            params, lr=config.lr, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.SGD(params, lr=config.lr, momentum=0.9,
                                    weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    history = TrainHistory()
    x_all, y_all = data.x, data.y
    per_epoch = -(-len(y_all) // config.batch_size)
    scheduler = None
    if config.schedule == "cyclic" and config.epochs and per_epoch:
        total = config.epochs * per_epoch
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: cyclic_factor(step, total))
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(len(y_all), generator=generator)
        total_loss, correct, seen = 0.0, 0, 0
        batches = range(0, len(order), config.batch_size)
        for start in progress_bar(batches, desc=f"epoch {epoch + 1}/{config.epochs}",
                                  enabled=show_progress):
            index = order[start:start + config.batch_size]
            x, y = x_all[index].to(device), y_all[index].to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model, x, y)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            total_loss += float(loss.detach()) * len(y)
            seen += len(y)
        model.eval()
        with torch.no_grad():
            for start in range(0, len(y_all), 1024):
                xb = x_all[start:start + 1024].to(device)
                correct += int((model(xb).argmax(1).cpu() == y_all[start:start + 1024]).sum())
        history.loss.append(total_loss / max(seen, 1))
        history.train_accuracy.append(correct / len(y_all))
        log.info("epoch %d: loss %.4f, train accuracy %.4f", epoch + 1, history.loss[-1],
                 history.train_accuracy[-1])
        if on_epoch_end is not None and on_epoch_end(epoch, model):
            history.stopped_early = True
            break
    model.eval()
    return history
