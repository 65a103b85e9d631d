"""The demo audit on a quiet machine and beside CPU-bound neighbours: the slowdown.

    python benchmarks/shared_cpu.py [--neighbours 1] [--threads auto 2 1] [--repeats 1]

Each run is a fresh ``assay audit --demo --no-cache --quiet`` process (training and every
check); a neighbour is a separate process spinning in a pure-Python loop, so it keeps one
core busy without threads of its own. For each ``--threads`` setting the script prints the
quiet time, the time beside the neighbours and their ratio (the slowdown). Target: under
2x with one busy neighbour on a 2-core machine. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import subprocess
import sys
import tempfile
import time

from _machine import machine


def _spin(stop) -> None:
    while not stop.is_set():
        for _ in range(100_000):
            pass


def _audit_seconds(threads: str) -> float:
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "assay", "audit", "--demo", "--no-cache",
                        "--quiet", "--threads", threads, "--out", out], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - started


def _timed(threads: str, neighbours: int, repeats: int) -> float:
    stop = mp.Event()
    workers = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(neighbours)]
    for worker in workers:
        worker.start()
    try:
        return statistics.median(_audit_seconds(threads) for _ in range(repeats))
    finally:
        stop.set()
        for worker in workers:
            worker.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neighbours", type=int, default=1, help="busy processes (default 1)")
    parser.add_argument("--threads", nargs="+", default=["auto", "2", "1"],
                        help="--threads settings to compare (default auto 2 1)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per figure (median)")
    args = parser.parse_args()
    print(machine())
    print(f"{'--threads':>10} {'quiet s':>9} {'busy s':>9} {'slowdown':>9}")
    for threads in args.threads:
        quiet = _timed(threads, 0, args.repeats)
        busy = _timed(threads, args.neighbours, args.repeats)
        print(f"{threads:>10} {quiet:9.1f} {busy:9.1f} {busy / quiet:8.2f}x", flush=True)


if __name__ == "__main__":
    main()
