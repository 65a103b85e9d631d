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
* :class:`ScreeningForward`: for query-only searches, a copy that is *not* the same
  function (:func:`bf16_copy`, :func:`bf16_autocast`) screens candidates and the model
  confirms each one the search keeps.

And the one way to run a model for its outputs, which every algorithm uses instead of a
loop of its own:

* :func:`eval_mode`: every submodule in eval mode for a block, each one's own mode
  restored afterwards (even on an exception);
* :func:`batched_logits` / :func:`batched_predict`: logits or labels in passes of
  ``batch_size``, in eval mode, without gradients, on the model's device;
* :func:`model_device`: where a model's weights live.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import statistics
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

import torch
from torch import Tensor, nn

from .._params import check_int
from ..errors import AssayValueError

__all__ = ["AutoCompiledForward", "SCREENING_FORMS", "ScreeningForward", "batched_logits",
           "batched_predict", "bf16_autocast", "bf16_copy", "channels_last_copy", "check_logits",
           "compile_for_inference", "eval_mode", "frozen_trace", "has_conv2d", "map_batches",
           "model_device"]

log = logging.getLogger("assay")

_Out = TypeVar("_Out", Tensor, tuple[Tensor, ...])  # what map_batches concatenates

# A compiled forward may differ from eager by rounding; more than this (relative to the
# logits' scale) means it computes something else.
_AGREEMENT_TOLERANCE = 1e-4


def model_device(model: nn.Module, fallback: torch.device | str = "cpu") -> torch.device:
    """The device of the model's first parameter or buffer; ``fallback`` if it has none."""
    for parameter in model.parameters():
        return parameter.device
    for buffer in model.buffers():
        return buffer.device
    return torch.device(fallback)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` with every submodule in eval mode; afterwards, even after an exception,
    each submodule gets back its own mode (a model in train mode with a frozen batch norm
    keeps it frozen, which ``model.train(was_training)`` would undo)."""
    # Submodules of a frozen TorchScript module have no 'training' flag.
    modes = [(module, module.training) for module in model.modules()
             if hasattr(module, "training")]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training  # the flag itself: train() would recurse


def check_logits(logits: object, batch: int, owner: str) -> Tensor:
    """``logits`` if it is a tensor [batch, K]; otherwise an ``AssayValueError``."""
    if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[0] != batch:
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise AssayValueError(
            f"{owner}: the model must return logits of shape [batch, num_classes] = "
            f"[{batch}, K]. Got {got} instead."
        )
    return logits


def map_batches(fn: Callable[[Tensor], _Out], x: Tensor, *, batch_size: int | None,
                device: torch.device, output_device: torch.device | str | None = None) -> _Out:
    """``fn`` on each run of ``batch_size`` inputs of ``x`` (None: all at once), moved to
    ``device``; its outputs (a tensor, or a tuple of tensors) concatenated along the batch
    on ``output_device`` (default: ``x``'s device). ``x`` must not be empty. The caller
    chooses grad and eval mode (:func:`batched_logits` is the usual way in)."""
    out = x.device if output_device is None else torch.device(output_device)
    step = batch_size or max(len(x), 1)
    parts = [fn(x[start:start + step].to(device)) for start in range(0, len(x), step)]
    if isinstance(parts[0], tuple):
        return tuple(torch.cat(column).to(out) for column in zip(*parts))
    return torch.cat(parts).to(out)


def batched_logits(model: Callable[[Tensor], Tensor], x: Tensor, *,
                   batch_size: int | None = 256, device: torch.device | None = None,
                   output_device: torch.device | str | None = None,
                   owner: str = "batched_logits") -> Tensor:
    """Logits [N, K] of ``model`` on ``x`` [N, ...]: in eval mode (:func:`eval_mode`),
    under ``torch.no_grad``, in passes of ``batch_size`` inputs (None: one pass).

    Parameters:
        model: a classifier returning logits [B, K] (an ``nn.Module``, or any function of
            a batch, e.g. a compiled forward, which is called as it is).
        x: inputs [N, ...]; each batch is moved to ``device``.
        batch_size: inputs per forward pass, an int >= 1 or None (default 256).
        device: where the passes run (default: the model's device, else ``x``'s).
        output_device: where the logits are returned (default: ``x``'s device).
        owner: named in the error when the model returns no [B, K] logits.

    For empty ``x``: [0, K] with K the model's ``num_classes`` (0 if it has none), and no
    forward pass.
    """
    if batch_size is not None:
        check_int("batch_size", batch_size, owner, low=1)
    if len(x) == 0:
        out = x.device if output_device is None else output_device
        return torch.empty(0, int(getattr(model, "num_classes", 0) or 0), device=out)
    if device is None:
        device = model_device(model, x.device) if isinstance(model, nn.Module) else x.device

    def forward(xb: Tensor) -> Tensor:
        return check_logits(model(xb), len(xb), owner)

    modes = eval_mode(model) if isinstance(model, nn.Module) else contextlib.nullcontext()
    with torch.no_grad(), modes:
        return map_batches(forward, x, batch_size=batch_size, device=device,
                           output_device=output_device)


def batched_predict(model: Callable[[Tensor], Tensor], x: Tensor, *,
                    batch_size: int | None = 256, device: torch.device | None = None,
                    output_device: torch.device | str | None = None,
                    owner: str = "batched_predict") -> Tensor:
    """Predicted labels [N] (int64) of ``model`` on ``x``: the argmax of
    :func:`batched_logits`, with the same parameters."""
    logits = batched_logits(model, x, batch_size=batch_size, device=device,
                            output_device=output_device, owner=owner)
    if logits.numel() == 0:  # argmax cannot reduce a [0, 0] tensor
        return torch.zeros(len(logits), dtype=torch.long, device=logits.device)
    return logits.argmax(dim=1)


def has_conv2d(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


# Set inside layout_kept(): no channels_last copies are made.
_LAYOUT_KEPT: ContextVar[bool] = ContextVar("assay_layout_kept", default=False)


@contextmanager
def layout_kept() -> Iterator[None]:
    """Within the block :func:`gains_from_channels_last` is False, so attacks run the model
    in its own memory layout (``evaluate_robustness(channels_last=False)``)."""
    token = _LAYOUT_KEPT.set(True)
    try:
        yield
    finally:
        _LAYOUT_KEPT.reset(token)


def gains_from_channels_last(model: nn.Module, x: Tensor) -> bool:
    """Whether a :func:`channels_last_copy` of ``model`` would run faster on ``x``: 4-D
    inputs on the CPU, a model with 2-D convolutions whose weights are not in that format
    already (a copy made upstream is not copied again), outside :func:`layout_kept`."""
    if x.ndim != 4 or x.device.type != "cpu" or _LAYOUT_KEPT.get():
        return False
    convolutions = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    # (a weight of one input channel is in both formats at once)
    return not all(m.weight.is_contiguous(memory_format=torch.channels_last)
                   for m in convolutions)


def channels_last_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with 4-D weights in channels_last format; the model itself when
    it cannot be copied (e.g. a module holding an uncopyable handle)."""
    try:
        return copy.deepcopy(model).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    except Exception:
        return model


def logits_agree(got: Tensor, reference: Tensor, tolerance: float) -> tuple[bool, float]:
    """Whether a copy's logits ``got`` agree with the model's ``reference``: the same
    shape and argmax on every row, and no logit further than ``tolerance`` times
    ``1 + max |reference|``; with the largest gap."""
    if got.shape != reference.shape:
        return False, float("inf")
    if not reference.numel():
        return True, 0.0
    gap = float((got - reference).abs().max())
    scale = 1.0 + float(reference.abs().max())
    return gap <= tolerance * scale and torch.equal(got.argmax(1), reference.argmax(1)), gap


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
        agrees, gap = logits_agree(got, reference, _AGREEMENT_TOLERANCE)
        if not agrees:
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

    def __init__(self, model: nn.Module, *, passes: int,
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


def bf16_autocast(model: Callable[[Tensor], Tensor],
                  device_type: str = "cpu") -> Callable[[Tensor], Tensor]:
    """``model`` run under bfloat16 autocast, its logits returned as float32. On a CPU
    with bf16 instructions (AVX512-BF16, AMX) the convolutions and matrix products run
    2-4x faster (MNIST LeNet, 2 threads of an AMD EPYC: forward of 100 images 4x the
    float32 NCHW pass, 2x the channels_last one); the logits differ from float32 by about
    1% of their scale, which is why :class:`ScreeningForward` has the model confirm what
    such a copy decides."""

    def forward(x: Tensor) -> Tensor:
        with torch.autocast(device_type, dtype=torch.bfloat16):
            return model(x).float()

    return forward


def bf16_copy(model: Callable[[Tensor], Tensor],
              device_type: str = "cpu") -> Callable[[Tensor], Tensor]:
    """A copy of ``model`` with every floating weight and buffer in bfloat16, fed bfloat16
    inputs, its logits returned as float32. Unlike :func:`bf16_autocast` it does not cast
    the weights again at every pass (on the MNIST LeNet the first linear layer's 3.2M
    weights, for a Square pass of 74 images). Raises for a model that cannot be copied."""
    if not isinstance(model, nn.Module):
        raise TypeError("bf16_copy needs an nn.Module")
    half = copy.deepcopy(model).to(torch.bfloat16)

    def forward(x: Tensor) -> Tensor:
        return half(x.to(torch.bfloat16)).float()

    return forward


# Forms a query-only search may screen its candidates on, in the order tried (the first
# that agrees with the model is used); tests replace it to plant a copy that lies.
SCREENING_FORMS: dict[str, Callable[[Callable[[Tensor], Tensor], str],
                                    Callable[[Tensor], Tensor]]] = {
    "bf16 weights": bf16_copy, "bf16 autocast": bf16_autocast}
# A screening copy must agree with the model on the probe batch: the same argmax on every
# row, and logits within this share of their scale (bf16 rounding is about 0.4% per
# operation).
_SCREENING_TOLERANCE = 0.03


class ScreeningForward:
    """The forward of a query-only search (Square): a faster copy of the model screens the
    candidates, and the model as given confirms every candidate the copy accepts, so no
    decision the search keeps, and no verdict, rests on the copy.

    The caller calls it on each batch of candidates; while :attr:`exact` is False the
    logits came from the copy, and the caller must rescore on ``self.model`` every
    candidate it would accept, then report the counts with :meth:`confirm`.

    ``enabled=False`` never uses a copy. ``True`` tries the copies of
    :data:`SCREENING_FORMS` at the first pass; ``None`` first times ``probe`` passes of
    the model (after one warm-up) and tries a copy only when the remaining passes would
    take at least ``min_seconds``. A copy is tried only if, on the batch at hand, it gives
    the model's argmax on every row and logits within 3% of their scale; its next
    ``probe`` passes are timed, and it is dropped unless its median pass takes at most
    ``keep_ratio`` of the model's (under ``None``; under ``True`` it is kept). It is also
    dropped, with a warning, when the model rejects more than ``1 - min_confirmed`` of
    the candidates it accepted (after at least 64): it then computes something else.
    ``choice`` ends as "model", the form's name, or "model after ..." saying why. Call it
    under ``torch.no_grad()`` with the model in eval mode.
    """

    def __init__(self, model: nn.Module, *, passes: int, enabled: bool | None, owner: str,
                 probe: int = 3, min_seconds: float = 2.0, keep_ratio: float = 0.8,
                 min_confirmed: float = 0.5) -> None:
        self.model, self.passes, self.owner = model, passes, owner
        self.enabled, self.probe, self.min_seconds = enabled, probe, min_seconds
        self.keep_ratio, self.min_confirmed = keep_ratio, min_confirmed
        self.forward: Callable[[Tensor], Tensor] = model
        self.choice = "model"
        self.model_seconds: list[float] = []
        self.copy_seconds: list[float] = []
        self.accepted = self.confirmed = 0
        self.done = 0
        self._stage = "fixed" if enabled is False or passes < 2 else "probe"

    @property
    def exact(self) -> bool:
        """Whether the last logits were the model's own."""
        return self.forward is self.model

    def __call__(self, batch: Tensor) -> Tensor:
        self.done += 1
        if self._stage == "fixed":
            return self.forward(batch)
        started = time.perf_counter()
        logits = self.forward(batch)
        seconds = time.perf_counter() - started
        if self._stage == "probe":
            if self.done > 1:  # the first pass warms up caches and the allocator
                self.model_seconds.append(seconds)
            if self.enabled or len(self.model_seconds) == self.probe:
                left = statistics.median(self.model_seconds or [seconds]) * (
                    self.passes - self.done)
                if self.enabled or left >= self.min_seconds:
                    self._try_copies(batch, logits)
                else:
                    self._stage = "fixed"
            return logits
        self.copy_seconds.append(seconds)  # stage "trial": the copy is in use
        if len(self.copy_seconds) == self.probe:
            ratio = statistics.median(self.copy_seconds) / statistics.median(
                self.model_seconds or self.copy_seconds)
            log.debug("%s: %s / model pass time %.2f", self.owner, self.choice, ratio)
            if self.enabled is None and ratio > self.keep_ratio:
                self._fall_back(f"model after trial ({ratio:.2f}x the model's pass time)")
            self._stage = "fixed"
        return logits

    def _try_copies(self, batch: Tensor, reference: Tensor) -> None:
        self._stage = "fixed"
        device_type = model_device(self.model, batch.device).type
        for name, form in SCREENING_FORMS.items():
            try:
                copy_forward = form(self.model, device_type)
                agrees, gap = logits_agree(copy_forward(batch), reference,
                                           _SCREENING_TOLERANCE)
            except Exception as error:  # a form this model or device does not support
                log.debug("%s: %s unavailable: %s", self.owner, name, error)
                continue
            if not agrees:
                log.debug("%s: %s disagrees with the model (gap %.3g)", self.owner, name, gap)
                continue
            self.forward, self.choice, self._stage = copy_forward, name, "trial"
            return

    def confirm(self, accepted: int, confirmed: int) -> None:
        """Of ``accepted`` candidates the copy accepted, the model confirmed ``confirmed``."""
        if self.exact:
            return
        self.accepted += accepted
        self.confirmed += confirmed
        if self.accepted >= 64 and self.confirmed < self.min_confirmed * self.accepted:
            share = self.confirmed / self.accepted
            warnings.warn(f"{self.owner}: the {self.choice} copy of the model accepted "
                          f"candidates the model rejected ({share:.0%} confirmed); the "
                          "search goes on with the model itself.", RuntimeWarning,
                          stacklevel=3)
            self._fall_back(f"model after {self.choice} disagreed ({share:.0%} confirmed)")

    def _fall_back(self, choice: str) -> None:
        self.forward, self.choice, self._stage = self.model, choice, "fixed"
