"""How many intra-op threads a piece of work gets, chosen from the work and the machine.

Why: PyTorch's CPU kernels split each operator over its OpenMP threads and wait for all
of them at a barrier. When a neighbouring process keeps a core busy, one of the threads is
descheduled for a time slice (milliseconds) at every barrier, so an audit made of many
small operators (the 8x8 digits demo, tabular models) ran 9-17x slower on 2 threads
beside one busy neighbour, and at its quiet speed on one thread. Large operators spread
over threads pay off and suffer far less, since the wait is a small share of each.

:func:`choose_threads` therefore times a representative step (a forward and backward
pass of the model on a small batch) on one thread and on all of them, right before the
work, and takes more threads only when they are clearly faster now. The choice is made
again for each check, so a neighbour that arrives mid-audit is seen at the next check.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import Tensor, nn

from .._params import check_int
from ..errors import AssayValueError

__all__ = ["Threads", "available_cpus", "check_threads", "choose_threads", "model_step",
           "resolve_threads",
           "threads_for", "using_threads"]

log = logging.getLogger("assay")

Threads = int | Literal["auto"] | None
"""A thread count, ``"auto"`` (timed per piece of work) or None (leave torch's setting)."""

# A step longer than this on both counts is timed once per count: repeating it would cost
# more than the choice can save, and large steps time steadily.
_PROBE_LIMIT_S = 0.05
# More threads must beat one by this factor: fewer threads also suffer less when a
# neighbour arrives after the probe.
_MIN_GAIN = 1.15


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def choose_threads(step: Callable[[], object], *, most: int | None = None,
                   repeats: int = 8, clock: Callable[[], float] = time.perf_counter) -> int:
    """The thread count, 1 or ``most``, under which ``step`` runs fastest now.

    ``step`` runs once on ``most`` threads as a warm-up, then once timed on each count. If
    both took longer than 50 ms the step is large and those two times decide; otherwise it
    runs ``repeats`` more times on each count, alternating, and the mean times decide (the
    mean, not the median: the occasional slow pass of a descheduled thread is the cost).
    ``most`` is chosen only when it is at least 1.15x faster than one thread. Torch's
    thread count is restored afterwards. ``most`` defaults to ``torch.get_num_threads()``.
    """
    before = torch.get_num_threads()
    most = before if most is None else check_int("most", most, "choose_threads", low=1)
    if most == 1:
        return 1
    times: dict[int, list[float]] = {1: [], most: []}

    def timed(count: int) -> None:
        torch.set_num_threads(count)
        started = clock()
        step()
        times[count].append(clock() - started)

    try:
        torch.set_num_threads(most)
        step()  # warm-up: allocator, kernel selection
        timed(1)
        timed(most)
        if min(times[1][0], times[most][0]) <= _PROBE_LIMIT_S:
            for _ in range(repeats):
                timed(1)
                timed(most)
    finally:
        torch.set_num_threads(before)
    one, many = statistics.fmean(times[1]), statistics.fmean(times[most])
    chosen = most if many * _MIN_GAIN <= one else 1
    log.debug("threads: step %.2f ms on 1, %.2f ms on %d: %d chosen", one * 1e3, many * 1e3,
              most, chosen)
    return chosen


def model_step(model: nn.Module, x: Tensor, *, batch: int = 64) -> Callable[[], None]:
    """A forward and backward pass of ``model`` on the first ``batch`` rows of ``x``: the
    unit of work of gradient attacks, and an upper bound for forward-only work. A model
    without usable gradients (an int8 archive) gets a forward pass only."""
    sample = x[:batch].to(next(iter(model.parameters()), x).device).detach()
    backward = [True]

    def step() -> None:
        if backward[0]:
            inputs = sample.clone().requires_grad_(True)
            try:
                with torch.enable_grad():
                    model(inputs).sum().backward(inputs=[inputs])
                return
            except RuntimeError:
                backward[0] = False
        with torch.no_grad():
            model(sample)

    return step


def check_threads(threads: Threads, owner: str) -> Threads:
    """Validate a thread policy: a positive int, "auto" or None."""
    if threads is None or threads == "auto":
        return threads
    if isinstance(threads, str):
        raise AssayValueError(f"The 'threads' parameter of {owner} must be a positive int, "
                              f"'auto' or None. Got {threads!r} instead.")
    return check_int("threads", threads, owner, low=1)


def resolve_threads(threads: Threads, model: nn.Module, x: Tensor, *, owner: str) -> int | None:
    """The thread count for work on ``model`` and ``x`` under the policy ``threads``: None
    leaves torch's setting, an int is taken as given, "auto" times the model on CPU (on
    another device the host threads only feed it, and the count is left alone)."""
    threads = check_threads(threads, owner)
    if threads != "auto":
        return threads
    device = next(iter(model.parameters()), x).device
    if device.type != "cpu":
        return None
    return choose_threads(model_step(model, x), most=min(torch.get_num_threads(),
                                                         available_cpus()))


@contextmanager
def using_threads(count: int | None) -> Iterator[None]:
    """Run the block on ``count`` intra-op threads (None: unchanged), then restore."""
    if count is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def threads_for(threads: Threads, model: nn.Module, x: Tensor, *, owner: str) -> Iterator[int]:
    """Choose the thread count for work on ``model`` and ``x`` (see :func:`resolve_threads`),
    run the block under it, restore torch's setting; yields the count used."""
    count = resolve_threads(threads, model, x, owner=owner)
    with using_threads(count):
        yield torch.get_num_threads()
