"""Feature visualisation: the input a class (or a unit) responds to most, found by
regularised gradient ascent.

Simonyan, Vedaldi and Zisserman, "Deep Inside Convolutional Networks", ICLR workshop 2014
(class model visualisation, L2 regularisation); Yosinski, Clune, Nguyen, Fuchs and
Lipson, "Understanding Neural Networks Through Deep Visualization", ICML deep learning
workshop 2015 (the Deep Visualization Toolbox: L2 decay, Gaussian blur); jitter as in
Mordvintsev, Olah and Tyka, "Inceptionism", 2015.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .._params import check_float, check_int, check_optional_seed
from ..core.inference import check_logits, eval_mode, model_device
from ..core.rng import seeded_generator
from ..errors import AssayValueError
from .gradcam import find_layer
from .metrics import gaussian_blur


def activation_maximisation(model: nn.Module, classes: Sequence[int], *,
                            input_shape: Sequence[int] | None = None, steps: int = 200,
                            lr: float = 0.05, l2: float = 0.01, blur_every: int = 4,
                            blur_sigma: float = 0.5, jitter: int = 1,
                            layer: str | None = None, seed: int | None = 0) -> Tensor:
    """One image per entry of ``classes`` [K, *input_shape], within the model's bounds,
    that maximises that class's logit (or, with ``layer``, the mean activation of that
    channel of the layer's output: a unit's visualisation).

    Each of ``steps`` (default 200) steps: shift the images by a random offset of up to
    ``jitter`` px (default 1; 0: none), take a gradient step of size ``lr`` (default 0.05
    of the input range) along the gradient scaled to unit mean absolute value, decay the
    images towards the middle of the range by ``l2`` (default 1%), blur them with a
    Gaussian of ``blur_sigma`` px (default 0.5) every ``blur_every`` steps (default 4; 0:
    never) and clip them to the bounds. The start is the middle of the range plus seeded
    noise of 1% of it. All images are optimised together, in one batch.

    Parameters (keyword-only besides ``model`` and ``classes``):
        input_shape: one input's shape (default: the model wrapper's ``input_shape``).
        layer: None (class logits) or a layer name (``model.named_modules()``), whose
            [N, C, ...] output's channel ``classes[k]`` is maximised.
        seed: seeds the start and the jitter, an int >= 0 or None (default 0).

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> images = activation_maximisation(net, [0, 2], input_shape=(1, 4, 4), steps=5)
        >>> images.shape
        torch.Size([2, 1, 4, 4])
    """
    owner = "activation_maximisation"
    steps = check_int("steps", steps, owner, low=1)
    lr = check_float("lr", lr, owner, low=0.0, low_open=True)
    l2 = check_float("l2", l2, owner, low=0.0, high=1.0, high_open=True)
    blur_every = check_int("blur_every", blur_every, owner, low=0)
    blur_sigma = check_float("blur_sigma", blur_sigma, owner, low=0.0, low_open=True)
    jitter = check_int("jitter", jitter, owner, low=0)
    seed = check_optional_seed("seed", seed, owner)
    shape = tuple(input_shape if input_shape is not None else getattr(model, "input_shape", ()))
    if not shape:
        raise AssayValueError(f"The 'input_shape' parameter of {owner} must be given for a "
                              "model without one (a plain nn.Module). Got None instead.")
    classes = [int(c) for c in classes]
    if not classes:
        raise AssayValueError(f"The 'classes' parameter of {owner} must list at least one "
                              "class (or channel). Got [] instead.")
    device = model_device(model)
    low, high = getattr(model, "bounds", (0.0, 1.0))
    width = high - low
    generator = seeded_generator(seed, device)
    middle = low + width / 2
    images = middle + 0.01 * width * torch.randn((len(classes), *shape), generator=generator,
                                                 device=device)
    index = torch.tensor(classes, device=device)
    captured: list[Tensor] = []
    handle = None
    if layer is not None:
        handle = find_layer(model, layer, owner).register_forward_hook(
            lambda _m, _i, output: captured.append(output))
    try:
        with eval_mode(model), torch.enable_grad():
            for step in range(steps):
                shifts = [0, 0]
                if jitter and len(shape) == 3:
                    shifts = torch.randint(-jitter, jitter + 1, (2,), generator=generator,
                                           device=device).tolist()
                moved = torch.roll(images, shifts, dims=(-2, -1)) if len(shape) == 3 else images
                moved = moved.detach().requires_grad_(True)
                captured.clear()
                logits = check_logits(model(moved), len(classes), owner)
                score = _objective(logits, captured, index, layer, owner)
                (grad,) = torch.autograd.grad(score.sum(), moved)
                if len(shape) == 3:
                    grad = torch.roll(grad, [-s for s in shifts], dims=(-2, -1))
                scale = grad.flatten(1).abs().mean(1).clamp_min(1e-12)
                images = images + lr * width * grad / scale.view(-1, *([1] * len(shape)))
                images = middle + (1 - l2) * (images - middle)
                if blur_every and len(shape) == 3 and (step + 1) % blur_every == 0:
                    images = gaussian_blur(images, blur_sigma)
                images = images.clamp(low, high).detach()
    finally:
        if handle is not None:
            handle.remove()
    return images


def _objective(logits: Tensor, captured: list[Tensor], index: Tensor, layer: str | None,
               owner: str) -> Tensor:
    if layer is None:
        if int(index.max()) >= logits.shape[1] or int(index.min()) < 0:
            raise AssayValueError(f"The 'classes' parameter of {owner} must hold classes in "
                                  f"0..{logits.shape[1] - 1}. Got {index.tolist()} instead.")
        return logits.gather(1, index[:, None]).squeeze(1)
    output = captured[-1] if captured else None
    if not isinstance(output, Tensor) or output.ndim < 2 or int(index.max()) >= output.shape[1]:
        got = tuple(output.shape) if isinstance(output, Tensor) else None
        raise AssayValueError(f"The 'classes' parameter of {owner} must name channels of the "
                              f"layer's output (shape {got}). Got {index.tolist()} instead.")
    return output.gather(1, index.view(-1, *([1] * (output.ndim - 1))).expand(
        -1, 1, *output.shape[2:])).flatten(1).mean(1)
