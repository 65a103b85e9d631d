"""What every benchmark prints and reads: the machine it ran on and the data directory."""

from __future__ import annotations

import os
import platform
from pathlib import Path

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
