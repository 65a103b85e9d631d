"""Backdoor removal: make a trojaned model forget its trigger, with clean data only.

- :func:`unlearn` (Neural Cleanse unlearning; Wang et al., IEEE S&P 2019): the trigger
  Neural Cleanse reverse-engineered for the suspected target is stamped on a share
  (``stamp_fraction``, the paper's 20%) of the clean training inputs, which keep their
  true labels, and the model is fine-tuned on them through ``fit``.
- :func:`fine_prune` (Fine-Pruning; Liu, Dolan-Gavitt & Garg, RAID 2018): the channels of
  the last convolution that clean inputs activate least (where a backdoor hides) are
  pruned, in increasing order of mean activation, until clean accuracy on held-out data
  has dropped by more than ``max_accuracy_drop`` (the paper's 4 points; the last channel
  within it is kept), then the pruned model is fine-tuned on clean data. The pruned
  channels stay zero through the fine-tuning (their weights and biases are masked), and
  the masks are folded into the weights afterwards, so the model keeps its architecture's
  state dict.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils import prune

from ..._params import check_float
from ...core.dataset import Dataset
from ...core.inference import batched_predict, eval_mode, model_device
from ...core.training import IndexedLoss, TrainConfig, fit
from ...errors import AssayValueError
from .neural_cleanse import TriggerScan


@dataclass(frozen=True)
class Removal:
    """What a removal did: the method, the class whose trigger was unlearnt (unlearning)
    or the pruned channels of the last convolution (fine-pruning)."""

    method: str
    target: int | None = None
    pruned_channels: tuple[int, ...] = ()
    channels: int = 0


def unlearn(model: nn.Module, clean: Dataset, scan: TriggerScan,
            config: TrainConfig = TrainConfig(epochs=1), *, stamp_fraction: float = 0.2,
            show_progress: bool = False) -> Removal:
    """Fine-tune ``model`` in place on ``clean`` with the reconstructed trigger of
    ``scan``'s suspected target (or, when nothing was flagged, of the class with the
    smallest mask) stamped on ``stamp_fraction`` of every batch, labels kept."""
    fraction = check_float("stamp_fraction", stamp_fraction, "unlearn", low=0.0, high=1.0,
                           low_open=True)
    target = scan.suspected_target if scan.suspected_target >= 0 else int(scan.l1.argmin())
    device = model_device(model)
    mask = scan.masks[target].to(device)
    pattern = scan.patterns[target].to(device)
    every = max(1, round(1 / fraction))

    def loss(net: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> Tensor:
        stamped = (index.to(x.device) % every == 0).view(-1, *([1] * (x.ndim - 1)))
        x = torch.where(stamped, (1 - mask) * x + mask * pattern, x)
        return F.cross_entropy(net(x), y)

    fit(model, clean, config, loss_fn=IndexedLoss(loss), show_progress=show_progress)
    return Removal("nc_unlearning", target=target)


def fine_prune(model: nn.Module, clean: Dataset, held_out: Dataset,
               config: TrainConfig = TrainConfig(epochs=1), *,
               max_accuracy_drop: float = 0.04, show_progress: bool = False) -> Removal:
    """Prune the last convolution's least-active channels of ``model`` (in place) until
    accuracy on ``held_out`` falls more than ``max_accuracy_drop`` below the start, then
    fine-tune on ``clean``."""
    drop = check_float("max_accuracy_drop", max_accuracy_drop, "fine_prune", low=0.0,
                       high=1.0)
    conv = _last_conv(model)
    activity = _mean_activation(model, conv, clean.x)
    order = activity.argsort().tolist()
    device = model_device(model)

    def accuracy() -> float:
        with eval_mode(model):
            predicted = batched_predict(model, held_out.x, device=device).cpu()
        return float((predicted == held_out.y).float().mean())

    channel_mask = torch.ones(conv.out_channels, device=conv.weight.device)
    hook = conv.register_forward_hook(lambda _m, _i, out: out * channel_mask.view(1, -1, 1, 1))
    try:
        start, pruned = accuracy(), []
        for channel in order[:-1]:  # a layer keeps at least one channel
            channel_mask[channel] = 0.0
            if accuracy() < start - drop:
                channel_mask[channel] = 1.0
                break
            pruned.append(channel)
    finally:
        hook.remove()
    keep = channel_mask.view(-1, 1, 1, 1).expand_as(conv.weight).clone()
    prune.custom_from_mask(conv, "weight", keep)
    if conv.bias is not None:
        prune.custom_from_mask(conv, "bias", channel_mask.clone())
    try:
        fit(model, clean, config, show_progress=show_progress)
    finally:  # fold the masks into the weights: the state dict keeps its keys
        prune.remove(conv, "weight")
        if conv.bias is not None:
            prune.remove(conv, "bias")
    return Removal("fine_pruning", pruned_channels=tuple(sorted(pruned)),
                   channels=conv.out_channels)


def _last_conv(model: nn.Module) -> nn.Conv2d:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise AssayValueError("Fine-pruning prunes the channels of the last convolution; "
                              "this model has no nn.Conv2d (use Neural Cleanse unlearning).")
    return convs[-1]


def _mean_activation(model: nn.Module, conv: nn.Conv2d, x: Tensor) -> Tensor:
    """Each channel's mean (ReLU-ed) output of ``conv`` over ``x``."""
    totals: list[Tensor] = []

    def record(_module: nn.Module, _inputs: object, out: Tensor) -> None:
        totals.append(out.detach().clamp_min(0).mean(dim=(0, 2, 3)) * len(out))

    hook = conv.register_forward_hook(record)
    try:
        with eval_mode(model), torch.no_grad():
            batched_predict(model, x, device=model_device(model))
    finally:
        hook.remove()
    return (torch.stack(totals).sum(0) / len(x)).cpu()
