"""Wall time of two parallel checks in process and on a local two-node Ray cluster
(issue 17), on MNIST from $ASSAY_DATA_DIR (default ../shared/data).

(a) ``membership_inference`` with ``lira`` and ``--references`` reference models (default
    8): the target, the zoo's ``small_cnn``, trained on ``--members`` (default 500)
    training images for ``--epochs`` (default 10), the reference models by the same recipe;
    each reference model is a piece the executor runs.
(b) ``robustness`` in mode ``standard`` (AutoAttack's ensemble) at L-inf ``--eps`` (default
    0.3) on ``--n`` (default 1000) test images split into ``--shards`` (default 4) shards,
    on the zoo's LeNet trained for one epoch on the MNIST training set; each shard is a
    piece.

Each audit runs once in process (``threads`` as ``--threads``, default 2, one check after
another and one piece after another) and once on ``ray.cluster_utils.Cluster`` with two
nodes of ``--node-cpus`` CPUs (default 1), each piece a Ray task on one CPU; the metrics of
both runs are compared and the ratio of the wall times printed. On a 2-core machine two
nodes can at best halve the time of the pieces, and the Ray workers' start (each imports
torch and assay) is part of the Ray time.

Usage:

    python benchmarks/ray_executor.py [--references 8] [--members 500] [--epochs 10]
        [--n 1000] [--shards 4] [--eps 0.3] [--threads 2] [--node-cpus 1]
"""

from __future__ import annotations

import argparse
import logging
import tempfile

import torch

from _machine import data_root, machine, timed
from assay.audit.plan import plan_from_dict
from assay.audit.ray_executor import RayExecutor
from assay.audit.runner import run_audit
from assay.core import zoo
from assay.core.data import load_data
from assay.core.model import ModelWrapper
from assay.core.training import TrainConfig, fit


def trained(arch: str, data, config: TrainConfig) -> ModelWrapper:
    net = zoo.build(arch, input_shape=data.input_shape, num_classes=10, seed=config.seed)
    fit(net, data, config, show_progress=False)
    return ModelWrapper(net, num_classes=10, input_shape=data.input_shape, name=arch)


def compare(label: str, audit, executor, threads: int) -> None:
    """Run ``audit`` in process and through ``executor``; print both times and the ratio."""
    with tempfile.TemporaryDirectory() as here, tempfile.TemporaryDirectory() as there:
        local, local_s = timed(lambda: audit(None, here, threads))
        remote, remote_s = timed(lambda: audit(executor, there, 1))
    (a,), (b,) = local.checks, remote.checks
    for check in (a, b):
        if check.status == "error":
            raise SystemExit(f"{label}: the check failed: {check.error}")
    differing = sorted(k for k in a.metrics if a.metrics[k] != b.metrics.get(k))
    print(f"{label:<44}{local_s:>10.1f}{remote_s:>10.1f}{local_s / remote_s:>9.2f}x  "
          f"{'metrics equal' if not differing else 'differ: ' + ', '.join(differing)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--references", type=int, default=8)
    parser.add_argument("--members", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--node-cpus", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    print(machine())
    from ray.cluster_utils import Cluster

    root = data_root()
    train, test = (load_data(f"mnist:{split}", data_root=root) for split in ("train", "test"))
    members, nonmembers = train.subset(args.members), test.subset(args.members)
    recipe = {"arch": "small_cnn", "epochs": args.epochs, "batch_size": 64, "lr": 1e-3,
              "seed": 0}
    target = trained("small_cnn", members, TrainConfig(epochs=args.epochs, batch_size=64,
                                                       lr=1e-3, seed=0))
    lenet = trained("lenet", train, TrainConfig(epochs=1, batch_size=128, lr=1e-3, seed=0))
    membership = plan_from_dict({"training": recipe, "checks": [
        {"name": "membership_inference", "params": {
            "n": args.members, "attacks": ["lira"], "reference_models": args.references}}]})
    robustness = plan_from_dict({"checks": [{"name": "robustness", "params": {
        "mode": "standard", "eps": [args.eps], "n": args.n, "shards": args.shards,
        "diagnostics": False}}]})

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": args.node_cpus})
    cluster.add_node(num_cpus=args.node_cpus)
    cluster.wait_for_nodes()
    executor = RayExecutor(cluster.address)
    print(f"two Ray nodes of {args.node_cpus} CPU(s); in process on {args.threads} threads")
    print(f"{'check':<44}{'local s':>10}{'ray s':>10}{'ratio':>10}")
    try:
        compare(f"membership, lira, {args.references} reference models",
                lambda ex, cache, threads: run_audit(
                    target, nonmembers, membership, train_data=members, progress=False,
                    threads=threads, executor=ex, cache_dir=cache), executor, args.threads)
        compare(f"robustness standard, {args.n} images, {args.shards} shards",
                lambda ex, cache, threads: run_audit(
                    lenet, test, robustness, progress=False, threads=threads, executor=ex,
                    cache_dir=cache), executor, args.threads)
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
