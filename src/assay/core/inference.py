"""Faster copies of a model for work made of many forward passes (evaluation, smoothing).

Each copy computes the same function as the model up to float rounding, and the caller's
model is never changed:

* :func:`channels_last_copy`: 4-D weights in channels_last memory format, for which
  PyTorch's CPU convolutions have faster kernels (MNIST LeNet, 2 threads: forward 1.9x,
  forward + backward 1.3x).
* :func:`compile_for_inference`: a TorchScript trace of the model, frozen (weights folded
  in as constants) and optimised for inference (``torch.jit.optimize_for_inference``:
  convolution + batch norm folded, convolution + ReLU fused, oneDNN weight layouts).
  Forward only, no gradients. On 2 CPU threads, passes of 256: MNIST LeNet 1.7x faster
  than its channels_last copy, the zoo ResNet on 3x32x32 1.6x, small_cnn 1.5x, for
  0.1 to 1 s of tracing. ``torch.compile`` with inductor's freezing was tried first: 1.0x
  to 1.6x, and 10 to 20 s for the first compilation in a process (C++ code generation),
  which ate the gain of a 100-image certification. The result is checked against the
  model on the first real batch; a trace that fails or disagrees is dropped with a
  warning and the caller goes on with the model as it was.
* :class:`AutoCompiledForward`: a forward function for a long run of equal-sized passes
  that compiles only where the measured time says it pays.
"""

from __future__ import annotations

import copy
import logging
import statistics
import time
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["AutoCompiledForward", "channels_last_copy", "compile_for_inference",
           "frozen_trace", "has_conv2d"]

log = logging.getLogger("assay")

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

    The function is :func:`frozen_trace` of ``model`` (in eval mode, under
    ``torch.no_grad``), taking every batch padded to ``len(batch)``: a trace may bake the
    batch size into a reshape, so it only ever sees the size it was traced with. If tracing
    raises, or the traced logits of ``batch`` differ from the model's by more than
    ``1e-4 * (1 + max |logit|)`` or in any argmax (a forward whose control flow depends on
    the data, a random one), a warning names ``owner`` and the function returned is the
    model itself. The logits returned are the model's own (eager) ones either way.
    """
    full = len(batch)
    with torch.no_grad():
        reference = model(batch)
    try:
        compiled = frozen_trace(model, batch)
        with torch.no_grad():
            got = compiled(batch)
        scale = 1.0 + float(reference.abs().max()) if reference.numel() else 1.0
        gap = float((got - reference).abs().max()) if reference.numel() else 0.0
        if gap > _AGREEMENT_TOLERANCE * scale or not torch.equal(got.argmax(1),
                                                                  reference.argmax(1)):
            raise RuntimeError(f"compiled logits differ from the model's by {gap:.3g}")
    except Exception as error:  # an untraceable or unsupported operation, a mismatch
        first_line = (str(error).strip().splitlines() or [""])[0][:200]
        warnings.warn(f"{owner}: compiling the model (TorchScript freezing) failed, running it "
                      f"uncompiled ({type(error).__name__}: {first_line}); compile=False "
                      "skips the attempt.", RuntimeWarning, stacklevel=3)
        return model, reference

    def forward(inputs: Tensor) -> Tensor:
        short = full - len(inputs)
        if short <= 0:
            return compiled(inputs)
        padding = inputs.new_zeros((short, *inputs.shape[1:]))
        return compiled(torch.cat([inputs, padding]))[:len(inputs)]

    return forward, reference


def frozen_trace(model: nn.Module, batch: Tensor) -> Callable[[Tensor], Tensor]:
    """``torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(model, batch)))``
    of a model in eval mode: forward only, for inputs shaped like ``batch``.

    torch 2.13 marks ``torch.jit`` deprecated in favour of ``torch.compile`` (see the
    module docstring for why it is still used here); those warnings are silenced. If a
    later torch removes it, the call raises and :func:`compile_for_inference` falls back
    to the model with a warning.
    """
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", DeprecationWarning)
        traced = torch.jit.trace(model, batch, check_trace=False)
        return torch.jit.optimize_for_inference(torch.jit.freeze(traced))


class AutoCompiledForward:
    """The forward function of a run of ``passes`` forward passes of equal size: the model,
    or a compiled copy of it (:func:`compile_for_inference`) where that is faster.

    ``compile=True`` compiles at the first pass, ``False`` never does. ``None`` decides by
    timing, for CPU work (the caller's choice): the passes after the first (a warm-up) are
    timed, and after ``probe`` of them the model is compiled only if the remaining passes
    would take at least ``min_seconds`` eagerly (tracing takes 0.1 to 1 s and saves 0 to
    40% of each pass: below 10 s of work it cannot pay); the next ``probe`` compiled
    passes are timed too, and the compiled copy is dropped unless its median pass takes at
    most ``keep_ratio`` times the eager one.
    ``choice`` ends as "eager", "compiled" or "eager after trial". Call it under
    ``torch.no_grad()`` with the model in eval mode.
    """

    def __init__(self, model: Callable[[Tensor], Tensor], *, passes: int,
                 compile: bool | None, owner: str, probe: int = 3,
                 min_seconds: float = 10.0, keep_ratio: float = 0.9) -> None:
        self.model, self.owner, self.passes = model, owner, passes
        self.probe, self.min_seconds, self.keep_ratio = probe, min_seconds, keep_ratio
        self.forward: Callable[[Tensor], Tensor] = model
        self.eager_seconds: list[float] = []
        self.compiled_seconds: list[float] = []
        self.done = 0
        self.choice = "eager"
        self._stage = {True: "compile", False: "fixed", None: "probe"}[compile]

    def __call__(self, batch: Tensor) -> Tensor:
        self.done += 1
        stage = self._stage
        if stage == "fixed":
            return self.forward(batch)
        if stage == "compile":
            self.forward, logits = compile_for_inference(self.model, batch, self.owner)
            compiled = self.forward is not self.model
            self.choice = "compiled" if compiled else "eager"
            # a compile asked for by the caller is kept; an automatic one is on trial
            self._stage = "trial" if compiled and self.eager_seconds else "fixed"
            return logits
        started = time.perf_counter()
        logits = self.forward(batch)
        seconds = time.perf_counter() - started
        if stage == "probe":
            if self.done > 1:  # the first pass warms up caches and the allocator
                self.eager_seconds.append(seconds)
            if len(self.eager_seconds) == self.probe:
                eager = statistics.median(self.eager_seconds)
                left = eager * (self.passes - self.done)
                self._stage = "compile" if left >= self.min_seconds else "fixed"
                log.debug("%s: %.1f s of eager passes left: %s", self.owner, left,
                          "compiling" if self._stage == "compile" else "not compiling")
            return logits
        self.compiled_seconds.append(seconds)  # stage "trial"
        if len(self.compiled_seconds) == self.probe:
            ratio = statistics.median(self.compiled_seconds) / statistics.median(
                self.eager_seconds)
            if ratio > self.keep_ratio:
                self.forward, self.choice = self.model, "eager after trial"
            log.debug("%s: compiled/eager pass time %.2f: %s", self.owner, ratio, self.choice)
            self._stage = "fixed"
        return logits
