"""Faster copies of a model for work made of many forward passes (evaluation, smoothing).

Each copy computes the same function as the model up to float rounding, and the caller's
model is never changed:

* :func:`channels_last_copy`: 4-D weights in channels_last memory format, for which
  PyTorch's CPU convolutions have faster kernels (MNIST LeNet, 2 threads: forward 1.9x,
  forward + backward 1.3x).
* :func:`compile_for_inference`: ``torch.compile`` with inductor's ``freezing`` (weights
  folded in as constants, convolution + ReLU fused, weights pre-packed). Forward only, no
  gradients; on the MNIST LeNet another 1.3-1.5x over channels_last, for 3 to 15 s of
  compilation (a C++ compiler must be on the PATH). The result is checked against the
  model on the first real batch; a compile that fails or disagrees is dropped with a
  warning and the caller goes on with the model as it was.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["channels_last_copy", "compile_for_inference", "has_conv2d"]

# A compiled forward may differ from eager by rounding; more than this (relative to the
# logits' scale) means it computes something else.
_AGREEMENT_TOLERANCE = 1e-4


def has_conv2d(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def channels_last_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with 4-D weights in channels_last format; the model itself when
    it cannot be copied (e.g. a module holding an uncopyable handle)."""
    try:
        return copy.deepcopy(model).to(memory_format=torch.channels_last)
    except Exception:
        return model


def compile_for_inference(model: nn.Module, batch: Tensor,
                          owner: str) -> tuple[Callable[[Tensor], Tensor], Tensor]:
    """A forward function for inputs shaped like ``batch`` and the logits of ``batch``.

    The function is ``model`` compiled by ``torch.compile(..., options={"freezing": True},
    dynamic=False)`` (in eval mode, under ``torch.no_grad``), taking every batch padded to
    ``len(batch)`` so that one compilation serves a last, shorter batch too. If compiling
    raises, or the compiled logits of ``batch`` differ from the model's by more than
    ``1e-4 * (1 + max |logit|)`` or in any argmax, a warning names ``owner`` and the
    function returned is the model itself. The logits returned are the model's own
    (eager) ones either way.
    """
    full = len(batch)
    with torch.no_grad():
        reference = model(batch)
    try:
        compiled = torch.compile(model, options={"freezing": True}, dynamic=False)
        with torch.no_grad():
            got = compiled(batch)
        scale = 1.0 + float(reference.abs().max()) if reference.numel() else 1.0
        gap = float((got - reference).abs().max()) if reference.numel() else 0.0
        if gap > _AGREEMENT_TOLERANCE * scale or not torch.equal(got.argmax(1),
                                                                  reference.argmax(1)):
            raise RuntimeError(f"compiled logits differ from the model's by {gap:.3g}")
    except Exception as error:  # no C++ compiler, an unsupported operation, a mismatch
        warnings.warn(f"{owner}: torch.compile of the model failed, running it uncompiled "
                      f"({type(error).__name__}: {str(error).splitlines()[0][:200]}); "
                      "compile=False skips the attempt.",
                      RuntimeWarning, stacklevel=3)
        return model, reference

    def forward(inputs: Tensor) -> Tensor:
        short = full - len(inputs)
        if short <= 0:
            return compiled(inputs)
        padding = inputs.new_zeros((short, *inputs.shape[1:]))
        return compiled(torch.cat([inputs, padding]))[:len(inputs)]

    return forward, reference
