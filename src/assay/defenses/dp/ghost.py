"""The clipped sum of per-sample gradients without a per-sample gradient of every weight:
for networks whose trainable layers are ``nn.Linear`` and ``nn.Conv2d``.

One forward pass records each layer's input ``a``; one backward pass gives the gradient
``b`` of the summed per-sample losses at each layer's output (and no weight gradients).
A linear layer's per-sample weight gradient is the outer product ``b_i a_i^T``, whose norm
is ``|a_i| |b_i|`` (the ghost norm: I. Goodfellow. "Efficient Per-Example Gradient
Computations". arXiv 1510.01799, 2015), and the clipped sum is the one matrix product
``(c * b)^T a`` (book-keeping: Z. Bu, Y.-X. Wang, S. Zha, G. Karypis. "Differentially
Private Optimization on Large Model at Small Cost". ICML 2023). A convolution's
per-sample weight gradients are small and are formed from the unfolded input. On the
MNIST LeNet, whose first linear layer holds 3.2M weights, the per-sample gradients of
``torch.func`` write 3.3 GB a batch of 256 and ran 20x slower than this.

The results equal those of :func:`assay.defenses.dp.sgd.per_sample_gradients` (the test
compares them); :func:`supports` says which models and losses qualify.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ...core.training import LossFn, cross_entropy_loss
from .clipping import clipping_factors


Layer = nn.Linear | nn.Conv2d


def _layers(model: nn.Module) -> list[Layer] | None:
    """The layers holding trainable parameters, or None when one is neither a linear layer
    nor an ungrouped, zero-padded 2-d convolution, or shares a parameter with another."""
    layers: list[Layer] = []
    seen: set[int] = set()
    for module in model.modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if not own:
            continue
        if seen & {id(p) for p in own}:
            return None
        seen |= {id(p) for p in own}
        if isinstance(module, nn.Linear) or (
                isinstance(module, nn.Conv2d) and module.groups == 1
                and module.padding_mode == "zeros" and isinstance(module.padding, tuple)):
            layers.append(module)
        else:
            return None
    return layers


# modules known to treat each sample of a batch alone; the batch runs through the model in
# one pass here, so a module that mixed samples (a custom forward subtracting the batch
# mean) would leak one sample's data into another's gradient. Anything else goes through
# torch.func, which runs each sample alone whatever its layers do.
_SAMPLEWISE = (nn.Linear, nn.Conv2d, nn.Sequential, nn.Identity, nn.Flatten, nn.Dropout,
               nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid,
               nn.Softplus, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)


def supports(model: nn.Module, loss_fn: LossFn) -> bool:
    """Whether :func:`clipped_gradient_sum` applies: the model built of known sample-wise
    modules (assay's ``ModelWrapper`` around them included), every trainable layer linear
    or a 2-d convolution, and the loss the mean cross-entropy (a loss that couples the
    samples of a batch would give no per-sample gradient; any other loss goes through
    ``torch.func``)."""
    from ...core.model import ModelWrapper

    known = all(type(m) in _SAMPLEWISE or type(m) is ModelWrapper for m in model.modules())
    return known and loss_fn is cross_entropy_loss and _layers(model) is not None


def clipped_gradient_sum(model: nn.Module, x: Tensor, y: Tensor, max_grad_norm: float
                         ) -> tuple[dict[str, Tensor], Tensor, Tensor] | None:
    """``{name: sum_i clip(g_i)}`` over the batch, the per-sample gradient norms ``[B]``
    before clipping, and the per-sample losses ``[B]``, for a model :func:`supports`
    (cross-entropy loss). Clipping as :func:`assay.defenses.dp.clipping.clipping_factors`.
    None when a layer ran other than once in the forward pass (a reused layer sums
    several contributions, which the recorded input does not show)."""
    layers = _layers(model)
    if layers is None:
        raise ValueError("clipped_gradient_sum needs linear and conv2d layers only")
    inputs: dict[nn.Module, Tensor] = {}  # keyed by the layer
    outputs: dict[nn.Module, Tensor] = {}

    calls: dict[nn.Module, int] = dict.fromkeys(layers, 0)

    def record(module: nn.Module, args: tuple, output: Tensor) -> None:
        inputs[module], outputs[module] = args[0].detach(), output
        calls[module] += 1

    handles = [layer.register_forward_hook(record) for layer in layers]
    try:
        logits = model(x)
    finally:
        for handle in handles:
            handle.remove()
    if any(count != 1 for count in calls.values()):
        return None
    losses = F.cross_entropy(logits, y, reduction="none")
    # gradients at the layers' outputs only: the weights' own gradients are not needed
    found = torch.autograd.grad(losses.sum(), [outputs[layer] for layer in layers],
                                allow_unused=True)
    grads = [torch.zeros_like(outputs[layer]) if g is None else g
             for layer, g in zip(layers, found)]
    squares = torch.zeros(len(y), device=x.device, dtype=logits.dtype)
    # per layer: the input a (ghost case) or the per-sample weight gradients, and the
    # per-sample bias gradients
    pieces: list[tuple[Layer, Tensor | None, Tensor, Tensor | None]] = []
    for layer, b in zip(layers, grads):
        a: Tensor | None = inputs[layer]
        weight: Tensor | None = None
        if isinstance(layer, nn.Linear) and a is not None:
            a, b = a.reshape(len(y), -1, a.shape[-1]), b.reshape(len(y), -1, b.shape[-1])
            if a.shape[1] == 1:  # one position a sample: the ghost norm
                a, b = a[:, 0], b[:, 0]
                weight_squares = a.pow(2).sum(1) * b.pow(2).sum(1)
                bias_grad = b
            else:  # a sequence: the per-sample gradients themselves
                weight = torch.einsum("bto,bti->boi", b, a)
                a, bias_grad = None, b.sum(1)
        else:
            conv: nn.Conv2d = layer  # type: ignore[assignment]
            unfolded = F.unfold(inputs[layer], conv.kernel_size, dilation=conv.dilation,
                                padding=conv.padding, stride=conv.stride)  # type: ignore[arg-type]
            b = b.flatten(2)
            weight = torch.einsum("bot,bkt->bok", b, unfolded)
            a, bias_grad = None, b.sum(2)
        if weight is not None:
            weight_squares = weight.flatten(1).pow(2).sum(1)
        if layer.weight.requires_grad:
            squares = squares + weight_squares
        if layer.bias is not None and layer.bias.requires_grad:
            squares = squares + bias_grad.pow(2).sum(1)
        pieces.append((layer, a, bias_grad, weight))
    norms = squares.sqrt()
    factors = clipping_factors(norms, max_grad_norm)
    names = {id(param): name for name, param in model.named_parameters()}
    summed: dict[str, Tensor] = {}
    for layer, a, bias_grad, weight in pieces:
        if layer.weight.requires_grad:
            total = ((factors[:, None] * bias_grad).T @ a if a is not None
                     else torch.einsum("b,bok->ok", factors, weight))
            summed[names[id(layer.weight)]] = total.reshape(layer.weight.shape)
        if layer.bias is not None and layer.bias.requires_grad:
            summed[names[id(layer.bias)]] = factors @ bias_grad
    return summed, norms, losses.detach()
