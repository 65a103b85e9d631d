"""What every benchmark prints and reads: the machine it ran on, the data directory, a
timer and data loaded once on first use."""

from __future__ import annotations

import functools
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def data_root() -> Path:
    """$ASSAY_DATA_DIR, else ../shared/data next to the repository."""
    return Path(os.environ.get("ASSAY_DATA_DIR",
                               Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))


def machine() -> str:
    """torch version, threads and CPU model, for the first line of a benchmark's output."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu} "
            f"({os.cpu_count()} logical CPUs visible)")


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``fn()`` and the seconds it took."""
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def lazy_data(spec: str, root: Path) -> Callable[[], Any]:
    """A function that loads the data ``spec`` on its first call and returns the same
    split afterwards (a training set read only when a model must be trained)."""
    from assay.core.data import load_data

    return functools.cache(lambda: load_data(spec, data_root=root))
