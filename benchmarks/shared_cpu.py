"""The demo audit on a quiet machine and beside CPU-bound neighbours: the slowdown.

    python benchmarks/shared_cpu.py [--neighbours 1] [--threads auto 2 1] [--repeats 1]
                                    [--src OTHER_CHECKOUT/src]

Each run is a fresh ``assay audit --demo --no-cache --quiet`` process (training and every
check). A neighbour is a separate process: another job's torch training loop on torch's
default threads (``--neighbour torch``, the default), or a pure-Python loop that keeps one
core busy without threads of its own (``--neighbour python``). For each ``--threads``
setting the script prints the quiet time, the time beside the neighbours and their ratio
(the slowdown); the setting ``default`` passes no ``--threads`` (for a checkout from
before the flag, given with ``--src``). Target: under 2x with one busy neighbour on a
2-core machine. Run it on an
otherwise idle machine.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
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


def _torch_job(stop) -> None:
    """Another job's training loop (a small CNN on torch's default threads), as when two CI
    jobs share a machine."""
    import torch

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(16 * 26 * 26, 10))
    x = torch.rand(64, 1, 28, 28)
    while not stop.is_set():
        net(x).sum().backward()


NEIGHBOURS = {"python": _spin, "torch": _torch_job}


def _audit_seconds(threads: str, src: str | None) -> float:
    flags = [] if threads == "default" else ["--threads", threads]
    env = dict(os.environ, **({"PYTHONPATH": src} if src else {}))
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "assay", "audit", "--demo", "--no-cache",
                               "--quiet", *flags, "--out", out], check=False, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise SystemExit(f"the demo audit failed ({done.returncode}): {done.stderr[-500:]}")
    return seconds


def _timed(threads: str, neighbours: int, kind: str, repeats: int, src: str | None) -> float:
    stop = mp.Event()
    workers = [mp.Process(target=NEIGHBOURS[kind], args=(stop,), daemon=True)
               for _ in range(neighbours)]
    for worker in workers:
        worker.start()
    try:
        return statistics.median(_audit_seconds(threads, src) for _ in range(repeats))
    finally:
        stop.set()
        for worker in workers:
            worker.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neighbours", type=int, default=1, help="busy processes (default 1)")
    parser.add_argument("--neighbour", choices=sorted(NEIGHBOURS), default="torch",
                        help="what a neighbour runs: another job's torch training loop on "
                             "torch's default threads (default), or a pure-Python loop that "
                             "keeps one core busy")
    parser.add_argument("--threads", nargs="+", default=["auto", "2", "1"],
                        help="--threads settings to compare (default auto 2 1)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per figure (median)")
    parser.add_argument("--src", help="run the assay package under this src folder instead")
    args = parser.parse_args()
    print(machine() + (f"; assay from {args.src}" if args.src else ""))
    print(f"{'--threads':>10} {'quiet s':>9} {'busy s':>9} {'slowdown':>9}")
    for threads in args.threads:
        quiet = _timed(threads, 0, args.neighbour, args.repeats, args.src)
        busy = _timed(threads, args.neighbours, args.neighbour, args.repeats, args.src)
        print(f"{threads:>10} {quiet:9.1f} {busy:9.1f} {busy / quiet:8.2f}x", flush=True)


if __name__ == "__main__":
    main()
