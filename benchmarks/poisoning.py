"""Backdoors on MNIST: clean accuracy (CA) and attack success rate (ASR) of the zoo CNN
trained on a poisoned training set, for BadNets, Blended and WaNet, beside the same
recipe on clean data.

The training split (``--n-train``, default all 60,000) is poisoned at ``--rate`` (default
10%) with target class ``--target`` (default 0); the zoo ``small_cnn`` is trained on it
for ``--epochs`` (default 3; Adam 1e-3, batch 128, seed 0). CA is measured on the 10,000
test images; ASR on the triggered test images of every class but the target (the share
classified as the target). The clean model's ASR on the same triggered images is the
chance the trigger alone sends an input to the target.

Targets (issue 13): BadNets ASR >= 95% with a CA drop <= 1 point; Blended and WaNet ASR
>= 90%. Anchor (BackdoorBench v1, CIFAR-10, PreAct-ResNet18, 1% poisoned, CA/ASR):
BadNets 91.3/95.0, Blended 93.5/99.9, WaNet 91.3/89.7.

    python benchmarks/poisoning.py [--epochs 3] [--rate 0.1] [--target 0] [--n-train N]
        [--attacks badnets,blended,wanet] [--threads 2] [--every-epoch]
        [--wanet-per-batch]

``--wanet-per-batch`` adds WaNet as its paper trains it ("wanet/batch"): the attacker runs
the training and poisons every batch afresh (``WaNet.poison_batch``: 10% warped and
relabelled, 20% warped with the noisy grid, at new positions each batch), rather than
training on one fixed poisoned set like the other rows.
"""

from __future__ import annotations

import argparse

import torch
from torch.nn import functional as F

from _machine import data_root, machine, timed
from assay.attacks.poisoning import POISONING_ATTACKS
from assay.core import zoo
from assay.core.data import load_data
from assay.core.inference import batched_predict
from assay.core.rng import seeded_generator
from assay.core.training import TrainConfig, cross_entropy_loss, fit


def accuracy(net, x, y) -> float:
    return float((batched_predict(net, x, batch_size=1024) == y).float().mean())


def per_batch_loss(attack, num_classes, generator):
    """Cross-entropy on each batch as ``attack.poison_batch`` poisons it, afresh."""
    def loss(model, x, y):
        x, y = attack.poison_batch(x, y, num_classes, generator)
        return F.cross_entropy(model(x), y)
    return loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=0.1)
    parser.add_argument("--target", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--attacks", default="badnets,blended,wanet")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--every-epoch", action="store_true",
                        help="also print each attacked model's CA and ASR after every epoch")
    parser.add_argument("--wanet-per-batch", action="store_true",
                        help="also train WaNet the paper's way: every batch poisoned afresh "
                             "(WaNet.poison_batch) instead of a fixed poisoned set")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = data_root()
    train = load_data("mnist:train", data_root=root).subset(args.n_train)
    test = load_data("mnist:test", data_root=root)
    config = TrainConfig(epochs=args.epochs, batch_size=128, lr=1e-3, seed=0)
    print(f"{machine()}; MNIST, small_cnn, {args.epochs} epochs, {len(train)} training images, "
          f"rate {args.rate:g}, target {args.target}")

    def trained(data, watch=None, loss_fn=cross_entropy_loss):
        net = zoo.build("small_cnn", input_shape=train.input_shape, num_classes=10, seed=0)
        _, seconds = timed(lambda: fit(net, data, config, loss_fn=loss_fn, on_epoch_end=watch,
                                       show_progress=False))
        return net, seconds

    clean, clean_s = trained(train)
    clean_ca = accuracy(clean, test.x, test.y)
    others = test.y != args.target
    print(f"{'model':<11} {'CA':>7} {'ASR':>7} {'clean ASR':>10} {'CA drop':>8} {'train s':>8}")
    print(f"{'clean':<11} {clean_ca:7.4f} {'':>7} {'':>10} {'':>8} {clean_s:8.1f}")
    runs = args.attacks.split(",") + (["wanet/batch"] if args.wanet_per_batch else [])
    for name in runs:
        attack = POISONING_ATTACKS[name.split("/")[0]](target=args.target, rate=args.rate)
        loss_fn, data = cross_entropy_loss, train
        if name == "wanet/batch":  # the attacker runs the training: fresh poison per batch
            loss_fn = per_batch_loss(attack, train.num_classes, seeded_generator(1))
        else:
            data = attack.poison(train).data
        triggered = attack.apply_trigger(test.x[others])
        target = torch.full((len(triggered),), args.target)

        def watch(epoch, net, name=name, triggered=triggered, target=target):
            print(f"  {name} epoch {epoch + 1}: CA {accuracy(net, test.x, test.y):.4f} "
                  f"ASR {accuracy(net, triggered, target):.4f}", flush=True)
            return False

        net, seconds = trained(data, watch if args.every_epoch else None, loss_fn)
        ca, asr = accuracy(net, test.x, test.y), accuracy(net, triggered, target)
        print(f"{name:<11} {ca:7.4f} {asr:7.4f} {accuracy(clean, triggered, target):10.4f} "
              f"{clean_ca - ca:8.4f} {seconds:8.1f}")


if __name__ == "__main__":
    main()
