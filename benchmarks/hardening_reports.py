"""Before/after reports of hardening the MNIST LeNet, made through ``assay harden``.

Starts from a plainly trained LeNet (the zoo's Madry et al. MNIST CNN, 1 epoch of Adam on
the 60,000 training images, cached as benchmarks/.cache/lenet-plain.safetensors) and runs
the CLI, as a user would:

- ``adversarial``: ``assay harden adversarial`` with PGD-AT at Linf 0.3 and the recipe of
  benchmarks/adversarial_training.py (5 steps, 8 epochs, batch 128, cyclic lr peak 3e-3,
  eps ramped over 2 epochs); both audits use the harden command's default plan (accuracy,
  and the quick AutoAttack-grade robustness evaluation at eps 0, 0.15, 0.3 with its
  diagnostics);
- ``smoothing``: ``assay harden smoothing`` at sigma 0.25 (Gaussian augmentation, 3
  epochs at lr 1e-3); both audits run accuracy and certified_robustness (n0 100,
  n 10,000, alpha 0.001, the first ``--n-certify`` test points).

Each writes its before/after report directory under ``--out-dir`` (default
docs/reports): ``comparison.html`` (every metric's change and both audits side by side),
``comparison.md``, ``comparison.json`` and each audit's own reports in before/ and after/.

    python benchmarks/hardening_reports.py [adversarial] [smoothing] [--n-eval 1000]
        [--n-certify 100] [--out-dir docs/reports] [--threads 2]

MNIST is read from $ASSAY_DATA_DIR (default ../shared/data).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from _machine import data_root, machine
from assay.cli import main as assay
from assay.core import zoo
from assay.core.data import load_data
from assay.core.training import TrainConfig, fit

CACHE = Path(__file__).parent / ".cache"
ROOT = Path(__file__).resolve().parent.parent


def plain_lenet(root: str) -> Path:
    """The starting model: 1 epoch of plain training, written once as safetensors."""
    path = CACHE / "lenet-plain.safetensors"
    if not path.exists():
        from safetensors.torch import save_file

        net = zoo.build("lenet", input_shape=(1, 28, 28), num_classes=10, seed=0)
        fit(net, load_data("mnist:train", data_root=root),
            TrainConfig(epochs=1, batch_size=128, lr=1e-3, seed=0), show_progress=False)
        CACHE.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


def run(name: str, argv: list[str]) -> None:
    started = time.perf_counter()
    code = assay([str(a) for a in argv])
    print(f"{name}: exit code {code}, {(time.perf_counter() - started) / 60:.1f} min",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("defences", nargs="*", metavar="adversarial|smoothing",
                        help="the reports to make (default both)")
    parser.add_argument("--n-eval", type=int, default=1000, help="test points audited")
    parser.add_argument("--n-certify", type=int, default=100,
                        help="test points certified (smoothing)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs" / "reports")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    args.defences = args.defences or ["adversarial", "smoothing"]
    unknown = set(args.defences) - {"adversarial", "smoothing"}
    if unknown:
        parser.error(f"unknown defence(s) {sorted(unknown)}: choose adversarial, smoothing")
    torch.set_num_threads(args.threads)
    root = data_root()
    print(machine(), flush=True)
    start = plain_lenet(root)
    common = ["--model", start, "--arch", "lenet", "--data", "mnist:train", "--data-dir", root,
              "--eval-data", f"mnist:test:{args.n_eval}", "--quiet"]
    if "adversarial" in args.defences:
        run("PGD-AT", ["harden", "adversarial", *common, "--method", "pgd", "--eps", "0.3",
                       "--steps", "5", "--epochs", "8", "--batch-size", "128", "--lr", "3e-3",
                       "--schedule", "cyclic", "--ramp-epochs", "2",
                       "--out", CACHE / "lenet-pgd-at-cli.safetensors",
                       "--report", args.out_dir / "mnist-harden-pgd-at"])
    if "smoothing" in args.defences:
        plan = CACHE / "certify-plan.toml"
        plan.write_text('seed = 0\n\n[[checks]]\nname = "accuracy"\n\n[[checks]]\n'
                        'name = "certified_robustness"\nparams = { sigma = 0.25, n = 10000, '
                        f'n_samples = {args.n_certify} }}\n')
        run("Gaussian augmentation", [
            "harden", "smoothing", *common, "--sigma", "0.25", "--epochs", "3",
            "--batch-size", "128", "--lr", "1e-3", "--plan", plan,
            "--out", CACHE / "lenet-noise-cli.safetensors",
            "--report", args.out_dir / "mnist-harden-smoothing"])


if __name__ == "__main__":
    main()
