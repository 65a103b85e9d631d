"""What pruning and int8 quantization do to the MNIST LeNet: one audit report.

Runs assay's ``compression`` check (with ``accuracy`` beside it) on the zoo's LeNet-style
CNN (Madry et al.'s MNIST net) and writes the four reports (report.html, report.json,
summary.md, junit.xml) into ``--out``, then prints the side-by-side table: clean accuracy,
robust accuracy under Linf PGD, serialised size and latency of a forward pass, for the
original and each variant:

- ``prune:0.5``, ``prune:0.9``: global unstructured magnitude pruning (Han et al. 2015);
- ``int8:dynamic``: dynamic int8 quantization of the Linear layers;
- ``int8:static``: static int8 quantization (FX), calibrated on 256 training images.

The int8 variants have no input gradients: their robust accuracy is PGD transferred from
the float original (an upper bound on white-box robustness; the report says so).

``--model`` picks the weights (cached in benchmarks/.cache/):

- ``normal``: plain training, lenet-normal.pt of benchmarks/evasion.py (trained here when
  missing, about 5 minutes on 2 CPU cores); judged at Linf eps 0.1 by default;
- ``pgd-at``: lenet-pgd-at.safetensors written by ``benchmarks/adversarial_training.py
  --out benchmarks/.cache/lenet-pgd-at.safetensors`` (PGD-AT at eps 0.3); judged at eps
  0.3 by default.

Usage:

    python benchmarks/compression.py [--model normal|pgd-at] [--n 1000] [--eps E]
        [--steps 20] [--threads 2] [--out benchmarks/out/compression-<model>]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from _machine import data_root, machine
from assay.audit.plan import plan_from_dict
from assay.audit.runner import run_audit
from assay.core.data import load_data
from assay.core.model import ModelWrapper
from assay.report.writers import write_reports

HERE = Path(__file__).parent
CACHE = HERE / ".cache"
VARIANTS = ["prune:0.5", "prune:0.9", "int8:dynamic", "int8:static"]
DEFAULT_EPS = {"normal": 0.1, "pgd-at": 0.3}


def load_lenet(choice: str) -> torch.nn.Module:
    from evasion import load_or_train, new_net  # the evasion benchmark's recipe and cache

    if choice == "normal":
        root = data_root()
        net, _ = load_or_train("normal", lambda: load_data("mnist:train", data_root=root),
                               load_data("mnist:test", data_root=root), False, {})
        return net
    path = CACHE / "lenet-pgd-at.safetensors"
    if not path.exists():
        raise SystemExit(f"{path} is missing: run benchmarks/adversarial_training.py --out {path}")
    from safetensors.torch import load_file

    net = new_net()
    net.load_state_dict(load_file(path))
    return net.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("normal", "pgd-at"), default="normal")
    parser.add_argument("--n", type=int, default=1000, help="test images evaluated")
    parser.add_argument("--eps", type=float, help="Linf radius (default 0.1 normal, 0.3 pgd-at)")
    parser.add_argument("--steps", type=int, default=20, help="PGD steps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="report folder")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    eps = DEFAULT_EPS[args.model] if args.eps is None else args.eps
    out = args.out or HERE / "out" / f"compression-{args.model}"

    root = data_root()
    net = load_lenet(args.model)
    model = ModelWrapper(net, num_classes=10, input_shape=(1, 28, 28),
                         name=f"MNIST LeNet ({args.model})")
    test = load_data(f"mnist:test:{args.n}", data_root=root)
    train = load_data("mnist:train:2000", data_root=root)  # static int8 calibration
    plan = plan_from_dict({"checks": [
        {"name": "accuracy"},
        {"name": "compression", "params": {"variants": VARIANTS, "n": args.n, "eps": eps,
                                           "steps": args.steps, "batch_size": 250}}]})
    started = time.perf_counter()
    result = run_audit(model, test, plan, train_data=train, progress=True)
    seconds = time.perf_counter() - started
    write_reports(result, out)

    check = next(c for c in result.checks if c.id == "compression")
    m = check.metrics
    print(f"MNIST LeNet ({args.model}), {args.n} test images, Linf PGD-{args.steps} at eps "
          f"{eps:g}; audit {seconds:.0f} s; {machine()}")
    print(f"reports: {out}/report.html, summary.md, report.json\n")
    print("| variant | accuracy | robust accuracy | size KiB | latency ms / 250 images |")
    print("|---|---:|---:|---:|---:|")
    for v in ["original"] + VARIANTS:
        print(f"| {v} | {m[f'accuracy@{v}']:.3f} | {m[f'robust_accuracy@{v}']:.3f} | "
              f"{m[f'size_bytes@{v}'] / 1024:,.0f} | {m[f'latency_ms@{v}']:.1f} |")


if __name__ == "__main__":
    main()
