"""Model extraction against the query budget on MNIST, and attribute inference on Adult
against the imputation baseline (issue 14). Quality figures: the seconds printed are only
there to size a run.

Extraction: the victim is the zoo's ``small_cnn`` trained on the first ``--victim-images``
(default 10,000) MNIST training images for 5 epochs (Adam, 1e-3, batch 64). The
``model_extraction`` check runs through ``run_audit`` with ``--data`` the first
``--evaluate`` (default 2,000) MNIST test images, all held out to measure fidelity, and
the copy's recipe as the plan's ``[training]`` table (the same ``small_cnn``, 10 epochs,
batch 64, Adam 1e-3), at the budgets ``--budgets`` (default 100 1000 10000), for four
attackers:

(a) MNIST training images the victim never saw (the 10,000 after its own), its
    probabilities (Knockoff Nets with an in-distribution transfer set);
(b) the same images, its labels only (Copycat CNN);
(c) Fashion-MNIST training images, its probabilities (a transfer set of another domain,
    as in Knockoff Nets and Copycat's non-problem-domain data);
(d) uniform noise in [0, 1], its probabilities;
(e) a mixed pool: the Fashion-MNIST images of (c) under their 10 labels and the MNIST
    images of (a) under 10 more, queried at random ("mixed"), and by Knockoff's adaptive
    strategy ("mixed-adaptive": the gradient bandit over the 20 labels, which should learn
    to draw the MNIST ones). Each row prints the share of its queries that were MNIST.

``--attackers`` picks rows (default all): unseen, unseen-labels, fashion, noise, mixed,
mixed-adaptive.

Attribute inference: the victim is the zoo's ``mlp`` on Adult, trained on ``--adult-rows``
(default 10,000) training rows for 10 epochs (fitted) and on 500 rows for 200 epochs
(overfit, to show the members' advantage). The ``attribute_inference`` check infers
``sex`` and ``race`` of the first 2,000 training rows (members), with the first 4,000 test
rows as the attacker's public rows (half) and non-members (half).

Usage:

    python benchmarks/extraction.py [--budgets 100 1000 10000] [--victim-images 10000]
        [--evaluate 2000] [--adult-rows 10000] [--threads 2] [--seed 0] [--skip-adult]
        [--skip-mnist] [--attackers unseen,mixed,mixed-adaptive]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from _machine import data_root, machine, timed
from assay.audit.plan import plan_from_dict
from assay.audit.runner import run_audit
from assay.core import zoo
from assay.core.data import Dataset, load_data
from assay.core.model import ModelWrapper
from assay.core.training import TrainConfig, fit

COPY = {"arch": "small_cnn", "epochs": 10, "batch_size": 64, "lr": 1e-3}


def check(name: str, model: ModelWrapper, data: Dataset, params: dict, *,
          training: dict | None = None, train_data: Dataset | None = None):
    raw: dict = {"checks": [{"name": name, "params": params}]}
    if training is not None:
        raw["training"] = training
    result, seconds = timed(lambda: run_audit(model, data, plan_from_dict(raw),
                                              train_data=train_data, progress=False,
                                              threads=None))
    (out,) = result.checks
    if out.status == "error":
        raise SystemExit(f"the {name} check failed: {out.error}")
    return out, seconds


def extraction(args: argparse.Namespace, root: Path) -> None:
    train = load_data("mnist:train", data_root=root)
    evaluation = load_data(f"mnist:test:{args.evaluate}", data_root=root)
    count, largest = args.victim_images, max(args.budgets)
    if len(train) < count + largest:
        raise SystemExit(f"MNIST has {len(train)} training images; the run needs "
                         f"{count + largest}: lower --victim-images or --budgets")
    net = zoo.build("small_cnn", input_shape=(1, 28, 28), num_classes=10, seed=args.seed)
    _, seconds = timed(lambda: fit(net, train.subset(count), TrainConfig(
        epochs=5, batch_size=64, lr=1e-3, seed=args.seed), show_progress=False))
    victim = ModelWrapper(net, num_classes=10, input_shape=(1, 28, 28), name="mnist victim")
    own = float((victim.predict(evaluation.x) == evaluation.y).float().mean())
    print(f"victim: small_cnn on {count} MNIST images, 5 epochs ({seconds:.0f} s): test "
          f"accuracy {own:.4f} on {len(evaluation)} held-out images")
    unseen = train.take(torch.arange(count, count + largest))
    folder = Path(tempfile.mkdtemp(prefix="assay-extraction-"))
    np.savez(folder / "mnist_unseen.npz", x=unseen.x.numpy(), y=unseen.y.numpy())
    fashion = load_data(f"fashion-mnist:train:{largest}", data_root=root)
    np.savez(folder / "mixed.npz", x=torch.cat([fashion.x, unseen.x]).numpy(),
             y=torch.cat([fashion.y, unseen.y + 10]).numpy())  # labels 10-19: the digits
    attackers = {"unseen": ("MNIST unseen", "mnist_unseen.npz", "probabilities", "random"),
                 "unseen-labels": ("MNIST unseen", "mnist_unseen.npz", "labels", "random"),
                 "fashion": ("Fashion-MNIST", f"fashion-mnist:train:{largest}",
                             "probabilities", "random"),
                 "noise": ("uniform noise", "uniform", "probabilities", "random"),
                 "mixed": ("Fashion + MNIST", "mixed.npz", "probabilities", "random"),
                 "mixed-adaptive": ("Fashion + MNIST", "mixed.npz", "probabilities",
                                    "adaptive")}
    budgets = sorted(args.budgets)
    print(f"{'queries from':<16}{'answers':<15}{'strategy':<10}" + "".join(
        f"{'fid@' + str(b):>10}{'acc@' + str(b):>10}" for b in budgets) + f"{'seconds':>9}")
    for name in args.attackers.split(","):
        label, source, output, strategy = attackers[name]
        if source.endswith(".npz"):
            source = str(folder / source)
        out, seconds = check("model_extraction", victim, evaluation,
                             {"budgets": budgets, "query_data": source, "output": output,
                              "strategy": strategy},
                             training={**COPY, "seed": args.seed})
        m = out.metrics
        print(f"{label:<16}{output:<15}{strategy:<10}" + "".join(
            f"{m[f'fidelity@queries={b}']:>10.4f}{m[f'copy_accuracy@queries={b}']:>10.4f}"
            for b in budgets) + f"{seconds:>9.0f}")
        shares = out.details.get("queries_per_label")
        if shares:
            print(f"  MNIST share of the queries: {sum(list(shares.values())[10:]):.3f}")
        for finding in out.findings:
            if finding.level == "warn":
                print(f"  warn {finding.code}: {finding.message}")


def attribute_inference(args: argparse.Namespace, root: Path) -> None:
    train = load_data("adult:train", data_root=root)
    test = load_data("adult:test:4000", data_root=root)
    bounds = (float(torch.cat([train.x, test.x]).min()), float(torch.cat([train.x, test.x]).max()))
    print(f"{'victim':<37}{'attribute':<10}{'attack':>8}{'att/non':>9}{'imputer':>9}"
          f"{'majority':>10}{'advant.':>9}{'gain':>8}{'seconds':>9}")
    for label, rows, epochs in ((f"mlp, {args.adult_rows} rows, 10 epochs", args.adult_rows, 10),
                                ("mlp, 500 rows, 200 epochs (overfit)", 500, 200)):
        members = train.subset(rows)
        net = zoo.build("mlp", input_shape=train.input_shape, num_classes=2, seed=args.seed,
                        schema=train.schema)
        fit(net, members, TrainConfig(epochs=epochs, batch_size=64, lr=1e-3, seed=args.seed),
            show_progress=False)
        model = ModelWrapper(net, num_classes=2, input_shape=train.input_shape, bounds=bounds,
                             name="adult mlp")
        accuracy = {name: float((model.predict(d.x) == d.y).float().mean())
                    for name, d in (("train", members), ("test", test))}
        out, seconds = check("attribute_inference", model, test,
                             {"attributes": ["sex", "race"], "n": 2000}, train_data=members)
        m = out.metrics
        for attribute in ("sex", "race"):
            print(f"{label:<37}{attribute:<10}{m[f'attack_accuracy@{attribute}']:>8.4f}"
                  f"{m[f'attack_accuracy_nonmembers@{attribute}']:>9.4f}"
                  f"{m[f'baseline_accuracy@{attribute}']:>9.4f}"
                  f"{m[f'majority_accuracy@{attribute}']:>10.4f}"
                  f"{m[f'advantage@{attribute}']:>9.4f}"
                  f"{m[f'gain_over_baseline@{attribute}']:>8.4f}{seconds:>9.0f}")
        print(f"  (train accuracy {accuracy['train']:.4f}, test accuracy {accuracy['test']:.4f}; "
              f"{int(m['members'])} members, {int(m['nonmembers'])} non-members, "
              f"{int(m['public'])} public rows)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--attackers",
                        default="unseen,unseen-labels,fashion,noise,mixed,mixed-adaptive")
    parser.add_argument("--victim-images", type=int, default=10000)
    parser.add_argument("--evaluate", type=int, default=2000)
    parser.add_argument("--adult-rows", type=int, default=10000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-mnist", action="store_true")
    parser.add_argument("--skip-adult", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    print(machine())
    root = data_root()
    if not args.skip_mnist:
        extraction(args, root)
    if not args.skip_adult:
        attribute_inference(args, root)


if __name__ == "__main__":
    main()
