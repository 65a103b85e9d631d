"""Size, sparsity and latency of a model.

``model_size_bytes`` is the length of the serialised ``state_dict`` (``torch.save`` into
an in-memory buffer): int8 packed weights count as the bytes they take on disk, and a
pruned model is as large as the dense one (zeros are stored), which is why
``count_nonzero`` and ``sparsity`` are reported next to it.
"""

from __future__ import annotations

import io
import statistics
import time

import torch
from torch import Tensor, nn

from ..._params import check_int
from ...core.inference import eval_mode, model_device
from ...errors import AssayValueError

PRUNABLE = (nn.Conv2d, nn.Linear)


def model_size_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``, measured in memory."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def count_nonzero(model: nn.Module) -> int:
    """Non-zero entries over all float parameters (a quantized model has none: its
    weights are packed buffers; use :func:`model_size_bytes` for it)."""
    return sum(int(torch.count_nonzero(p.detach())) for p in model.parameters())


def layer_sparsity(model: nn.Module) -> dict[str, float]:
    """Fraction of zero weights of each Conv2d and Linear layer, by module name."""
    return {name: float((m.weight.detach() == 0).float().mean())
            for name, m in model.named_modules() if isinstance(m, PRUNABLE)}


def sparsity(model: nn.Module) -> float:
    """Fraction of zero weights over all Conv2d and Linear weights together (biases and
    other parameters excluded, as in the pruning literature)."""
    weights = [m.weight.detach() for m in model.modules() if isinstance(m, PRUNABLE)]
    total = sum(w.numel() for w in weights)
    if total == 0:
        raise AssayValueError("sparsity: the model has no Conv2d or Linear weights.")
    return sum(int((w == 0).sum()) for w in weights) / total


@torch.no_grad()
def latency_ms(model: nn.Module, x: Tensor, *, repeats: int = 10, warmup: int = 3) -> float:
    """Median wall-clock milliseconds of one forward pass on the batch ``x``.

    ``x`` is moved to the model's device (CPU for a quantized model); ``warmup`` passes
    run first and are not timed; on CUDA each pass is synchronised. The model is put in
    eval mode and its mode restored.

    Example
    -------
    >>> net = nn.Linear(4, 3)
    >>> latency_ms(net, torch.zeros(8, 4), repeats=3) >= 0
    True
    """
    check_int("repeats", repeats, "latency_ms", low=1)
    check_int("warmup", warmup, "latency_ms", low=0)
    device = model_device(model)
    x = x.to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with eval_mode(model):
        for _ in range(warmup):
            model(x)
        sync()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            sync()
            times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)
