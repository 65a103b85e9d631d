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
- :func:`adversarial_neuron_prune` (ANP; Wu & Wang, NeurIPS 2021): a mask ``m`` in [0, 1]
  per neuron is learnt on clean data against adversarial neuron perturbations (weights
  scaled by ``m + delta``, biases by ``1 + xi``, ``|delta|, |xi| <= eps``): the loss is
  ``alpha * CE(m) + (1 - alpha) * max CE(m + delta, 1 + xi)``, the inner max one signed
  step from a uniform start, the mask by SGD (lr 0.2, momentum 0.9) and clipped to
  [0, 1]; neurons whose mask ends below ``threshold`` are pruned (their weights zeroed),
  with no fine-tuning. Backdoor neurons are the ones a small perturbation turns into a
  misclassification, so their masks fall. Defaults are the reference implementation's:
  eps 0.4, alpha 0.2, 2000 iterations of batch 128, threshold 0.2. The reference
  perturbs BatchNorm neurons; assay perturbs the output channels of every convolution
  and hidden linear layer (what those BatchNorms scale), so networks without BatchNorm
  are pruned too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils import prune

from ..._params import check_float, check_int
from ...core.dataset import Dataset
from ...core.inference import batched_predict, eval_mode, model_device
from ...core.rng import seeded_generator
from ...core.training import IndexedLoss, TrainConfig, fit
from ...errors import AssayValueError
from .neural_cleanse import TriggerScan


@dataclass(frozen=True)
class Removal:
    """What a removal did: the method, the class whose trigger was unlearnt (unlearning),
    the pruned channels of the last convolution (fine-pruning), or the count of pruned
    neurons of each hidden layer (ANP; ``channels`` their total)."""

    method: str
    target: int | None = None
    pruned_channels: tuple[int, ...] = ()
    channels: int = 0
    pruned_per_layer: tuple[int, ...] = ()


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


def adversarial_neuron_prune(model: nn.Module, clean: Dataset, *, eps: float = 0.4,
                             alpha: float = 0.2, iterations: int = 2000, batch_size: int = 128,
                             lr: float = 0.2, threshold: float = 0.2, seed: int = 0) -> Removal:
    """Learn ANP's neuron masks of ``model`` on ``clean`` and prune (in place) the neurons
    whose mask ends below ``threshold``; see the module docstring."""
    owner = "adversarial_neuron_prune"
    eps = check_float("eps", eps, owner, low=0.0, high=1.0)
    alpha = check_float("alpha", alpha, owner, low=0.0, high=1.0)
    lr = check_float("lr", lr, owner, low=0.0, low_open=True)
    threshold = check_float("threshold", threshold, owner, low=0.0, high=1.0)
    iterations = check_int("iterations", iterations, owner, low=1)
    batch_size = check_int("batch_size", batch_size, owner, low=1)
    layers = _hidden_layers(model)
    device = model_device(model)
    masks = [torch.ones(layer.weight.shape[0], device=device, requires_grad=True)
             for layer in layers]
    noise = [torch.zeros_like(m, requires_grad=True) for m in masks]
    noise_bias = [torch.zeros_like(m, requires_grad=True) for m in masks]
    state = {"perturbed": False}

    def scaled(index: int):
        def hook(layer: nn.Module, _inputs: object, out: Tensor) -> Tensor:
            shape = (1, -1) + (1,) * (out.ndim - 2)
            weight = masks[index] + (noise[index] if state["perturbed"] else 0)
            bias = getattr(layer, "bias", None)
            if bias is None:
                return out * weight.view(shape)
            bias_scale = 1 + noise_bias[index] if state["perturbed"] else 1
            return (out - bias.view(shape)) * weight.view(shape) + (bias * bias_scale).view(shape)
        return hook

    hooks = [layer.register_forward_hook(scaled(i)) for i, layer in enumerate(layers)]
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    optimizer = torch.optim.SGD(masks, lr=lr, momentum=0.9)
    gen = seeded_generator(seed)
    x_all, y_all = clean.x.to(device), clean.y.to(device)
    try:
        with eval_mode(model):
            for _ in range(iterations):
                index = torch.randint(0, len(clean), (min(batch_size, len(clean)),),
                                      generator=gen).to(device)
                x, y = x_all[index], y_all[index]
                if eps > 0:  # the inner maximisation: one signed step from a uniform start
                    with torch.no_grad():
                        for tensor in (*noise, *noise_bias):
                            tensor.copy_(torch.rand(tensor.shape, generator=gen).to(device)
                                         * 2 * eps - eps)
                    state["perturbed"] = True
                    grads = torch.autograd.grad(F.cross_entropy(model(x), y),
                                                [*noise, *noise_bias])
                    with torch.no_grad():
                        for tensor, grad in zip((*noise, *noise_bias), grads, strict=True):
                            tensor.add_(eps * grad.sign()).clamp_(-eps, eps)
                state["perturbed"] = eps > 0
                robust = F.cross_entropy(model(x), y)
                state["perturbed"] = False
                natural = F.cross_entropy(model(x), y)
                optimizer.zero_grad(set_to_none=True)
                (alpha * natural + (1 - alpha) * robust).backward()
                optimizer.step()
                with torch.no_grad():
                    for mask in masks:
                        mask.clamp_(0.0, 1.0)
    finally:
        for hook in hooks:
            hook.remove()
        for p in params:
            p.requires_grad_(True)
    pruned: list[tuple[int, ...]] = []
    with torch.no_grad():
        for layer, mask in zip(layers, masks, strict=True):
            drop = torch.nonzero(mask < threshold).flatten()
            layer.weight[drop] = 0.0  # the reference zeroes the neuron's weight, not its bias
            pruned.append(tuple(int(k) for k in drop))
    total = sum(len(m) for m in masks)
    return Removal("anp", pruned_channels=tuple(k for layer in pruned for k in layer),
                   channels=total, pruned_per_layer=tuple(len(p) for p in pruned))


def _hidden_layers(model: nn.Module) -> list[nn.Conv2d | nn.Linear]:
    """The convolutions and linear layers whose outputs are neurons: all but the last
    linear layer, whose outputs are the classes."""
    layers: list[nn.Conv2d | nn.Linear] = [
        m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if layers and isinstance(layers[-1], nn.Linear):
        layers = layers[:-1]
    if not layers:
        raise AssayValueError("ANP prunes the neurons of hidden layers; this model has no "
                              "nn.Conv2d or hidden nn.Linear.")
    return layers
