"""Auditing a DP claim in one training run on MNIST (issue 14; Steinke, Nasr & Jagielski,
NeurIPS 2023): the ``dp_audit`` check's lower bound on epsilon for a training without noise
claimed at epsilon 1 and for DP-SGD at each of ``--epsilons`` (default 8 and 68.5, the
anchor's).

Each run is the ``dp_audit`` check through ``run_audit``: ``--canaries`` (default 1000) of
the first ``--train-images`` MNIST training images (default 5,000) relabelled to a random
other class, each included by a fair coin, the zoo's ``--arch`` (default ``small_cnn``)
trained on the rest and the included canaries with Adam (``--lr`` 1e-3, batch
``--batch-size`` 128, ``--epochs`` 60: enough to fit them; DP-SGD: the same settings,
expected batch 128, clipping norm 1, noise calibrated to the claim at delta 1e-5 by the
RDP accountant), the canaries scored by minus their loss on the canary label, and the
bound at 95% confidence searched over ``k`` guesses a side (Bonferroni). It prints the
bound, the ceiling (all guesses right), the guesses, the accountant's epsilon and the
seconds of each audit.

Anchor (Privacy Meter's one-run audit, CIFAR-10, 1000 canaries): non-DP 5.48, DP at
epsilon 68.5 0.42.

Usage: python benchmarks/dp_audit.py [--train-images 5000] [--canaries 1000]
       [--arch small_cnn] [--epochs 60] [--epsilons 8 68.5] [--threads 1] [--seed 0]
MNIST is read from $ASSAY_DATA_DIR (default ../shared/data).
"""

from __future__ import annotations

import argparse
import logging

import torch

from _machine import data_root, machine, timed
from assay.audit.plan import plan_from_dict
from assay.audit.runner import run_audit
from assay.core import zoo
from assay.core.data import Dataset, load_data
from assay.core.model import ModelWrapper

DELTA = 1e-5


def audit(model: ModelWrapper, train: Dataset, test: Dataset, recipe: dict, params: dict,
          seed: int) -> tuple[dict, dict, float]:
    plan = plan_from_dict({"seed": seed, "training": recipe, "checks": [
        {"name": "dp_audit", "params": params, "gates": ["passes_claim >= 1"]}]})
    result, seconds = timed(lambda: run_audit(model, test, plan, train_data=train,
                                              progress=False, threads=None))
    (check,) = result.checks
    if check.status == "error":
        raise SystemExit(f"the dp_audit check failed: {check.error}")
    return check.metrics, {"status": check.status, **check.details}, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-images", type=int, default=5000)
    parser.add_argument("--canaries", type=int, default=1000)
    parser.add_argument("--arch", default="small_cnn")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--epsilons", type=float, nargs="+", default=[8.0, 68.5])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    print(machine())

    root = data_root()
    train = load_data(f"mnist:train:{args.train_images}", data_root=root)
    test = load_data("mnist:test:100", data_root=root)  # the audit reads no test data
    net = zoo.build(args.arch, input_shape=train.input_shape, num_classes=10, seed=0)
    model = ModelWrapper(net, num_classes=10, input_shape=train.input_shape, name=args.arch)
    recipe = {"arch": args.arch, "epochs": args.epochs, "batch_size": args.batch_size,
              "lr": args.lr}
    print(f"MNIST: {len(train)} training images, {args.canaries} canaries; {args.arch}, "
          f"{args.epochs} epochs, batch {args.batch_size}, Adam lr {args.lr:g}; 95% confidence")
    runs = [("no noise, claimed epsilon 1", {"training": "recipe", "epsilon": 1.0})]
    runs += [(f"DP-SGD at epsilon {eps:g}", {"training": "dp_sgd", "epsilon": eps})
             for eps in args.epsilons]
    print(f"{'run':<30} {'bound':>7} {'ceiling':>8} {'right':>10} {'accounted':>10} "
          f"{'sigma':>6} {'in-fit':>7} {'status':>6} {'seconds':>8}")
    for label, params in runs:
        metrics, details, seconds = audit(model, train, test, recipe, {
            "canaries": args.canaries, "delta": DELTA, **params}, args.seed)
        right = f"{metrics['correct_guesses']:.0f}/{metrics['guesses']:.0f}"
        accounted = metrics.get("accounted_epsilon")
        sigma = metrics.get("noise_multiplier")
        print(f"{label:<30} {metrics['epsilon_lower_bound']:>7.3f} "
              f"{metrics['epsilon_ceiling']:>8.3f} {right:>10} "
              f"{'-' if accounted is None else f'{accounted:.3f}':>10} "
              f"{'-' if sigma is None else f'{sigma:.3f}':>6} "
              f"{details['canary_fit_in'] or 0:>7.3f} {details['status']:>6} {seconds:>8.1f}")


if __name__ == "__main__":
    main()
